"""cotlib as a package: the tested versions (constraints.txt) agree with pyproject and the README,
the Colab cell installs from the one repository URL, and a wheel installed without ``-e`` finds
its base model, task splits and photos as package data."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

from cotlib import env

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / env.CONSTRAINTS_FILE
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _lock() -> dict[str, list[tuple[str, str]]]:
    """name -> [(version, marker)] from constraints.txt (a name may have one line per marker)."""
    pins: dict[str, list[tuple[str, str]]] = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        (spec,) = req.specifier  # one exact pin per line
        assert spec.operator == "==", line
        pins.setdefault(_norm(req.name), []).append((spec.version, str(req.marker or "")))
    return pins


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements() -> list[Requirement]:
    project = PYPROJECT["project"]
    specs = list(project["dependencies"])
    for extra in ("course", "dev"):
        specs += project["optional-dependencies"][extra]
    return [Requirement(s) for s in specs]


def _tested_with() -> dict[str, str]:
    """The README's "Tested with" line: ``Python 3.11.7 · torch 2.14.1 · ...``."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Tested with", 1)[1].split("(installer)", 1)[0]
    return {_norm(name): version for name, version in
            re.findall(r"([A-Za-z][\w.-]*) (\d[\w.+]*)", block)}


def test_readme_tested_with_matches_the_lock_file():
    tested, pins = _tested_with(), _lock()
    assert {"torch", "transformers", "trl", "peft", "accelerate", "openai"} <= set(tested)
    python = tested.pop("python")
    assert Version(python) in Requirement(f"python{PYPROJECT['project']['requires-python']}")\
        .specifier
    wrong = {name: (version, [v for v, _ in pins.get(name, [])])
             for name, version in tested.items()
             if version not in [v for v, _ in pins.get(name, [])]}
    assert not wrong, f"README 'Tested with' vs {LOCK.name} (name: (README, lock)): {wrong}"


def test_lock_file_pins_every_dependency_within_pyproject_ranges():
    pins = _lock()
    for req in _requirements():
        name = _norm(req.name)
        assert name in pins, f"{req.name} is not in {LOCK.name}: run bash scripts/lock.sh"
        for version, _marker in pins[name]:
            assert version in req.specifier, f"{req.name} {version} outside {req.specifier}"
    assert "uv" in pins  # the installer itself: scripts/create_env.sh installs it first


def test_environment_installs_with_the_lock_file():
    """`make env` (scripts/create_env.sh) and the Makefile's stamp both use constraints.txt."""
    script = (ROOT / "scripts" / "create_env.sh").read_text()
    assert 'install -c "$CONSTRAINTS" -e ".[course,dev]"' in script
    assert 'pip_install -c "$CONSTRAINTS" uv' in script
    makefile = (ROOT / "Makefile").read_text()
    assert f"CONSTRAINTS ?= {env.CONSTRAINTS_FILE}" in makefile
    assert "$(STAMP): pyproject.toml scripts/create_env.sh $(CONSTRAINTS)" in makefile


# --------------------------------------------------------------------------------------------
# The Colab cell
# --------------------------------------------------------------------------------------------


def test_repository_url_is_set_in_one_place():
    assert PYPROJECT["project"]["urls"]["Repository"] == env.COURSE_REPO
    assert env.COURSE_TAG == "v" + PYPROJECT["project"]["version"]
    assert f"git clone --quiet --depth 1 {env.COURSE_REPO} " in env.COLAB_CELL


@pytest.mark.parametrize("path", sorted((ROOT / "solutions").glob("*.ipynb")),
                         ids=lambda p: p.name)
def test_every_notebook_installs_with_the_colab_cell(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[1].source == env.COLAB_CELL, f"{path.name}: cell 2 is not env.COLAB_CELL"
    owner_name = env.COURSE_REPO.removeprefix("https://github.com/")
    badge = f"colab.research.google.com/github/{owner_name}/blob/main/notebooks/{path.name}"
    assert badge in nb.cells[0].source


class FakeRunner:
    """Records commands; ``fail`` names the first words of commands that exit 1."""

    def __init__(self, *fail: str):
        self.fail, self.commands = fail, []

    def __call__(self, cmd, cwd=None):
        self.commands.append(cmd)
        return 1 if any(" ".join(cmd).startswith(f) for f in self.fail) else 0


def _checkout(tmp_path: Path) -> Path:
    shutil.copy(LOCK, tmp_path / env.CONSTRAINTS_FILE)
    return tmp_path


def test_colab_cell_is_valid_ipython_and_does_nothing_outside_colab():
    from IPython.core.inputtransformer2 import TransformerManager

    code = TransformerManager().transform_cell(env.COLAB_CELL)
    assert "get_ipython().system(" in code  # the ! lines became shell calls
    namespace: dict = {"get_ipython": lambda: pytest.fail("ran a shell command outside Colab")}
    exec(compile(code, "colab-cell", "exec"), namespace)


def test_colab_install_command_line(capsys):
    assert env.main(["something-else"]) == 2
    assert "usage: python -m cotlib.env colab-install" in capsys.readouterr().err


def test_colab_install_checks_out_the_tag_and_installs_the_tested_versions(tmp_path):
    run, said = FakeRunner(), []
    assert env.colab_install(_checkout(tmp_path), run=run, say=said.append) == env.COURSE_TAG
    fetch, checkout, pip = run.commands
    assert fetch == ["git", "fetch", "--quiet", "--depth", "1", "origin", "tag", env.COURSE_TAG]
    assert checkout == ["git", "checkout", "--quiet", env.COURSE_TAG]
    assert pip[1:6] == ["-m", "pip", "install", "--quiet", "-e"] and pip[6] == ".[course]"
    used = (tmp_path / pip[pip.index("-c") + 1]).read_text()
    assert "transformers==" in used and "trl==" in used and "uv==" in used
    assert "torch==" not in used and "nvidia-" not in used  # Colab's own CUDA build stays
    assert said[0] == f"cotlib {env.COURSE_TAG} from {env.COURSE_REPO}"
    assert "restart the session" in said[-1]


def test_colab_install_falls_back_to_the_default_branch_with_a_message(tmp_path):
    run, said = FakeRunner("git fetch"), []
    assert env.colab_install(_checkout(tmp_path), run=run, say=said.append) == "default branch"
    assert [c[:2] for c in run.commands] == [["git", "fetch"], [sys.executable, "-m"]]
    assert f"has no tag {env.COURSE_TAG}" in said[0] and "default branch" in said[0]


def test_colab_install_names_the_fix_when_pip_fails(tmp_path):
    with pytest.raises(env.InstallError, match="Restart session, then run this cell again"):
        env.colab_install(_checkout(tmp_path), run=FakeRunner(sys.executable), say=print)
    with pytest.raises(env.InstallError, match="delete it and run the cell again"):
        env.colab_install(tmp_path / "nothing", run=FakeRunner(), say=print)


# --------------------------------------------------------------------------------------------
# Installed as a wheel
# --------------------------------------------------------------------------------------------


def test_data_dir_is_the_checkout_or_the_variable(monkeypatch, tmp_path):
    assert env.data_dir() == ROOT / "data"
    monkeypatch.setenv("COTLIB_DATA", str(tmp_path))
    assert env.data_dir() == tmp_path


@pytest.mark.slow
def test_wheel_installed_without_e_finds_its_data(tmp_path, tiny_cache):
    """Build the wheel, install it (no -e) into a fresh venv that borrows this environment's
    heavy dependencies, and run ``cotlib doctor`` and a fast ``cotlib demo`` from an empty
    folder: the base, the task splits and the photos come from site-packages/cotlib/_data."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("cotlib", "data"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    offline = {k: v for k, v in os.environ.items() if not k.startswith(("COTLIB_", "PYTHON"))}
    offline.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                   OMP_NUM_THREADS="1", COTLIB_CACHE=str(tiny_cache), PIP_NO_INDEX="1")

    def sh(*cmd, cwd=tmp_path, extra=None):
        done = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True,
                              env={**offline, **(extra or {})})
        assert done.returncode == 0, f"{cmd}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    sh(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
       "-w", tmp_path / "dist", src)
    (wheel,) = (tmp_path / "dist").glob("cotlib-*.whl")
    venv = tmp_path / "venv"
    sh(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    site = Path(sh(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
                .strip())
    # the heavy dependencies (torch, transformers, ...) from this environment, after the venv's
    # own site-packages; .pth files there are not processed, so its editable cotlib is not seen
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    sh(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", wheel)

    empty = tmp_path / "empty"
    empty.mkdir()
    where = sh(python, "-c", "from cotlib import env, images; print(env.DATA_DIR); "
               "print(len(images.sample_photos()))", cwd=empty).split()
    assert Path(where[0]) == site / "cotlib" / "_data" and int(where[1]) >= 5
    doctor = sh(venv / "bin" / "cotlib", "doctor", cwd=empty)
    assert f"data folder  : {site / 'cotlib' / '_data'} (installed package data)" in doctor
    assert "shipped tasks: ok (train " in doctor
    assert "shipped base : ok (checksum verified)" in doctor
    demo = sh(venv / "bin" / "cotlib", "demo", "--fast", "--tasks", "2", "--beam-tasks", "1",
              cwd=empty, extra={"COTLIB_FAST": "1"})
    assert str(site / "cotlib" / "_data" / "base") in demo and "[6/6]" in demo
    assert (empty / "runs" / "demo" / "report.md").exists()
    assert not (empty / "data").exists()

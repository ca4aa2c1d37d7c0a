"""The project's own promises: pyproject and environment.yml agree, notebooks don't drift,
every notebook has the course's standard opening."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "solutions").glob("*.ipynb"))


def _name(spec: str) -> str:
    return re.split(r"[<>=!~\[ ;]", spec.strip(), maxsplit=1)[0].lower()


def _pyproject_specs() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in ("course", "dev"):
        specs += project["optional-dependencies"][extra]
    return {s.replace(" ", "") for s in specs}


def _environment_specs() -> set[str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = lines.index("  - pip:")
    specs = set()
    for line in lines[start + 1:]:
        match = re.match(r"^\s+- (.+)$", line)
        if match and not match.group(1).startswith("-"):  # -e ., -c constraints.txt
            specs.add(match.group(1).replace(" ", ""))
    return specs


def test_environment_yml_mirrors_pyproject():
    py, conda = _pyproject_specs(), _environment_specs()
    assert py == conda, (
        f"only in pyproject: {sorted(py - conda)}; only in environment.yml: {sorted(conda - py)}"
    )


def test_python_versions_agree():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.11,<3.13"
    assert "python=3.11" in (ROOT / "environment.yml").read_text()


def test_student_notebooks_are_generated_from_solutions():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_student_notebooks.py"), "--check"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_student_notebooks_have_no_outputs_or_solutions():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs, path.name
                assert "BEGIN SOLUTION" not in cell.source, path.name


def test_strip_solutions_detects_broken_markers():
    sys.path.insert(0, str(ROOT / "scripts"))
    import make_student_notebooks as m

    assert "return 1" not in m.strip_solutions("# BEGIN SOLUTION\nreturn 1\n# END SOLUTION\n")
    with pytest.raises(ValueError):
        m.strip_solutions("# BEGIN SOLUTION\nreturn 1\n")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_opening(path):
    from cotlib import env

    nb = nbformat.read(path, as_version=4)
    first, install, params = nb.cells[0], nb.cells[1], nb.cells[2]
    assert first.cell_type == "markdown" and "What you'll learn" in first.source
    assert "GPU needed" in first.source and "Time:" in first.source
    assert f"notebooks/{path.name}" in first.source and "colab-badge" in first.source
    assert "google.colab" in install.source
    assert install.source == env.COLAB_CELL  # tests/test_package.py tests what it runs
    assert "parameters" in params.metadata.get("tags", [])
    assert "Recap" in nb.cells[-1].source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_import_the_library_instead_of_pasting_it(path):
    nb = nbformat.read(path, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "from cotlib" in code
    # Long function definitions belong in cotlib; exercises are short (issue 22: each solution
    # 5-25 lines, with its imports and the checker's call around it).
    for cell in nb.cells:
        if cell.cell_type == "code" and "def " in cell.source:
            if "# BEGIN SOLUTION" in cell.source:
                solution = cell.source.split("# BEGIN SOLUTION", 1)[1].split("# END SOLUTION")[0]
                assert solution.count("\n") <= 26, f"{path.name}: an exercise over 25 lines"
                assert cell.source.count("\n") < 40, f"{path.name}: move long code into cotlib"
            else:
                assert cell.source.count("\n") < 25, f"{path.name}: move long code into cotlib"


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme


def test_manifest_of_shipped_data_is_valid():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_data.py"), "--check"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr

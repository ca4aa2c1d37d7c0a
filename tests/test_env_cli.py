"""cotlib.env and the command line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cotlib import cli, env


def test_fast_mode_follows_the_variable(monkeypatch):
    monkeypatch.setenv("COTLIB_FAST", "1")
    assert env.is_fast()
    monkeypatch.setenv("COTLIB_FAST", "0")
    assert not env.is_fast()


def test_hardware_on_this_machine_is_consistent():
    hw = env.hardware()
    if hw.device == "cpu":
        assert hw.dtype == "float32" and not hw.bf16
    else:
        assert hw.dtype in {"bfloat16", "float16"}


def test_seeding_repeats_torch_draws():
    import torch

    env.seed_everything(3)
    a = torch.rand(3)
    env.seed_everything(3)
    assert torch.equal(a, torch.rand(3))


def test_report_never_prints_the_key(monkeypatch):
    secret = "sk-test-" + "x1y2z3" * 6
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    text = env.report()
    assert "OpenAI key  : set" in text and secret not in text
    assert secret not in str(env.describe())


def test_run_dir_is_shared(tmp_path, monkeypatch):
    monkeypatch.setenv("COTLIB_RUNS", str(tmp_path))
    assert env.run_dir("x") == tmp_path / "x" and (tmp_path / "x").is_dir()


def test_doctor_command(capsys):
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "device" in out and "shipped tasks: ok (train 240, val 60, test 120)" in out
    assert "shipped base :" in out and "chromium     :" in out
    assert f"data folder  : {env.DATA_DIR} (the repository's data/)" in out


def test_doctor_names_a_damaged_shipped_base(tmp_path, monkeypatch):
    from cotlib import models

    base = tmp_path / "base"
    monkeypatch.setattr(env, "BASE_DIR", base)
    assert "shipped base : MISSING data/base" in cli.offline_check()
    shutil.copytree(models.tiny("idefics3"), base)
    assert "No SHA256SUMS" in cli.offline_check()
    models.write_checksum(base)
    assert "shipped base : ok (checksum verified)" in cli.offline_check()
    (base / "config.json").write_text("{}")
    assert "changed config.json" in cli.offline_check()


def test_demo_runs_the_whole_pipeline_in_fast_mode(tmp_path, monkeypatch, tiny_cache, capsys):
    """tasks -> teacher -> filter -> datasets -> two LoRA adapters -> four systems -> report,
    from the command line, on a tiny random Qwen2-VL (tests/test_experiment.py runs the same
    pipeline on a tiny Idefics3)."""
    monkeypatch.setenv("COTLIB_RUNS", str(tmp_path))
    assert cli.main(["demo", "--fast", "--base", "tiny-qwen2_vl", "--tasks", "4",
                     "--beam-tasks", "2"]) == 0
    out = capsys.readouterr().out
    assert "[6/6]" in out and "| CoT SFT + beam | 2 |" in out
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "| base (direct) | 4 |" in report and "| task type |" in report
    assert os.path.exists(tmp_path / "demo" / "eval.json")


def test_generate_and_teacher_help_reach_their_own_parsers(capsys):
    for argv in (["generate", "--help"], ["teacher", "serve", "--help"]):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--split" in out or "--base-url" in out
    assert "--rate-429" in out or "--port" in out


CREATE_ENV = Path(__file__).resolve().parents[1] / "scripts" / "create_env.sh"


def test_create_env_script_is_valid_bash():
    done = subprocess.run(["bash", "-n", str(CREATE_ENV)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("python, says", [
    ("no-such-python3", "need Python >= 3.11 as no-such-python3"),
    ("old", "cotlib needs Python 3.11-3.12; found Python 3.10.1. Try: make PY=python3.11"),
])
def test_create_env_refuses_a_missing_or_old_python(tmp_path, python, says):
    if python == "old":  # a stand-in that answers like Python 3.10 and fails the version check
        python = str(tmp_path / "python3.10")
        Path(python).write_text('#!/bin/sh\n[ "$1" = --version ] && echo "Python 3.10.1"\nexit 1\n')
        Path(python).chmod(0o755)
    done = subprocess.run(["bash", str(CREATE_ENV)], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PY": python, "VENV": str(tmp_path / "venv")})
    assert done.returncode == 1
    assert says.replace("no-such-python3", python) in done.stdout
    assert not (tmp_path / "venv").exists()  # refused before creating anything


def test_create_env_refuses_to_run_without_the_constraints_file(tmp_path):
    done = subprocess.run(["bash", str(CREATE_ENV)], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PY": sys.executable, "VENV": str(tmp_path / "venv")})
    assert done.returncode == 1
    assert "constraints.txt is missing: git checkout constraints.txt" in done.stdout
    assert not (tmp_path / "venv").exists()


ROOT = CREATE_ENV.parents[1]


@pytest.mark.parametrize("uid, root", [("0", True), ("1000", False)])
def test_make_lab_passes_allow_root_only_to_root(uid, root):
    """Jupyter refuses to start as root without --allow-root (containers, cloud VMs)."""
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    # -n: print the commands without running them; -o: as if the environment were up to date
    done = subprocess.run(["make", "-n", "-o", ".venv/.cotlib-installed", "lab", f"USER_ID={uid}"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    lab = [line for line in done.stdout.splitlines() if "jupyter lab" in line]
    assert lab, done.stdout
    assert lab[-1].endswith("--allow-root") is root


def test_make_lab_detects_root_by_itself():
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    done = subprocess.run(["make", "-n", "-o", ".venv/.cotlib-installed", "lab"],
                          capture_output=True, text=True, cwd=ROOT)
    lab = [line for line in done.stdout.splitlines() if "jupyter lab" in line][-1]
    assert lab.endswith("--allow-root") is (os.getuid() == 0)

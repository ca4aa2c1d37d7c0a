"""One parameter carries a teacher choice through notebooks 02 -> 03 -> 04: ``env.use_teacher``
records it in the run folder, ``env.trace_files`` gives every notebook the same files. No network:
the "real" teacher below is the local one on loopback."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from cotlib import data, env, filtering, synth, teacher, teacher_server

ROOT = Path(__file__).resolve().parent.parent


def test_without_a_record_the_run_uses_the_local_teachers_files(tmp_path):
    files = env.trace_files(tmp_path)  # nothing recorded, nothing written: no error
    assert (files.teacher, files.traces, files.verdicts) == (
        "local", tmp_path / "traces.jsonl", tmp_path / "verdicts.jsonl")


def test_the_recorded_choice_is_what_later_notebooks_read(tmp_path):
    chosen = env.use_teacher(tmp_path, "real")
    assert chosen.traces == tmp_path / "traces_real.jsonl"
    assert chosen.verdicts == tmp_path / "verdicts_real.jsonl"
    chosen.traces.write_text("")
    assert env.trace_files(tmp_path) == chosen
    # going back to the local teacher is the same one call
    assert env.use_teacher(tmp_path, "local") == env.trace_files(tmp_path)
    assert env.trace_files(tmp_path).traces.name == "traces.jsonl"


def test_an_explicit_teacher_overrides_the_record(tmp_path):
    env.use_teacher(tmp_path, "real")
    assert env.trace_files(tmp_path, "local").traces == tmp_path / "traces.jsonl"


def test_missing_real_traces_say_how_to_write_them(tmp_path):
    env.use_teacher(tmp_path, "real")
    with pytest.raises(env.TracesMissing, match="USE_REAL_TEACHER = True") as err:
        env.trace_files(tmp_path)
    assert "traces_real.jsonl" in str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert env.trace_files(tmp_path, must_exist=False).teacher == "real"


def test_unknown_teacher_and_damaged_record_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown teacher"):
        env.use_teacher(tmp_path, "gpt-4o")
    (tmp_path / env.TEACHER_RECORD).write_text("{not json")
    with pytest.raises(ValueError, match="delete it and run notebook 02 again"):
        env.trace_files(tmp_path)


def test_a_real_teacher_run_reaches_the_dataset_with_nothing_renamed(tmp_path):
    """What notebooks 02, 03 and 04 do with USE_REAL_TEACHER = True, through the library."""
    tasks = synth.load_split(env.DATA_DIR / "tasks" / "train")[:24]
    files = env.use_teacher(tmp_path, "real")  # notebook 02's parameters cell
    with teacher_server.LocalTeacher() as server:  # stands in for OpenAI or vLLM
        config = teacher.TeacherConfig(model=teacher.LOCAL_MODEL, base_url=server.base_url)
        summary = teacher.run_generation(tasks, files.traces, config, progress=False)
    assert summary.done == len(tasks)

    later = env.trace_files(tmp_path)  # notebooks 03 and 04: no parameter, no renaming
    records = filtering.read_traces(later.traces)
    verdicts = filtering.filter_traces(records, tasks, out=later.verdicts)
    assert later.verdicts.exists() and not (tmp_path / "verdicts.jsonl").exists()
    assert [v.task_id for v in filtering.read_verdicts(later.verdicts)] == \
        [r["task_id"] for r in records]
    ds = data.build_dataset(records, verdicts, tasks)
    assert len(ds) == sum(v.kept for v in verdicts) > 0
    assert not (tmp_path / "traces.jsonl").exists()  # the local teacher's file was never needed


def _code(name: str) -> str:
    nb = nbformat.read(ROOT / "solutions" / name, as_version=4)
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


def test_notebooks_02_to_04_take_their_trace_files_from_env():
    """02 records USE_REAL_TEACHER's choice; 03 and 04 read it; none names a traces or verdicts
    file of its own (the renaming the issue found)."""
    assert 'env.use_teacher(run, "real" if USE_REAL_TEACHER else "local")' in \
        _code("02_trace_generation.ipynb")
    for name in ("03_filtering.ipynb", "04_dataset.ipynb"):
        code = _code(name)
        assert "files = env.trace_files(run)" in code, name
        assert "out=files.verdicts" in code, name
    for name in ("02_trace_generation.ipynb", "03_filtering.ipynb", "04_dataset.ipynb"):
        code = _code(name)
        assert 'run / "traces' not in code and 'run / "verdicts' not in code, name
        assert "out=run)" not in code, name

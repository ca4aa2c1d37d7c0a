"""cotlib.tables: the one markdown table format, and no module building its own."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from cotlib import data, env, evaluate, experiment, tables

ROOT = Path(__file__).resolve().parent.parent


def test_table_lines_and_alignment():
    text = tables.markdown_table(["task type", "n", "acc"], [["spatial", 3, 0.5], ["", "", ""]],
                                 "lrr")
    assert text.split("\n") == ["| task type | n | acc |", "|---|---:|---:|",
                                "| spatial | 3 | 0.5 |", "|  |  |  |"]
    assert tables.markdown_table(["a"], []) == "| a |\n|---|"


@pytest.mark.parametrize(("header", "rows", "align", "says"), [
    (["a", "b"], [[1, 2, 3]], None, "row 1 has 3 cells for 2 columns"),
    (["a", "b"], [], "l", "align 'l' has 1 letters for 2 columns"),
    (["a", "b"], [], "lc", "alignment letters ['c'] are not known"),
])
def test_a_table_that_does_not_fit_says_how_to_fix_it(header, rows, align, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        tables.markdown_table(header, rows, align)


def test_frame_table_is_the_filter_reports_old_format():
    """The format filtering.markdown_table wrote before it moved here, rebuilt from its code."""
    df = pd.DataFrame({"SUMMARY": [11.0, 15.0], "CAPTION": [3, 4]}, index=["min", "median"])
    named = df.rename_axis("reason")
    for frame in (df, named):
        head = ("| " + (frame.index.name or "") + " | " + " | ".join(map(str, frame.columns))
                + " |")
        rows = ["| " + str(i) + " | " + " | ".join(map(str, r)) + " |"
                for i, r in zip(frame.index, frame.itertuples(index=False))]
        old = "\n".join([head, "|---" * (len(frame.columns) + 1) + "|", *rows])
        assert tables.frame_table(frame) == old


def test_dataset_card_rows_table(tmp_path):
    stats = {"rows": {"train": 5, "validation": 2},
             "task_types": {"train": {"bar_max": 3, "spatial": 2}, "validation": {"spatial": 2}}}
    card = data.write_card(tmp_path, stats).read_text()
    assert ("## Rows\n\n| task type | train | validation |\n|---|---|---|\n| bar_max | 3 | 0 |\n"
            "| spatial | 2 | 2 |\n| **total** | 5 | 2 |\n\nCompletion length in words:") in card


def test_no_module_builds_its_own_table_rule():
    found = sorted(path.relative_to(ROOT).as_posix() for path in (ROOT / "cotlib").rglob("*.py")
                   if "|---" in path.read_text() and path.name != "tables.py")
    assert not found, f"markdown tables built by hand in {found}: use cotlib.tables.markdown_table"


@pytest.mark.parametrize("name", ["demo", "full", "full_earlier_base"])
def test_recorded_reports_are_rewritten_character_for_character(name, tmp_path):
    """write_report, given a shipped run's recorded results, controls and experiment.json,
    writes its report.md again byte for byte: every table in it (comparison, by type, controls,
    wrong CoT answers by stage, format, stage lengths) keeps the format it was written with."""
    folder = env.DATA_DIR / "results" / name
    controls = evaluate.load_results(folder / "controls.json")
    assert [r.note.split(": ")[-1] for r in controls[1:3]] == ["shuffled", "blank"]
    info = json.loads((folder / "experiment.json").read_text())
    assert info.get("attribution"), "the shipped runs report the wrong answers by stage"
    path = experiment.write_report(experiment.Experiment(
        tmp_path, evaluate.load_results(folder), info,
        dict(zip(["real", "shuffled", "blank", "majority"], controls, strict=True))))
    assert path.read_text() == (folder / "report.md").read_text()

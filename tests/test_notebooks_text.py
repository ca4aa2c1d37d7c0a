"""What a learner sees in the notebooks holds no author-only text: nbval's output checks are cell
tags (kept working), not ``# NBVAL_CHECK_OUTPUT`` comments; no bare ``{}`` output; no
"Loading weights" progress bars (``env.quiet_model_loading``)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbval.plugin import find_comment_markers, find_metadata_tags

from cotlib import env, models

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
STUDENT = sorted((ROOT / "notebooks").glob("*.ipynb"))
CHECK_TAG = "nbval-check-output"


def _code_cells(path: Path):
    nb = nbformat.read(path, as_version=4)
    return [c for c in nb.cells if c.cell_type == "code"]


def _text(output) -> str:
    if output.output_type == "stream":
        return output.text
    return str(output.get("data", {}).get("text/plain", ""))


@pytest.mark.parametrize("path", SOLUTIONS + STUDENT, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_nbval_comment_marker_is_shown(path):
    for cell in _code_cells(path):
        assert not list(find_comment_markers(cell.source)), (
            f"{path.name}: an nbval comment marker in\n{cell.source}\n"
            f"fix: drop the comment and tag the cell {CHECK_TAG!r} (cell metadata)")


def test_checked_cells_are_tagged_and_nbval_compares_them():
    checked = 0
    for path in SOLUTIONS:
        for cell in _code_cells(path):
            if CHECK_TAG in cell.metadata.get("tags", []):
                assert dict(find_metadata_tags(cell.metadata)) == {"check": True}
                assert cell.outputs and cell.execution_count, (
                    f"{path.name}: a checked cell without stored outputs compares nothing; "
                    "run scripts/execute_solutions.py on it")
                checked += 1
    assert checked >= 20  # 21 when the comments became tags


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_no_bare_empty_output_or_loading_bar(path):
    for cell in _code_cells(path):
        for output in cell.outputs:
            text = _text(output)
            where = f"{path.name}, under\n{cell.source}"
            assert text.strip() not in ("{}", "[]"), f"a bare {text.strip()} output: {where}"
            assert "Loading weights" not in text, f"a weight-loading bar: {where}"


def test_quiet_model_loading_hides_the_weights_bar_and_keeps_download_bars(capfd):
    from huggingface_hub.utils import are_progress_bars_disabled
    from transformers.utils import logging as hf_logging

    try:
        env.quiet_model_loading()
        assert not hf_logging.is_progress_bar_enabled()
        assert not are_progress_bars_disabled()
        capfd.readouterr()
        models.load(models.tiny("idefics3"), dtype="float32", device="cpu")
        captured = capfd.readouterr()
        assert "Loading weights" not in captured.err + captured.out
    finally:
        hf_logging.enable_progress_bar()

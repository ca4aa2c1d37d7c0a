"""Parallel ``make test`` (pytest-xdist, ``--dist loadfile``).

Each worker gets its own folder of run folders: the student and solution copies of a notebook
write the same run folder, and on two workers they may run at the same time. And the files with
tests marked ``slow`` go first, so they run beside the rest instead of after it.
"""

from __future__ import annotations

import os
from pathlib import Path

_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _WORKER and "COTLIB_RUNS" not in os.environ:
    os.environ["COTLIB_RUNS"] = str(Path(__file__).resolve().parent / "runs" / f"pytest-{_WORKER}")


def pytest_collection_modifyitems(config, items):
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: order kept within

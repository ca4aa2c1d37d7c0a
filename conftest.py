"""Parallel ``make test`` (pytest-xdist, ``--dist loadfile``): each worker gets its own folder
of run folders. The student and solution copies of a notebook write the same run folder, and on
two workers they may run at the same time; this keeps them apart."""

from __future__ import annotations

import os
from pathlib import Path

_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _WORKER and "COTLIB_RUNS" not in os.environ:
    os.environ["COTLIB_RUNS"] = str(Path(__file__).resolve().parent / "runs" / f"pytest-{_WORKER}")

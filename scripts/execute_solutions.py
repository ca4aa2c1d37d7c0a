"""Run the solution notebooks in fast mode and store their outputs (for reading, and for the cells
tagged ``nbval-check-output`` whose output nbval compares), then regenerate the student copies.

    python scripts/execute_solutions.py [solutions/01_structured_reasoning.ipynb ...]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent


def execute(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)
    print(f"executed {path.relative_to(ROOT)}")


def main(argv: list[str]) -> int:
    os.environ.setdefault("COTLIB_FAST", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    paths = [Path(a).resolve() for a in argv] or sorted((ROOT / "solutions").glob("*.ipynb"))
    for path in paths:
        execute(path)
    sys.path.insert(0, str(ROOT / "scripts"))
    import make_student_notebooks

    return make_student_notebooks.main([])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

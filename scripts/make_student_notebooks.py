"""Generate the student notebooks in notebooks/ from the complete ones in solutions/.

In a solution notebook, code between a line ``# BEGIN SOLUTION`` and a line ``# END SOLUTION``
is the learner's exercise: in the student copy it becomes
``raise NotImplementedError("Exercise: write this part")`` at the same indentation, so the
checker reports "not done yet" and the notebook still runs to the end with cotlib's version.
Outputs and execution counts are stripped from student copies.

    python scripts/make_student_notebooks.py           # write notebooks/
    python scripts/make_student_notebooks.py --check   # exit 1 if notebooks/ has drifted
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"
STUDENT = ROOT / "notebooks"
BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
STUB = 'raise NotImplementedError("Exercise: write this part")'


def strip_solutions(source: str) -> str:
    """Replace each solution block with a stub at the block's indentation.

    >>> strip_solutions("def f():\\n    # BEGIN SOLUTION\\n    return 1\\n    # END SOLUTION\\n")
    'def f():\\n    raise NotImplementedError("Exercise: write this part")\\n'
    """
    out: list[str] = []
    inside = False
    for line in source.splitlines(keepends=True):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ValueError("nested # BEGIN SOLUTION")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.append(indent + STUB + "\n")
        elif stripped == END:
            if not inside:
                raise ValueError("# END SOLUTION without # BEGIN SOLUTION")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError("# BEGIN SOLUTION without # END SOLUTION")
    return "".join(out)


def student_version(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` with solutions stubbed and outputs stripped."""
    nb = nbformat.from_dict(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source)
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
    return nb


def render(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return nbformat.writes(student_version(nb)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if notebooks/ has drifted")
    args = parser.parse_args(argv)
    drift = []
    sources = sorted(SOLUTIONS.glob("*.ipynb"))
    expected_names = {p.name for p in sources}
    for path in sources:
        text = render(path)
        target = STUDENT / path.name
        if args.check:
            if not target.exists() or target.read_text() != text:
                drift.append(path.name)
        else:
            STUDENT.mkdir(exist_ok=True)
            target.write_text(text)
    extra = sorted(p.name for p in STUDENT.glob("*.ipynb") if p.name not in expected_names)
    if args.check and (drift or extra):
        print("notebooks/ has drifted from solutions/: " + ", ".join(drift + extra))
        print("fix: python scripts/make_student_notebooks.py (edit solutions/, never notebooks/)")
        return 1
    if not args.check:
        for name in extra:
            (STUDENT / name).unlink()
        print(f"wrote {len(sources)} student notebooks to {STUDENT.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

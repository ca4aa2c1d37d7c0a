"""``python -m cotlib.teacher``: the same as ``cotlib generate``."""

import sys

from cotlib.teacher.cli import generate_main

if __name__ == "__main__":
    sys.exit(generate_main())

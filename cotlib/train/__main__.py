"""``python -m cotlib.train`` (and ``accelerate launch -m cotlib.train``)."""

import sys

from cotlib.train.cli import main

if __name__ == "__main__":
    sys.exit(main())

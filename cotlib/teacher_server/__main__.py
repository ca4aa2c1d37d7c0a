"""``python -m cotlib.teacher_server``: the same as ``cotlib teacher serve``."""

from cotlib.teacher_server.local import main

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

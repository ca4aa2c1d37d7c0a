"""Notebook 08: read the first file of an upload widget's value."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from cotlib.checks.core import Case, checker, run_cases


def first_upload_cases() -> list[Case]:
    """Cases for the notebook 08 exercise ``first_upload(value) -> (name, bytes) | None``."""
    from cotlib.widgets import fake_upload

    one = fake_upload(b"\x89PNG fake", name="cat.png")
    two = one + fake_upload(b"\xff\xd8\xff fake", name="dog.jpg")
    return [
        Case("one uploaded file", (tuple(one),), ("cat.png", b"\x89PNG fake"),
             "value is a tuple of dicts: take value[0]['name'] and value[0]['content']."),
        Case("two files: the first one", (tuple(two),), ("cat.png", b"\x89PNG fake"),
             "Use only the first file, value[0]."),
        Case("nothing uploaded yet", ((),), None,
             "An empty tuple means no upload yet: return None."),
        Case("a list instead of a tuple", (list(one),), ("cat.png", b"\x89PNG fake"),
             "Index the value (value[0]); don't depend on it being a tuple."),
    ]


@checker
def check_first_upload(fn: Callable[[Sequence[Mapping]], tuple[str, bytes] | None]) -> bool:
    """Check a learner's ``first_upload(value)`` against :func:`cotlib.widgets.first_upload`.
    The content must come back as ``bytes`` (a ``memoryview`` compares equal but breaks later,
    e.g. on pickling)."""
    from cotlib.widgets import first_upload

    cases = first_upload_cases()
    for case in cases:  # the table must agree with the library, or the checker itself is wrong
        assert first_upload(*case.args) == case.expected, case.name

    def typed(value):
        got = fn(value)
        if isinstance(got, tuple) and len(got) == 2 and not isinstance(got[1], bytes):
            raise TypeError(f"the content came back as {type(got[1]).__name__}, not bytes: "
                            "copy it with bytes(entry['content'])")
        return got

    return run_cases("first_upload", typed, cases)

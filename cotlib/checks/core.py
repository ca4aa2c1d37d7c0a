"""What every checker shares: :class:`Case` tables, :func:`run_cases`, :func:`cmp`, the
one-line reports (not done yet, a learner's exception, a miss with its hint), and the
:class:`Verdict` every checker returns (``True``/``False`` in code, nothing under the cell in
Jupyter: the checker has already printed its line).

>>> cmp("answer", 3, 3)
✅ answer: matches
True
"""

from __future__ import annotations

import functools
import inspect
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ParamSpec

_P = ParamSpec("_P")

#: The model families the notebooks teach: the checkers compare against both (the notebooks'
#: printed results name them), whatever else ``cotlib.families`` registers.
COURSE_FAMILIES = ("idefics3", "qwen2_vl")


class Verdict(int):
    """A checker's pass/fail: an ``int`` that is 1 or 0 and behaves like ``True``/``False``
    (truthiness, ``== True``, hashing, ``sum``), reads ``True``/``False`` in a console and in
    doctests, and shows nothing as a notebook cell's last value, because the checker has already
    printed its verdict line (``bool`` itself cannot be subclassed).

    >>> Verdict(True), Verdict(0) == False, sum([Verdict(1), Verdict(1)])
    (True, True, 2)
    """

    def __new__(cls, ok: object) -> Verdict:
        return super().__new__(cls, bool(ok))

    def __repr__(self) -> str:
        return "True" if self else "False"

    __str__ = __repr__

    def _ipython_display_(self) -> None:
        """Show nothing in IPython/Jupyter: the checker's own line says it all."""


def checker(fn: Callable[_P, object]) -> Callable[_P, Verdict]:
    """Decorate a checker: its result (``True``/``False`` or any truthy/falsy value) comes back
    as a :class:`Verdict`, so a notebook cell ending in the checker shows only the lines the
    checker printed. Every checker the notebooks call is decorated with it."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Verdict:
        return Verdict(fn(*args, **kwargs))

    # help() and inspect.signature() show what the caller gets, not the body's bool
    wrapper.__annotations__ = {**fn.__annotations__, "return": "Verdict"}
    wrapper.__signature__ = inspect.signature(fn).replace(  # type: ignore[attr-defined]
        return_annotation="Verdict")
    return wrapper


@dataclass
class Case:
    """One input for a checker: positional ``args``, the expected result, and a hint for a miss."""

    name: str
    args: tuple
    expected: Any
    hint: str = ""


@checker
def cmp(name: str, mine: Any, ref: Any) -> bool:
    """Compare a learner's value with the reference and say so in one line (Karpathy's ``cmp``).

    Tensors and arrays are compared elementwise with a tolerance; the largest difference is shown.

    >>> cmp("count", 2, 3)
    ❌ count: got 2, expected 3
    False
    """
    try:
        import torch

        if isinstance(mine, torch.Tensor) or isinstance(ref, torch.Tensor):
            mine_t, ref_t = torch.as_tensor(mine).float(), torch.as_tensor(ref).float()
            if mine_t.shape != ref_t.shape:
                print(f"❌ {name}: shape {tuple(mine_t.shape)}, expected {tuple(ref_t.shape)}")
                return False
            diff = (mine_t - ref_t).abs().max().item() if mine_t.numel() else 0.0
            ok = torch.allclose(mine_t, ref_t, atol=1e-5, rtol=1e-4)
            print(f"{'✅' if ok else '❌'} {name}: max difference {diff:.2g}")
            return bool(ok)
    except ImportError:  # pragma: no cover
        pass
    if mine == ref:
        print(f"✅ {name}: matches")
        return True
    print(f"❌ {name}: got {mine!r}, expected {ref!r}")
    return False


@checker
def run_cases(title: str, fn: Callable, cases: Iterable[Case]) -> bool:
    """Run ``fn`` on each case; print the first failure with its hint, or a pass line.

    >>> run_cases("double", lambda x: 2 * x, [Case("two", (2,), 4)])
    ✅ double: all 1 cases pass
    True
    """
    cases = list(cases)
    for case in cases:
        ok, got = call(title, case.name, fn, *case.args, hint=case.hint)
        if not ok:
            return False
        if got != case.expected:
            print(f"❌ {title}: case '{case.name}': got {got!r}, expected {case.expected!r}")
            print(f"   input: {short(case.args)}")
            if case.hint:
                print(f"   hint: {case.hint}")
            return False
    print(f"✅ {title}: all {len(cases)} cases pass")
    return True


def short(args: tuple, limit: int = 160) -> str:
    """A case's arguments as one line of at most ``limit`` characters."""
    text = ", ".join(repr(a) for a in args)
    return text if len(text) <= limit else text[: limit - 1] + "…"


#: What a checker says for a stub that still raises ``NotImplementedError``.
NOT_DONE = ("not done yet — write the function above and run this cell again. The notebook "
            "continues with cotlib's version meanwhile.")


def call(title: str, case: str, fn: Callable, *args, hint: str = "") -> tuple[bool, Any]:
    """Call a learner's function; report "not done yet" or an exception in one line (then
    ``hint``, if any)."""
    try:
        return True, fn(*args)
    except NotImplementedError:
        print(f"⏳ {title}: {NOT_DONE}")
    except Exception as err:  # a learner's bug: show it briefly, never crash the notebook
        last = traceback.extract_tb(err.__traceback__)[-1]
        print(f"❌ {title}: case '{case}' raised {type(err).__name__}: {err} "
              f"(line {last.lineno}: {last.line!r})")
        if hint:
            print(f"   hint: {hint}")
    return False, None


def miss(title: str, case: str, got: Any, expected: Any, hint: str = "",
         inputs: str = "") -> Verdict:
    """Report a case the learner's function got wrong (what came in, out, and was expected, and
    a hint); returns a false :class:`Verdict` for the checker to return."""
    print(f"❌ {title}: case '{case}'")
    if inputs:
        print(f"   input:    {inputs}")
    print(f"   got:      {got}")
    print(f"   expected: {expected}")
    if hint:
        print(f"   hint: {hint}")
    return Verdict(False)


"""Notebook 00: how much memory do the weights take?"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cotlib.checks.core import Case, checker, run_cases


def weights_gib_cases() -> list[Case]:
    """Cases for the notebook 00 exercise ``weights_gib(params_millions, dtype) -> float``. The
    hints here are for a function that raises; a wrong number gets a hint chosen by what it is
    (:func:`weights_gib_hint`)."""
    from cotlib import models

    bytes_hint = ("bytes = parameters x bytes per parameter: 4 for float32, 2 for bfloat16 and "
                  "float16, 1 for int8, 0.5 for int4 (see models.BYTES_PER_PARAM)")
    return [
        Case("SmolVLM-256M in bfloat16", (256, "bfloat16"), models.weights_gib(256, "bfloat16"),
             bytes_hint),
        Case("SmolVLM-256M in float32", (256, "float32"), models.weights_gib(256, "float32"),
             bytes_hint),
        Case("Qwen2.5-VL-3B in float16", (3755, "float16"), models.weights_gib(3755, "float16"),
             bytes_hint),
        Case("Qwen2.5-VL-3B in int4 (QLoRA)", (3755, "int4"), models.weights_gib(3755, "int4"),
             bytes_hint),
        Case("SmolVLM-500M in int8", (507, "int8"), models.weights_gib(507, "int8"), bytes_hint),
    ]


def weights_gib_hint(got: Any, params_millions: float, dtype: str) -> str:
    """A hint for a wrong ``weights_gib`` result, chosen by what the number looks like: not
    rounded, rounded the wrong way, gigabytes instead of GiB, millions forgotten, or the wrong
    bytes per parameter. It names the mistake, not the code that fixes it.

    >>> weights_gib_hint(0.476837158203125, 256, "bfloat16")  # doctest: +ELLIPSIS
    'the size is right but not rounded: ...'
    >>> weights_gib_hint(0.51, 256, "bfloat16")  # doctest: +ELLIPSIS
    'that is in gigabytes (10**9 bytes); ...'
    """
    from cotlib import models

    if isinstance(got, bool) or not isinstance(got, (int, float)):
        return (f"return a number (a float), not {type(got).__name__}: formatting the value "
                "as text is for printing only")
    size = params_millions * 1e6 * models.BYTES_PER_PARAM[dtype]
    exact = size / 2**30

    def near(value: float, target: float) -> bool:
        return abs(value - target) <= 1e-9 * max(1.0, abs(target))

    if near(got, exact):
        return ("the size is right but not rounded: the exercise asks for 2 decimals (the "
                "rounding comes last, on the GiB value)")
    found = []
    if any(near(got, v) for f in (1e-6, 1e6) for v in (exact * f, round(exact * f, 2))):
        found.append("params_millions counts millions of parameters: multiply by 1e6 once")
    if near(got, round(exact, 1)) or near(got, round(exact)):
        found.append("rounded to too few decimals: the exercise asks for 2")
    if found:
        return "; or ".join(found)
    if abs(got - exact) < 0.01:
        return ("off in the last decimal: round to the nearest hundredth (cutting the digits "
                "off, as int() or math.floor do, is not rounding)")
    if abs(got - size / 1e9) < 0.01:
        return "that is in gigabytes (10**9 bytes); 1 GiB is 2**30 bytes"
    return ("bytes = parameters x bytes per parameter (4 for float32, 2 for bfloat16 and "
            "float16, 1 for int8, 0.5 for int4: models.BYTES_PER_PARAM); check the number of "
            f"bytes you use for {dtype}")


@checker
def check_weights_gib(fn: Callable[[float, str], float]) -> bool:
    """Check a learner's ``weights_gib(params_millions, dtype)`` against
    :func:`cotlib.models.weights_gib`; a wrong number gets :func:`weights_gib_hint`."""
    cases = weights_gib_cases()
    for i, case in enumerate(cases):
        try:
            got = fn(*case.args)
        except Exception:  # run_cases reports it (or "not done yet") with the case's own hint
            continue
        if got != case.expected:
            cases[i] = Case(case.name, case.args, case.expected, weights_gib_hint(got, *case.args))
    return run_cases("weights_gib", fn, cases)

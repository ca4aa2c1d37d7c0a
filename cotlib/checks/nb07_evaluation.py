"""Notebook 07: which system is best within a latency budget?"""

from __future__ import annotations

from collections.abc import Callable

from cotlib.checks.core import Case, checker, run_cases


def _budget_result(name: str, accuracy: float, seconds: float):
    from cotlib.evaluate import EvalResult

    return EvalResult(name=name, n=100, accuracy=accuracy, by_type={}, format_rate=0.0,
                      mean_tokens=0.0, mean_seconds=seconds)


def budget_cases() -> list[Case]:
    """Cases for the notebook 07 exercise ``best_within_budget(results, max_seconds)``."""
    base = _budget_result("base", 0.40, 0.01)
    direct = _budget_result("direct SFT", 0.55, 0.01)
    cot = _budget_result("CoT SFT", 0.62, 0.30)
    beam = _budget_result("CoT + beam", 0.64, 1.50)
    worse = _budget_result("CoT (bad run)", 0.50, 0.30)
    same = _budget_result("direct, slower server", 0.55, 0.02)
    systems = [base, direct, cot, beam]
    return [
        Case("generous budget", (systems, 2.0), "CoT + beam",
             "Among the systems that fit the budget, pick the highest accuracy."),
        Case("beam too slow", (systems, 1.0), "CoT SFT",
             "A system whose mean_seconds is above max_seconds does not fit."),
        Case("only direct answers fit", (systems, 0.05), "direct SFT", ""),
        Case("the budget is inclusive", (systems, 0.30), "CoT SFT",
             "A system that takes exactly max_seconds fits (<=)."),
        Case("nothing fits", (systems, 0.001), None,
             "Return None when no system is fast enough."),
        Case("reasoning that does not pay", ([base, direct, worse], 1.0), "direct SFT",
             "Slower is not better: compare accuracy, not tokens."),
        Case("a tie goes to the faster", ([same, direct], 1.0), "direct SFT",
             "Equal accuracy: prefer the smaller mean_seconds."),
        Case("no systems", ([], 1.0), None, ""),
    ]


@checker
def check_best_within_budget(fn: Callable) -> bool:
    """Check a learner's ``best_within_budget(results, max_seconds)`` against
    :func:`cotlib.evaluate.best_within_budget`."""
    from cotlib.evaluate import best_within_budget

    cases = budget_cases()
    for case in cases:  # the table must agree with the library
        assert best_within_budget(*case.args) == case.expected, case.name
    return run_cases("best_within_budget", fn, cases)

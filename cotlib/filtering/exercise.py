"""Notebook 03's exercise checker: the learner's own hedging check against the library's."""

from __future__ import annotations

from cotlib import stages
from cotlib.filtering.checks import Check, check_hedging


def hedging_cases() -> list:
    """The cases a learner's hedging check must pass, each with a hint
    (:class:`cotlib.checks.Case`).

    >>> [case.name for case in hedging_cases()][:2]
    ['a plain answer', "'maybe' in the conclusion"]
    """
    from cotlib.checks import Case

    def rec(conclusion, reasoning="Two red circles and one red square make 3."):
        return {"task_id": "t", "status": "done",
                "text": stages.render("I will count the red objects.", "Three red shapes.",
                                      reasoning, conclusion)}

    hint_case = ("Compare whole words, in lower case: split the CONCLUSION with "
                 "re.findall(r'[a-z]+', text.lower()) and look for any of HEDGE_WORDS.")
    return [
        Case("a plain answer", (rec("3"), None), None, "Return None when the trace is fine."),
        Case("'maybe' in the conclusion", (rec("maybe 3"), None), "style:hedging",
             "Return the reason name 'style:hedging' when the CONCLUSION hedges."),
        Case("capitalised hedge", (rec("Probably 3."), None), "style:hedging", hint_case),
        Case("hedge only in the reasoning",
             (rec("3", "It might look like 2, but there are 3."), None), None,
             "Only the CONCLUSION matters: parse the text and read stages['CONCLUSION']."),
        Case("a word that merely contains a hedge", (rec("Mightiest is 3"), None), None,
             hint_case),
        Case("no CONCLUSION at all",
             ({"task_id": "t", "text": "<SUMMARY>plan</SUMMARY>"}, None), None,
             "A missing CONCLUSION is the format check's job: return None (don't crash)."),
    ]


def check_hedging_exercise(fn: Check) -> bool:
    """Check a learner's hedging check against :func:`check_hedging` (notebook 03)."""
    from cotlib.checks import run_cases

    cases = hedging_cases()
    for case in cases:  # the table must agree with the library, or the checker is wrong
        assert check_hedging(*case.args) == case.expected, case.name
    return run_cases("hedging check", fn, cases)

"""Notebook 02: the answer-conditioned prompt."""

from __future__ import annotations

from collections.abc import Callable

from cotlib.checks.core import Case, call, checker

_MC_QUESTION = ("Which color bar is the tallest?\nOptions: A. red B. blue C. green\n"
                "Answer with the option's letter.")


def conditioned_prompt_cases() -> list[Case]:
    """Cases for the notebook 02 exercise ``build_conditioned_text(question, answer) -> str``."""
    from cotlib import teacher

    def case(name: str, question: str, answer: str, hint: str) -> Case:
        return Case(name, (question, answer), teacher.request_text(question, answer), hint)

    return [
        case("a counting question", "How many red objects are there?", "2",
             "Two lines: 'Question: <question>', then 'Standard answer: <answer>'."),
        case("a yes/no question", "Is the blue square above the red circle?", "no",
             "The answer goes after 'Standard answer: ' exactly as given."),
        case("multiple choice (a question of several lines)", _MC_QUESTION, "B",
             "Keep the question's own line breaks; the standard answer is the last line."),
        case("spaces around the inputs", "  What color is the small circle?  ", " purple\n",
             "Strip spaces and newlines around the question and the answer."),
    ]


def _diagnose_prompt(got: object, question: str, answer: str) -> str:
    """Name the first thing wrong with a learner's conditioned text."""
    from cotlib import teacher

    if not isinstance(got, str):
        return f"return a str, not {type(got).__name__}"
    if not got.startswith("Question: "):
        return "start with 'Question: ' (capital Q, colon, one space)"
    if "\nStandard answer: " not in got:
        return "put the answer on its own line starting 'Standard answer: '"
    if got != got.strip():
        return "no spaces or newlines at the very start or end"
    parsed = teacher.parse_request_text(got)
    if parsed.question != question.strip():
        return f"the question part reads {parsed.question!r}, expected {question.strip()!r}"
    if parsed.answer != answer.strip():
        return f"the answer part reads {parsed.answer!r}, expected {answer.strip()!r}"
    return "compare your text with the expected one character by character"


@checker
def check_conditioned_prompt(fn: Callable[[str, str], str]) -> bool:
    """Check a learner's ``build_conditioned_text(question, answer)`` against
    :func:`cotlib.teacher.request_text`: the local teacher and the filter read the standard
    answer back from exactly this format, so it must match character for character."""
    from cotlib import teacher

    cases = conditioned_prompt_cases()
    for case in cases:  # the table must round-trip through the library, or the checker is wrong
        parsed = teacher.parse_request_text(case.expected)
        assert (parsed.question, parsed.answer) == tuple(a.strip() for a in case.args), case.name
    title = "build_conditioned_text"
    for case in cases:
        ok, got = call(title, case.name, fn, *case.args)
        if not ok:
            return False
        if got != case.expected:
            print(f"❌ {title}: case '{case.name}'")
            print(f"   got:      {got!r}")
            print(f"   expected: {case.expected!r}")
            print(f"   fix: {_diagnose_prompt(got, *case.args)}")
            if case.hint:
                print(f"   hint: {case.hint}")
            return False
    print(f"✅ {title}: all {len(cases)} cases pass — the local teacher will read your standard "
          "answer correctly")
    return True


# ============================================================================================
# Mechanism exercises (issue 22): parsing the stages (01), completion-only labels (04), the LoRA

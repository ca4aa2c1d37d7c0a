"""Notebook 01: split a staged answer into its stages."""

from __future__ import annotations

from collections.abc import Callable

from cotlib import stages
from cotlib.checks.core import Case, call, checker, miss


def _wf(summary="plan", caption="a red circle", reasoning="one red object", conclusion="1"):
    return stages.render(summary, caption, reasoning, conclusion)



def split_stages_cases() -> list[Case]:
    """Cases for notebook 01's ``split_stages(text) -> dict``; expected = ``stages.parse``."""
    good = _wf()

    def case(name: str, text: str, hint: str) -> Case:
        return Case(name, (text,), stages.parse(text).stages, hint)

    return [
        case("a good trace", good, "Find each opening tag, take the text up to its closing tag, "
             "and strip spaces around it."),
        case("lower-case tags", good.lower(), "Compare tag names case-insensitively, and store "
             "them upper-case (SUMMARY, not summary)."),
        case("spaces inside the tags", good.replace("<CAPTION>", "< CAPTION >")
             .replace("</CAPTION>", "</ CAPTION>"),
             "Allow spaces or tabs inside the brackets: '< CAPTION >', '</ CAPTION>'."),
        case("cut off in REASONING", good.split("</REASONING>")[0],
             "A stage that never closes runs to the end of the text (a generation cut off)."),
        case("a stage opened while another is open",
             "<SUMMARY> plan <CAPTION> a red circle </CAPTION>",
             "An opening tag ends a stage that is still open: SUMMARY is ' plan'."),
        case("stages out of order",
             "<CAPTION>c</CAPTION><SUMMARY>s</SUMMARY><CONCLUSION>1</CONCLUSION>",
             "Keep the stages in the order they appear; do not sort them."),
        case("a repeated stage", _wf() + "\n<CONCLUSION> 7 </CONCLUSION>",
             "A stage that appears again keeps its first text."),
        case("a stray closing tag", "<SUMMARY> plan </CAPTION> more </SUMMARY>",
             "A closing tag closes only the stage that is open; any other one is ordinary text."),
        case("other tags and chatter", "Sure! <SUMMARY> use <b>bold</b>, x < y > z </SUMMARY> "
             "bye", "Only the four stage names are tags; anything else (<b>, x < y > z, text "
             "outside the stages) is left alone."),
        case("no tags at all", "just an answer", "No stages found: return an empty dict."),
    ]


@checker
def check_split_stages(fn: Callable[[str], dict]) -> bool:
    """Check a learner's ``split_stages(text)`` against ``stages.parse(text).stages``."""
    title = "split_stages"
    cases = split_stages_cases()
    for case in cases:
        ok, got = call(title, case.name, fn, *case.args)
        if not ok:
            return False
        if not isinstance(got, dict):
            return miss(title, case.name, f"a {type(got).__name__}", "a dict {stage: text}",
                        "return a dict", repr(case.args[0])[:100])
        if got != case.expected or list(got) != list(case.expected):
            return miss(title, case.name, repr(got), repr(case.expected), case.hint,
                        repr(case.args[0])[:160])
    print(f"✅ {title}: all {len(cases)} cases pass — the same stages as stages.parse")
    return True

"""Exercise checkers for the notebooks: they explain the first mistake and never crash the lesson.

Each checker takes the learner's function, runs it on a table of cases against the library's own
answer, prints one clear line, and returns ``True``/``False``. A stub that still raises
``NotImplementedError`` is reported as "not done yet" so the notebook can continue with the
library's version.

>>> cmp("answer", 3, 3)
✅ answer: matches
True
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from cotlib import stages


@dataclass
class Case:
    """One input for a checker: positional ``args``, the expected result, and a hint for a miss."""

    name: str
    args: tuple
    expected: Any
    hint: str = ""


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


def run_cases(title: str, fn: Callable, cases: Iterable[Case]) -> bool:
    """Run ``fn`` on each case; print the first failure with its hint, or a pass line.

    >>> run_cases("double", lambda x: 2 * x, [Case("two", (2,), 4)])
    ✅ double: all 1 cases pass
    True
    """
    cases = list(cases)
    for case in cases:
        try:
            got = fn(*case.args)
        except NotImplementedError:
            print(f"⏳ {title}: not done yet — write the function above and run this cell again. "
                  "The notebook continues with cotlib's version meanwhile.")
            return False
        except Exception as err:  # a learner's bug: show it briefly, never crash the notebook
            last = traceback.extract_tb(err.__traceback__)[-1]
            print(f"❌ {title}: case '{case.name}' raised {type(err).__name__}: {err} "
                  f"(line {last.lineno}: {last.line!r})")
            if case.hint:
                print(f"   hint: {case.hint}")
            return False
        if got != case.expected:
            print(f"❌ {title}: case '{case.name}': got {got!r}, expected {case.expected!r}")
            print(f"   input: {_short(case.args)}")
            if case.hint:
                print(f"   hint: {case.hint}")
            return False
    print(f"✅ {title}: all {len(cases)} cases pass")
    return True


def _short(args: tuple, limit: int = 160) -> str:
    text = ", ".join(repr(a) for a in args)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------------------------
# Notebook 00: how much memory do the weights take?
# --------------------------------------------------------------------------------------------

def weights_gib_cases() -> list[Case]:
    """Cases for the notebook 00 exercise ``weights_gib(params_millions, dtype) -> float``."""
    from cotlib import models

    bytes_hint = ("bytes = parameters x bytes per parameter: 4 for float32, 2 for bfloat16 and "
                  "float16, 1 for int8, 0.5 for int4 (see models.BYTES_PER_PARAM)")
    gib_hint = "1 GiB is 2**30 bytes (not 10**9), and params_millions is in millions (x 1e6)"
    return [
        Case("SmolVLM-256M in bfloat16", (256, "bfloat16"), models.weights_gib(256, "bfloat16"),
             gib_hint),
        Case("SmolVLM-256M in float32", (256, "float32"), models.weights_gib(256, "float32"),
             bytes_hint),
        Case("Qwen2.5-VL-3B in float16", (3755, "float16"), models.weights_gib(3755, "float16"),
             bytes_hint),
        Case("Qwen2.5-VL-3B in int4 (QLoRA)", (3755, "int4"), models.weights_gib(3755, "int4"),
             bytes_hint),
        Case("SmolVLM-500M in int8", (507, "int8"), models.weights_gib(507, "int8"),
             "round the result to 2 decimals: round(x, 2)"),
    ]


def check_weights_gib(fn: Callable[[float, str], float]) -> bool:
    """Check a learner's ``weights_gib(params_millions, dtype)`` against
    :func:`cotlib.models.weights_gib`."""
    return run_cases("weights_gib", fn, weights_gib_cases())


# --------------------------------------------------------------------------------------------
# Notebook 01: is a model output well formed?
# --------------------------------------------------------------------------------------------

def _wf(summary="plan", caption="a red circle", reasoning="one red object", conclusion="1"):
    return stages.render(summary, caption, reasoning, conclusion)


def well_formed_cases() -> list[Case]:
    """Cases for the notebook 01 exercise ``is_well_formed(text) -> bool``."""
    good = _wf()
    return [
        Case("a good trace", (good,), True),
        Case("lower-case tags", (good.lower().replace("1", "1"),), True,
             "Tags may be written in any case: compare names case-insensitively."),
        Case("no CONCLUSION", (good.split("<CONCLUSION>")[0],), False,
             "All four stages must be present."),
        Case("stages out of order",
             ("<CAPTION>c</CAPTION><SUMMARY>s</SUMMARY><REASONING>r</REASONING>"
              "<CONCLUSION>1</CONCLUSION>",), False,
             "SUMMARY must come before CAPTION, CAPTION before REASONING, and so on."),
        Case("an empty stage", (_wf(reasoning=" "),), False,
             "A stage with only whitespace inside counts as empty."),
        Case("cut off before </CONCLUSION>", (good.replace("</CONCLUSION>", ""),), False,
             "Every stage must be closed; a generation that stopped early is not well formed."),
        Case("chatter outside the tags", ("Sure! " + good,), False,
             "Text outside the four tags makes the output ill-formed."),
        Case("extra spaces between stages", (good.replace("\n\n", "\n \n\t"),), True,
             "Whitespace between stages is fine."),
    ]


def check_is_well_formed(fn: Callable[[str], bool]) -> bool:
    """Check a learner's ``is_well_formed(text)`` against :func:`cotlib.stages.is_valid`."""
    cases = well_formed_cases()
    for case in cases:  # the table must agree with the library, or the checker itself is wrong
        assert stages.is_valid(*case.args) == case.expected, case.name
    return run_cases("is_well_formed", fn, cases)


# --------------------------------------------------------------------------------------------
# Notebook 02: the answer-conditioned prompt
# --------------------------------------------------------------------------------------------

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
        try:
            got = fn(*case.args)
        except NotImplementedError:
            print(f"⏳ {title}: not done yet — write the function above and run this cell "
                  "again. The notebook continues with cotlib's version meanwhile.")
            return False
        except Exception as err:  # a learner's bug: show it briefly, never crash the notebook
            print(f"❌ {title}: case '{case.name}' raised {type(err).__name__}: {err}")
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

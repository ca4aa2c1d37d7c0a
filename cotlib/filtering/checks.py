"""The per-trace checks: ``check(record, task) -> None | reason | (reason, explanation)``, and
the default list, in priority order."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cotlib import stages
from cotlib.filtering.scene import scene_problem
from cotlib.normalize import answers_match
from cotlib.teacher.store import parse_text

#: A check: ``(record, task) -> None | reason | (reason, explanation)``.
Check = Callable[[dict, Any], Any]


# -----------------------------------------------------------------------------
# helpers


def parse_record(record: Mapping) -> stages.Parsed:
    """The record's text parsed once for all checks, the report and the dataset
    (:func:`cotlib.teacher.store.parse_text`, the trace type's own parse, cached by text; treat
    it as read-only)."""
    return parse_text(record.get("text") or "")


def word_count(text: str) -> int:
    """Words in a text (whitespace separated).

    >>> word_count("A red  circle.")
    3
    """
    return len(text.split())


def excerpt(text: str, limit: int = 160) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -----------------------------------------------------------------------------
# the checks


def check_status(record: Mapping, task: Any) -> str | tuple[str, str] | None:
    """``teacher:failed`` when the teacher gave up on this task (no usable text).

    >>> check_status({"status": "failed", "failure": "timeout"}, None)
    ('teacher:failed', 'timeout')
    """
    if record.get("status", "done") != "done":
        return "teacher:failed", str(record.get("failure") or record.get("status"))
    return None


REFUSAL_PATTERNS: tuple[str, ...] = (
    r"\bI(?:['’]m| am)\s+(?:so\s+|very\s+)?sorry\b",
    r"\bI\s+apologi[sz]e\b",
    r"\bI\s*(?:can ?not|can['’]t|won['’]t|am unable to|['’]m unable to|am not able to|"
    r"['’]m not able to)"
    r"\s+(?:help|assist|answer|comply|provide|process|view|see|analy[sz]e|identify|determine|"
    r"do that|fulfil+|complete|describe|interpret|access|open)",
    r"\bas an AI\b",
    r"\bunable to (?:view|see|access|process|open) (?:the |this |that )?(?:image|picture|photo)",
)
_REFUSAL_RE = re.compile("|".join(REFUSAL_PATTERNS), re.IGNORECASE)
_TAG_RE = re.compile(r"<\s*/?\s*[A-Za-z]+\s*>")


def is_refusal(text: str) -> bool:
    """True when the text contains a refusal idiom ("I'm sorry, I can't help with that").

    >>> is_refusal("I'm sorry, but I can't help with that."), is_refusal("There is no cat.")
    (True, False)
    """
    return bool(_REFUSAL_RE.search(text or ""))


def check_refusal(record: Mapping, task: Any) -> str | tuple[str, str] | None:
    """``refusal`` when the teacher declined: a refusal idiom in the CONCLUSION, in text outside
    the stages, anywhere in a text with no stages at all, or in the first 30 words of a text with
    no CONCLUSION. Refusal words inside the CAPTION or REASONING of a trace that concludes ("I
    cannot see any red circles, so the count is 0") are allowed.

    >>> check_refusal({"text": "I'm sorry, I can't help with that."}, None)[0]
    'refusal'
    """
    text = record.get("text") or ""
    parsed = parse_record(record)
    if not parsed.stages:
        where = text
    else:
        outside = re.sub(
            r"<\s*(" + "|".join(stages.STAGES) + r")\s*>.*?(<\s*/\s*\1\s*>|$)", " ", text,
            flags=re.IGNORECASE | re.DOTALL,
        )
        where = parsed.stages.get("CONCLUSION", "") + " " + outside
        if not parsed.stages.get("CONCLUSION"):  # a refusal wrapped in a tag comes first
            where += " " + " ".join(_TAG_RE.sub(" ", text).split()[:30])
    match = _REFUSAL_RE.search(where)
    if match:
        return "refusal", f"refusal idiom {match.group(0)!r}"
    return None


#: Priority when a trace has several format problems: the first kind found names the reason.
FORMAT_PRIORITY: tuple[str, ...] = (
    stages.MISSING, stages.UNCLOSED, stages.OUT_OF_ORDER, stages.DUPLICATED, stages.EMPTY,
    stages.STRAY_CLOSE, stages.UNKNOWN_TAG, stages.OUTSIDE_TEXT,
)


def check_format(record: Mapping, task: Any) -> str | tuple[str, str] | None:
    """``format:<problem>`` unless all four stages are present, in order, closed, non-empty,
    with nothing outside them (``cotlib.stages.parse``). The most serious problem names it.

    >>> check_format({"text": "<SUMMARY>s</SUMMARY>"}, None)
    ('format:missing', 'missing CAPTION: no <CAPTION> section; missing REASONING: ...')
    """
    parsed = parse_record(record)
    if parsed.ok:
        return None
    kinds = parsed.problem_kinds()
    kind = next(k for k in FORMAT_PRIORITY if k in kinds)
    problems = [str(p) for p in parsed.problems]
    detail = "; ".join(problems[:2]) + ("; ..." if len(problems) > 2 else "")
    return f"format:{kind}", detail


def check_answer(record: Mapping, task: Any) -> str | tuple[str, str] | None:
    """``answer:wrong`` when the CONCLUSION does not give the task's standard answer
    (``cotlib.normalize.answers_match``: the same rules evaluation uses). Skipped when there is
    no task or no standard answer (imported data), or no CONCLUSION (``check_format`` says so).
    """
    if task is None or getattr(task, "answer", None) in (None, ""):
        return None
    conclusion = parse_record(record).stages.get("CONCLUSION")
    if not conclusion:
        return None
    choices = getattr(task, "choices", None)
    letter = getattr(task, "answer_letter", None)
    if answers_match(conclusion, task.answer, choices, letter):
        return None
    expected = f"{letter} ({task.answer})" if letter else task.answer
    return "answer:wrong", f"concluded {excerpt(conclusion, 60)!r}, standard answer {expected!r}"


#: Default word-count bounds per stage: (min, max) inclusive.
DEFAULT_LENGTH_BOUNDS: dict[str, tuple[int, int]] = {
    "SUMMARY": (3, 120),
    "CAPTION": (3, 300),
    "REASONING": (3, 500),
    "CONCLUSION": (1, 40),
}


def length_check(bounds: Mapping[str, tuple[int, int]] | None = None) -> Check:
    """A check that rejects stages shorter or longer than ``bounds`` (in words).

    Stages that are missing are left to ``check_format``.

    >>> check = length_check({"CONCLUSION": (1, 3)})
    >>> check({"text": stages.render("s", "c", "r", "it is a long answer")}, None)[0]
    'length:CONCLUSION_too_long'
    """
    bounds = dict(DEFAULT_LENGTH_BOUNDS if bounds is None else bounds)
    for stage, (lo, hi) in bounds.items():
        if stage not in stages.STAGES or not 0 <= lo <= hi:
            raise ValueError(f"bad length bound {stage}: ({lo}, {hi}); stages are "
                             f"{stages.STAGES} and bounds (min, max) with 0 <= min <= max")

    def check_length(record: Mapping, task: Any) -> str | tuple[str, str] | None:
        found = parse_record(record).stages
        for stage, (lo, hi) in bounds.items():
            if stage not in found:
                continue
            n = word_count(found[stage])
            if n < lo:
                return f"length:{stage}_too_short", f"{stage} has {n} words (min {lo})"
            if n > hi:
                return f"length:{stage}_too_long", f"{stage} has {n} words (max {hi})"
        return None

    check_length.bounds = bounds  # type: ignore[attr-defined]
    return check_length


check_length = length_check()


def check_scene(record: Mapping, task: Any) -> str | tuple[str, str] | None:
    """``scene:*`` when the CAPTION contradicts the task's scene (synthetic tasks only; see
    :func:`scene_problem`). Skipped without a scene or without a CAPTION."""
    scene = getattr(task, "scene", None) if task is not None else None
    caption = parse_record(record).stages.get("CAPTION")
    if not scene or not caption:
        return None
    allowed = task.prompt_question() if hasattr(task, "prompt_question") else ""
    return scene_problem(caption, scene, allowed)


#: The checks ``filter_traces`` runs by default, in priority order.
DEFAULT_CHECKS: list[Check] = [
    check_status, check_refusal, check_format, check_answer, check_length, check_scene,
]


def default_checks(length_bounds: Mapping[str, tuple[int, int]] | None = None,
                   extra: Sequence[Check] = ()) -> list[Check]:
    """A fresh copy of the default checks with other length bounds (``None``: the defaults;
    ``{}``: no length check) and ``extra`` checks appended.

    E.g. for LLaVA-CoT-100k, whose ShareGPT4V CONCLUSIONs are long descriptions:
    ``default_checks({"CONCLUSION": (1, 400)})``.

    >>> [c.__name__ for c in default_checks({})]
    ['check_status', 'check_refusal', 'check_format', 'check_answer', 'check_scene']
    """
    checks = list(DEFAULT_CHECKS)
    i = checks.index(check_length)
    if length_bounds is None:
        pass
    elif length_bounds:
        checks[i] = length_check({**DEFAULT_LENGTH_BOUNDS, **length_bounds})
    else:
        del checks[i]
    return checks + list(extra)


# -----------------------------------------------------------------------------
# exercise checkers (notebook 03): an optional check and the checker for the learner's own

#: Words that make an answer hedge instead of commit.
HEDGE_WORDS = frozenset({"maybe", "perhaps", "probably", "possibly", "might", "likely",
                         "unsure", "unclear", "guess"})


def check_hedging(record: Mapping, task: Any) -> str | None:
    """``style:hedging`` when the CONCLUSION hedges ("maybe 3", "Probably blue."). Hedging words in
    the REASONING are fine; a missing CONCLUSION is ``check_format``'s business. Not a default
    check: add it with ``default_checks(extra=[check_hedging])``.

    >>> check_hedging({"text": stages.render("s", "c", "r", "Maybe 3.")}, None)
    'style:hedging'
    """
    conclusion = parse_record(record).stages.get("CONCLUSION", "")
    words = set(re.findall(r"[a-z]+", conclusion.lower()))
    return "style:hedging" if words & HEDGE_WORDS else None

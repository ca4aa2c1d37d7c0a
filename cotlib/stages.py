"""The four LLaVA-CoT stages: names, tags, a tolerant parser, a renderer and checks.

A LLaVA-CoT answer is plain text made of four tagged sections, in this order::

    <SUMMARY> plan </SUMMARY>

    <CAPTION> what the image shows </CAPTION>

    <REASONING> step-by-step logic </REASONING>

    <CONCLUSION> final answer </CONCLUSION>

The tags are ordinary text (not special tokens). This module is the one place where
stage names and tags are defined; everything else in ``cotlib`` imports them from here.

>>> p = parse(render("Plan.", "A red cube.", "It is red.", "Red"))
>>> p.ok, p.stages["CONCLUSION"]
(True, 'Red')
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

# -----------------------------------------------------------------------------
# stage names and tags

STAGES: tuple[str, ...] = ("SUMMARY", "CAPTION", "REASONING", "CONCLUSION")

STAGE_PURPOSE: dict[str, str] = {
    "SUMMARY": "A short plan of how the model will solve the question.",
    "CAPTION": "The facts in the image that are relevant to the question.",
    "REASONING": "The step-by-step logic that leads from those facts to the answer.",
    "CONCLUSION": "The final answer; the only part shown to users.",
}


def _check_stage(stage: str) -> str:
    """Return the canonical (upper-case) stage name, or raise ValueError."""
    name = stage.strip().upper() if isinstance(stage, str) else stage
    if name not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    return name


def open_tag(stage: str) -> str:
    """The opening tag of a stage (case-insensitive name).

    >>> open_tag("SUMMARY"), open_tag("caption")
    ('<SUMMARY>', '<CAPTION>')
    """
    return f"<{_check_stage(stage)}>"


def close_tag(stage: str) -> str:
    """The closing tag of a stage.

    >>> close_tag("SUMMARY")
    '</SUMMARY>'
    """
    return f"</{_check_stage(stage)}>"


def next_stage(stage: str) -> str | None:
    """The stage that follows ``stage``, or None after CONCLUSION.

    >>> next_stage("SUMMARY"), next_stage("CONCLUSION")
    ('CAPTION', None)
    """
    i = STAGES.index(_check_stage(stage))
    return STAGES[i + 1] if i + 1 < len(STAGES) else None


def stage_prefix(stage: str) -> str:
    """The text to append to a prompt so the model continues by writing ``stage``.

    Kept deliberately simple: it is just the opening tag (the renderer puts a space
    after it, but models cope fine either way).

    >>> stage_prefix("REASONING")
    '<REASONING>'
    """
    return open_tag(stage)


# -----------------------------------------------------------------------------
# problems

MISSING = "missing"  # a stage does not appear at all
EMPTY = "empty"  # a stage appears but its text is empty / whitespace
OUT_OF_ORDER = "out_of_order"  # a stage appears after a stage that should follow it
DUPLICATED = "duplicated"  # a stage appears more than once (the first one is kept)
UNCLOSED = "unclosed"  # an opening tag with no matching closing tag (e.g. cut off)
OUTSIDE_TEXT = "outside_text"  # non-whitespace text that is not inside any stage
UNKNOWN_TAG = "unknown_tag"  # a tag-shaped ``<FOO>`` / ``</FOO>`` that is not a stage tag
STRAY_CLOSE = "stray_close"  # a stage closing tag with no matching opening tag

PROBLEM_KINDS: tuple[str, ...] = (
    MISSING, EMPTY, OUT_OF_ORDER, DUPLICATED, UNCLOSED, OUTSIDE_TEXT, UNKNOWN_TAG, STRAY_CLOSE,
)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a staged answer.

    >>> str(Problem(MISSING, "CAPTION", "no <CAPTION> section"))
    'missing CAPTION: no <CAPTION> section'
    """

    kind: str  # one of PROBLEM_KINDS
    stage: str | None  # the stage concerned, if any
    detail: str  # short human-readable explanation

    def __str__(self) -> str:
        where = f" {self.stage}" if self.stage else ""
        return f"{self.kind}{where}: {self.detail}"


@dataclass
class Parsed:
    """The result of :func:`parse`: stage texts found plus every problem noticed.

    >>> p = parse("<SUMMARY>plan</SUMMARY>")
    >>> p.stages, p.ok, p.missing
    ({'SUMMARY': 'plan'}, False, ['CAPTION', 'REASONING', 'CONCLUSION'])
    >>> sorted(p.problem_kinds())
    ['missing']
    """

    stages: dict[str, str] = field(default_factory=dict)  # stage -> stripped text
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def missing(self) -> list[str]:
        return [s for s in STAGES if s not in self.stages]

    def problem_kinds(self) -> set[str]:
        return {p.kind for p in self.problems}


# -----------------------------------------------------------------------------
# parsing

# Anything shaped like <NAME> or </NAME>, with optional spaces/tabs around the name.
# Each quantifier is followed by something it cannot match, so failures stay cheap:
# the scan is linear in the length of the text.
_TAG_RE = re.compile(r"<[ \t]*(?:(/)[ \t]*)?([A-Za-z][A-Za-z0-9_]*)[ \t]*>")
_EXCERPT = 40


def _excerpt(s: str) -> str:
    s = " ".join(s.split())
    return repr(s if len(s) <= _EXCERPT else s[: _EXCERPT - 3] + "...")


def _as_text(text: object) -> str:
    """Coerce any input to str: None -> '', bytes -> utf-8 (with replacement)."""
    if text is None:
        return ""
    if isinstance(text, str):
        return text
    if isinstance(text, (bytes, bytearray, memoryview)):
        return bytes(text).decode("utf-8", errors="replace")
    try:
        return str(text)
    except Exception:
        return ""


def parse(text: str) -> Parsed:
    """Split a staged answer into its stages and list every problem found. Never raises.

    Tolerant of tag case (``<summary>``), of spaces or tabs inside tags (``< SUMMARY >``,
    ``</ SUMMARY>``) and of any whitespace between sections. Rules:

    - an opening tag with no closing tag (e.g. a generation that was cut off) still yields
      its text, up to the next stage opening tag or the end of the string: UNCLOSED;
    - a stage closing tag with nothing open to close: STRAY_CLOSE;
    - ``<FOO>`` / ``</FOO>`` where FOO is not a stage and there are no spaces inside the
      brackets: UNKNOWN_TAG (inside a stage it is kept verbatim in that stage's text);
      with spaces, e.g. ``a < b > c``, it is ordinary text;
    - non-whitespace text outside every stage: OUTSIDE_TEXT (unknown tags themselves
      are not counted as outside text);
    - a repeated stage: DUPLICATED (the first occurrence is kept);
    - a stage that comes before one it should follow: OUT_OF_ORDER;
    - empty / whitespace-only stage text: EMPTY; a stage not present: MISSING.

    ``None`` is treated as ``""``, bytes are decoded as UTF-8, other objects via ``str``.

    >>> p = parse("<summary>Plan.</summary> <CAPTION>A cat.</CAPTION>\\n<REASONING>Cut off")
    >>> p.stages
    {'SUMMARY': 'Plan.', 'CAPTION': 'A cat.', 'REASONING': 'Cut off'}
    >>> for problem in p.problems:
    ...     print(problem)
    unclosed REASONING: <REASONING> has no </REASONING>
    missing CONCLUSION: no <CONCLUSION> section
    """
    text = _as_text(text)
    problems: list[Problem] = []
    sections: list[tuple[str, str]] = []  # (stage, raw text) in order of appearance
    current: str | None = None  # stage currently open
    start = 0  # where the open stage's text (or the current outside run) starts
    outside: list[str] = []  # runs of text outside every stage

    for m in _TAG_RE.finditer(text):
        is_close, name = m.group(1) is not None, m.group(2).upper()
        if name not in STAGES:
            if " " in m.group(0) or "\t" in m.group(0):
                continue  # 'a < b > c' is just text
            problems.append(Problem(UNKNOWN_TAG, current, f"unknown tag {m.group(0)!r}"))
            if current is None:  # skip the tag itself when collecting outside text
                outside.append(text[start:m.start()])
                start = m.end()
            continue
        if not is_close:
            if current is None:
                outside.append(text[start:m.start()])
            else:  # a new stage opens while another is still open
                sections.append((current, text[start:m.start()]))
                problems.append(Problem(UNCLOSED, current, f"{open_tag(current)} has no "
                                        f"{close_tag(current)} before {m.group(0)!r}"))
            current, start = name, m.end()
        elif name == current:
            sections.append((current, text[start:m.start()]))
            current, start = None, m.end()
        else:
            opened = f"inside {current}" if current else "with no opening tag"
            problems.append(Problem(STRAY_CLOSE, name, f"{m.group(0)!r} {opened}"))
            if current is None:
                outside.append(text[start:m.start()])
                start = m.end()

    if current is not None:
        sections.append((current, text[start:]))
        problems.append(Problem(UNCLOSED, current, f"{open_tag(current)} has no "
                                f"{close_tag(current)}"))
    else:
        outside.append(text[start:])

    stray = " ".join(s.strip() for s in outside if s.strip())
    if stray:
        problems.append(Problem(OUTSIDE_TEXT, None, f"text outside the stages: {_excerpt(stray)}"))

    stages: dict[str, str] = {}
    latest = -1  # index in STAGES of the furthest stage seen so far
    for stage, raw in sections:
        if stage in stages:
            problems.append(Problem(DUPLICATED, stage, f"{open_tag(stage)} appears again; "
                                    "keeping the first"))
            continue
        stages[stage] = raw.strip()
        if not stages[stage]:
            problems.append(Problem(EMPTY, stage, f"{open_tag(stage)} section is empty"))
        i = STAGES.index(stage)
        if i < latest:
            problems.append(Problem(OUT_OF_ORDER, stage, f"{stage} appears after {STAGES[latest]}"))
        latest = max(latest, i)

    for stage in STAGES:
        if stage not in stages:
            problems.append(Problem(MISSING, stage, f"no {open_tag(stage)} section"))
    return Parsed(stages, problems)


def validate(text: str) -> list[Problem]:
    """All problems in a staged answer (empty list = well formed).

    >>> [p.kind for p in validate("<CONCLUSION>4</CONCLUSION>")]
    ['missing', 'missing', 'missing']
    """
    return parse(text).problems


def is_valid(text: str) -> bool:
    """True when the text has all four stages, in order, closed, non-empty, nothing else.

    >>> is_valid(render("a", "b", "c", "d")), is_valid("just an answer")
    (True, False)
    """
    return parse(text).ok


# -----------------------------------------------------------------------------
# rendering


def _has_stage_tag(s: str) -> bool:
    return any(m.group(2).upper() in STAGES for m in _TAG_RE.finditer(s))


#: What separates one stage from the next in rendered traces (training data and decoding agree).
SEP = "\n\n"


def render_stage(stage: str, body: str) -> str:
    """One stage as traces write it: ``<STAGE> body </STAGE>`` (``<STAGE></STAGE>`` if empty).

    >>> render_stage("SUMMARY", " a plan ")
    '<SUMMARY> a plan </SUMMARY>'
    """
    body = body.strip()
    if body:
        return f"{open_tag(stage)} {body} {close_tag(stage)}"
    return f"{open_tag(stage)}{close_tag(stage)}"


def render(summary: str, caption: str, reasoning: str, conclusion: str, sep: str = SEP) -> str:
    """Build a staged answer: ``<STAGE> text </STAGE>`` sections joined by ``sep``.

    Each text is stripped. Raises ValueError if a text contains a stage tag
    (it would break parsing). Empty texts are allowed, but parse flags them EMPTY.

    >>> print(render("Plan.", " A cat.", "Cats meow.\\n", "Meow", sep="\\n"))
    <SUMMARY> Plan. </SUMMARY>
    <CAPTION> A cat. </CAPTION>
    <REASONING> Cats meow. </REASONING>
    <CONCLUSION> Meow </CONCLUSION>
    """
    texts = dict(zip(STAGES, (summary, caption, reasoning, conclusion)))
    return render_dict(texts, sep=sep)


def render_dict(stages: Mapping[str, str], sep: str = SEP) -> str:
    """Like :func:`render` but from a ``{stage: text}`` mapping (e.g. ``Parsed.stages``).

    Raises ValueError naming any missing or unknown stage keys.

    >>> text = render("s", "c", "r", "4")
    >>> render_dict(parse(text).stages) == text
    True
    >>> render_dict({"SUMMARY": "s"})
    Traceback (most recent call last):
    ...
    ValueError: render_dict: missing stages ['CAPTION', 'REASONING', 'CONCLUSION']
    """
    missing = [s for s in STAGES if s not in stages]
    if missing:
        raise ValueError(f"render_dict: missing stages {missing}")
    unknown = [k for k in stages if k not in STAGES]
    if unknown:
        raise ValueError(f"render_dict: unknown stages {unknown}; expected {list(STAGES)}")
    parts = []
    for stage in STAGES:
        body = stages[stage]
        if not isinstance(body, str):
            raise ValueError(f"{stage} text must be a str, got {type(body).__name__}")
        body = body.strip()
        if _has_stage_tag(body):
            raise ValueError(f"{stage} text contains a stage tag, which would break parsing: "
                             f"{_excerpt(body)}")
        parts.append(render_stage(stage, body))
    return sep.join(parts)


def untag(stages: Mapping[str, str]) -> str:
    """The four stage texts without their tags, one paragraph each (a blank line between): the
    paper's "w/o structured tags" ablation trains on this. A blank line inside a stage becomes a
    line break, so that :func:`retag` finds the four paragraphs again.

    >>> untag(parse(render("s", "c", "r", "4")).stages)
    's\\n\\nc\\n\\nr\\n\\n4'
    """
    missing = [s for s in STAGES if not str(stages.get(s, "")).strip()]
    if missing:
        raise ValueError(f"untag: stages {missing} are missing or empty")
    return SEP.join(re.sub(r"\n\s*\n", "\n", stages[s].strip()) for s in STAGES)


def retag(text: str) -> str:
    """An untagged answer (:func:`untag`'s form) with its tags put back, so that it is graded like
    a tagged one: four non-empty paragraphs become the four stages; any other text is returned
    unchanged (graded whole, and not well formed).

    >>> final_answer(retag("s\\n\\nc\\n\\nr\\n\\n4")), retag("4")
    ('4', '4')
    """
    paragraphs = [p for p in re.split(r"\n\s*\n", str(text).strip()) if p.strip()]
    if len(paragraphs) != len(STAGES) or _has_stage_tag(text):
        return text
    return render(*paragraphs)


# -----------------------------------------------------------------------------
# the answer


# A stage tag cut off at the end of a generation: "</CONCL", "<", "</".
_PARTIAL_TAG_RE = re.compile(r"<[ \t]*/?[ \t]*([A-Za-z]*)$")


def _strip_tag_debris(s: str) -> str:
    """``s`` without stage tags, unknown tags (``<ANSWER>``) and a cut-off tag at its end."""
    s = _TAG_RE.sub(lambda m: "" if m.group(2).upper() in STAGES or not (
        " " in m.group(0) or "\t" in m.group(0)) else m.group(0), s)
    m = _PARTIAL_TAG_RE.search(s)
    if m and any(stage.startswith(m.group(1).upper()) for stage in STAGES):
        s = s[:m.start()]
    return s.strip()


def _after_last_stage(text: str) -> str:
    """The text after the last closed stage; ``""`` while a stage is still open at the end."""
    current, end = None, 0
    for m in _TAG_RE.finditer(text):
        name = m.group(2).upper()
        if name not in STAGES:
            continue
        if m.group(1) is None:
            current = name
        elif name == current:
            current, end = None, m.end()
    return "" if current is not None else text[end:]


def final_answer(text: str) -> str:
    """The answer to grade. Never raises, and never guesses from the REASONING:

    1. if a CONCLUSION opened (closed or not, e.g. a cut-off generation): its text, ``""`` when
       it is empty;
    2. if the text has no stage tags at all (a model answering directly): the whole text;
    3. otherwise the text after the last stage (``""`` while a stage is still open), with stray,
       unknown and cut-off tags removed.

    The result is stripped of surrounding whitespace; punctuation is kept (answer normalisation
    lives in :mod:`cotlib.normalize`). A model that wrote no CONCLUSION gets no answer, not one
    read from its reasoning: "Maybe 4." in an unfinished REASONING is not an answer.

    >>> final_answer(render("s", "c", "r", "B."))
    'B.'
    >>> final_answer("<SUMMARY>s</SUMMARY><CONCLUSION> 42 </CONCL")
    '42'
    >>> final_answer("  The answer is 7.  "), final_answer("7 </CONCLUSION>")
    ('The answer is 7.', '7')
    >>> final_answer("<SUMMARY>s</SUMMARY><REASONING>2+2=4\\nMaybe 4.\\n</REASONING>")
    ''
    >>> final_answer("<REASONING>2+2=4</REASONING> So 4."), final_answer(render("s", "c", "r", ""))
    ('So 4.', '')
    """
    try:
        text = _as_text(text)
        found = parse(text).stages
        if "CONCLUSION" in found:
            return _strip_tag_debris(found["CONCLUSION"])
        if not found:
            debris = _has_stage_tag(text) or _PARTIAL_TAG_RE.search(text.rstrip())
            return _strip_tag_debris(text) if debris else text.strip()
        return _strip_tag_debris(_after_last_stage(text))
    except Exception:  # belt and braces: this must never break an evaluation loop
        return ""

"""Filter teacher traces with named reasons: every rejection says why.

LLaVA-CoT kept a trace only if a regex found its CONCLUSION and a second teacher call judged the
conclusion "valid" against the standard answer. Here filtering is a list of small **checks**. A
check is a plain function ``check(record, task) -> str | None``: ``None`` means "pass", a string
is the *reason* for rejecting, named ``family:detail`` (``"format:missing"``, ``"answer:wrong"``,
``"refusal"``, ``"length:CAPTION_too_short"``, ``"scene:unknown_colour"`` …). A check may also
return ``(reason, explanation)`` to give the report a human sentence.

``filter_traces`` runs every check on every trace, then (optionally) an LLM judge on the traces
that passed, then a duplicate pass over the survivors, and returns one :class:`Verdict` per
trace. ``Verdict.reasons`` lists every failed check in check order; the first one is *the*
reason the report counts, so the order of ``checks`` is also their priority (a refusal is
reported as "refusal", not as the "format:missing" it also is).

>>> from cotlib import stages, synth
>>> task = synth.make_task(0, "count_color")
>>> good = {"task_id": task.id, "status": "done", "text": stages.render(
...     "I will count them.", synth.describe(task.scene), "I count them one by one.", task.answer)}
>>> bad = {**good, "text": good["text"].replace(f"> {task.answer} <", "> 9 <")}
>>> [v.reason for v in filter_traces([good, bad], [task])]
['kept', 'answer:wrong']

Records are the lines of ``traces.jsonl`` written by ``cotlib.teacher``: dicts with at least
``task_id``, ``status`` and ``text``. Tasks are ``synth.Task`` objects (or anything with ``id``,
``task_type``, ``question``, ``answer``, ``choices``, ``answer_letter``, ``scene`` and
``prompt_question()``, such as ``cotlib.data.ImportedTask``).
"""

from __future__ import annotations

import json
import re
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from cotlib import stages, synth
from cotlib.normalize import answers_match
from cotlib.teacher.store import UNREADABLE, read_records, trace_problem

#: A check: ``(record, task) -> None | reason | (reason, explanation)``.
Check = Callable[[dict, Any], Any]

KEPT = "kept"


class FilterError(ValueError):
    """Nothing to filter, or nothing survived: the message names the top reasons and the fix.

    ``verdicts`` holds the verdicts when there were any, so the report can still be built.
    """

    def __init__(self, message: str, verdicts: list[Verdict] | None = None):
        super().__init__(message)
        self.verdicts = verdicts or []


@dataclass
class Verdict:
    """The filter's decision on one trace.

    >>> Verdict(kept=False, reasons=["refusal", "format:missing"], details={}).reason
    'refusal'
    """

    kept: bool
    reasons: list[str]
    details: dict = field(default_factory=dict)
    task_id: str = ""
    task_type: str = ""

    @property
    def reason(self) -> str:
        """The reason that counts: the first failed check, or ``"kept"``."""
        return self.reasons[0] if self.reasons else KEPT

    @property
    def family(self) -> str:
        """The reason's family: ``"format"`` for ``"format:missing"``, ``"kept"`` when kept."""
        return self.reason.split(":", 1)[0]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, row: Mapping) -> Verdict:
        return cls(**{k: row[k] for k in ("kept", "reasons", "details", "task_id", "task_type")
                      if k in row})


# -----------------------------------------------------------------------------
# helpers


@lru_cache(maxsize=4096)
def _parse(text: str) -> stages.Parsed:
    return stages.parse(text)


def _parsed(record: Mapping) -> stages.Parsed:
    """The record's text parsed, once for all checks (cached by text; treat it as read-only)."""
    return _parse(record.get("text") or "")


def word_count(text: str) -> int:
    """Words in a text (whitespace separated).

    >>> word_count("A red  circle.")
    3
    """
    return len(text.split())


def _excerpt(text: str, limit: int = 160) -> str:
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
    parsed = _parsed(record)
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
    parsed = _parsed(record)
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
    conclusion = _parsed(record).stages.get("CONCLUSION")
    if not conclusion:
        return None
    choices = getattr(task, "choices", None)
    letter = getattr(task, "answer_letter", None)
    if answers_match(conclusion, task.answer, choices, letter):
        return None
    expected = f"{letter} ({task.answer})" if letter else task.answer
    return "answer:wrong", f"concluded {_excerpt(conclusion, 60)!r}, standard answer {expected!r}"


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
        found = _parsed(record).stages
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

# --- scene consistency (synthetic tasks) -------------------------------------

#: Colour words that can never be in a course scene (besides the palette).
FOREIGN_COLOURS = ("pink", "brown", "cyan", "teal", "navy", "maroon", "turquoise", "beige",
                   "magenta", "indigo", "silver", "black", "gray", "grey")
#: Other names for palette colours a teacher may use.
COLOUR_SYNONYMS = {"violet": "purple", "gold": "yellow", "golden": "yellow", "lime": "green"}
#: Shape words that can never be in a course scene.
FOREIGN_SHAPES = ("star", "hexagon", "pentagon", "octagon", "diamond", "heart", "cross",
                  "cylinder", "cone", "arrow", "rhombus", "trapezoid")
SHAPE_SYNONYMS = {"oval": "circle", "ellipse": "circle", "disc": "circle", "disk": "circle",
                  "sphere": "circle", "rectangle": "square", "cube": "square",
                  "pyramid": "triangle"}
_NUM = r"(\d+|" + "|".join(["one", "two", "three", "four", "five", "six", "seven", "eight",
                            "nine", "ten"]) + r")"
_NUM_WORDS = {w: i + 1 for i, w in enumerate(
    ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"])}


def _words_re(words: Iterable[str]) -> re.Pattern:
    alternatives = "|".join(sorted((re.escape(w) for w in words), key=len, reverse=True))
    return re.compile(rf"\b({alternatives})(?:e?s)?\b", re.IGNORECASE)


_COLOUR_RE = _words_re([*synth.COLORS, *COLOUR_SYNONYMS, *FOREIGN_COLOURS])
_SHAPE_RE = _words_re([*synth.SHAPES, *SHAPE_SYNONYMS, *FOREIGN_SHAPES])
_COUNT_RE = re.compile(
    rf"\b{_NUM}\s+(?:(small|large)\s+)?(?:({'|'.join(synth.COLORS)})\s+)?"
    rf"(objects|shapes|items|bars|{'|'.join(s + 's' for s in synth.SHAPES)})\b",
    re.IGNORECASE,
)
_VALUE_RE = re.compile(  # "<colour> bar ... height/value N", with no other bar in between
    rf"\b({'|'.join(synth.COLORS)})\s+bar\b(?:(?!\bbars?\b)[^.;:])*?"
    rf"\b(?:height|value|length)\s+(?:of\s+)?{_NUM}\b",
    re.IGNORECASE,
)


def _canonical_colour(word: str) -> str:
    w = word.lower()
    return COLOUR_SYNONYMS.get(w, w)


def _canonical_shape(word: str) -> str:
    w = word.lower()
    return SHAPE_SYNONYMS.get(w, w)


def scene_problem(caption: str, scene: Mapping, allowed_text: str = "") -> tuple[str, str] | None:
    """Does ``caption`` mention things the scene does not have? ``(reason, explanation)`` or None.

    - ``scene:unknown_colour`` / ``scene:unknown_shape``: a colour or shape that is not in the
      scene, unless ``allowed_text`` (the question and its options) mentions it too — a caption
      may rightly say "there are no purple objects" when asked about purple;
    - ``scene:count_mismatch``: "N [size] [colour] <objects|shapes|bars|circles…>" with N larger
      than the scene has (a smaller N may describe a part: "2 red circles in the top row");
    - ``scene:wrong_value``: "the <colour> bar … height/value N" with the wrong N (charts).

    >>> scene = {"kind": "bars", "bars": [{"color": "red", "value": 3},
    ...                                   {"color": "blue", "value": 5}]}
    >>> scene_problem("A red bar of height 3.", scene) is None
    True
    >>> scene_problem("A pink bar of height 3.", scene)
    ('scene:unknown_colour', "mentions 'pink', which the scene does not have")
    >>> scene_problem("The red bar has a value of 5.", scene)[0]
    'scene:wrong_value'
    >>> scene_problem("The red bar is shorter than the blue bar, which has a value of 5.", scene)
    """
    items = scene.get("objects") if scene.get("kind") == "shapes" else scene.get("bars")
    items = items or []
    allowed = allowed_text.lower()
    colours = {o["color"] for o in items} | {"white"}
    if scene.get("kind") == "bars":
        colours |= {"black", "gray", "grey"}  # axes and grid lines
    for m in _COLOUR_RE.finditer(caption):
        word = m.group(1).lower()
        if _canonical_colour(word) not in colours and not re.search(rf"\b{word}", allowed):
            return "scene:unknown_colour", f"mentions {word!r}, which the scene does not have"
    if scene.get("kind") == "shapes":
        shapes = {o["shape"] for o in items}
        for m in _SHAPE_RE.finditer(caption):
            word = m.group(1).lower()
            if _canonical_shape(word) not in shapes and not re.search(rf"\b{word}", allowed):
                return "scene:unknown_shape", f"mentions {word!r}, which the scene does not have"
    for m in _COUNT_RE.finditer(caption):
        n_text, size, colour, noun = (g.lower() if g else g for g in m.groups())
        n = int(n_text) if n_text.isdigit() else _NUM_WORDS[n_text]
        shape = noun[:-1] if noun[:-1] in synth.SHAPES else None
        if noun == "bars" and scene.get("kind") != "bars":
            continue
        matching = [o for o in items
                    if (size is None or o.get("size") == size)
                    and (colour is None or o["color"] == colour)
                    and (shape is None or o.get("shape") == shape)]
        if n > len(matching):
            return "scene:count_mismatch", (f"says {m.group(0)!r} but the scene has "
                                            f"{len(matching)}")
    if scene.get("kind") == "bars":
        values = {b["color"]: b["value"] for b in items}
        for m in _VALUE_RE.finditer(caption):
            colour, n_text = m.group(1).lower(), m.group(2).lower()
            n = int(n_text) if n_text.isdigit() else _NUM_WORDS[n_text]
            if colour in values and values[colour] != n:
                return "scene:wrong_value", (f"says the {colour} bar is {n}, the chart shows "
                                             f"{values[colour]}")
    return None


def check_scene(record: Mapping, task: Any) -> str | tuple[str, str] | None:
    """``scene:*`` when the CAPTION contradicts the task's scene (synthetic tasks only; see
    :func:`scene_problem`). Skipped without a scene or without a CAPTION."""
    scene = getattr(task, "scene", None) if task is not None else None
    caption = _parsed(record).stages.get("CAPTION")
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
# duplicates (needs the whole set, so it is a pass, not a per-trace check)


def _norm_text(text: str) -> str:
    return " ".join((text or "").lower().split())


def shingles(text: str, n: int = 3) -> set[tuple[str, ...]]:
    """Word n-grams of a text (lower case).

    >>> sorted(shingles("a b c d", 3))
    [('a', 'b', 'c'), ('b', 'c', 'd')]
    """
    words = _norm_text(text).split()
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set, b: set) -> float:
    """|a ∩ b| / |a ∪ b| (1.0 for two empty sets).

    >>> jaccard({1, 2}, {2, 3})
    0.3333333333333333
    """
    return len(a & b) / len(a | b) if a | b else 1.0


def _example_key(record: Mapping, task: Any) -> str:
    """What makes two traces the same training example: the image and the question."""
    if task is None:
        return str(record.get("task_id"))
    image = getattr(task, "scene", None) or getattr(task, "image_path", None) or task.id
    question = task.prompt_question() if hasattr(task, "prompt_question") else task.question
    return json.dumps([image, question], sort_keys=True, default=str)


def find_duplicates(
    records: Sequence[Mapping],
    tasks: Sequence[Any | None],
    near_threshold: float = 0.9,
) -> dict[int, tuple[str, str]]:
    """Indices of traces that repeat an earlier one, with ``(reason, explanation)``.

    The first trace of each kind is kept; later ones are duplicates:

    - ``duplicate:exact`` — the same text (ignoring case and spacing) as an earlier trace, for
      any task. Two different images cannot share a correct CAPTION, so identical texts mean a
      copy, a cache replay or a teacher ignoring its input.
    - ``duplicate:task`` — a second trace for a task id already kept (a resumed run that wrote
      the task twice). Training on both would weight that task twice.
    - ``duplicate:near`` — word-3-gram Jaccard similarity >= ``near_threshold`` with an earlier
      trace for the same image and question (e.g. two tasks that drew the same scene).

    Near-duplicates are *not* looked for across different images or questions: traces written
    from one template for different scenes share most of their words yet teach different
    facts, so a similarity threshold across tasks would reject good data.
    """
    out: dict[int, tuple[str, str]] = {}
    seen_text: dict[str, str] = {}
    seen_task: set[str] = set()
    by_key: dict[str, list[tuple[str, set]]] = defaultdict(list)
    for i, (record, task) in enumerate(zip(records, tasks)):
        task_id = str(record.get("task_id"))
        text = record.get("text") or ""
        norm = _norm_text(text)
        if norm in seen_text:
            out[i] = "duplicate:exact", f"same text as the trace for {seen_text[norm]}"
            continue
        if task_id in seen_task:
            out[i] = "duplicate:task", f"{task_id} already has a kept trace"
            continue
        key = _example_key(record, task)
        grams = shingles(text)
        similar = next(((other, s) for other, g in by_key[key]
                        if (s := jaccard(grams, g)) >= near_threshold), None)
        if similar is not None:
            out[i] = "duplicate:near", (f"{similar[1]:.0%} word-3-gram overlap with the trace for "
                                        f"{similar[0]} (same image and question)")
            continue
        seen_text[norm] = task_id
        seen_task.add(task_id)
        by_key[key].append((task_id, grams))
    return out


# -----------------------------------------------------------------------------
# the LLM judge (LLaVA-CoT's second teacher call)

#: System message of a judge request. The judge sees only the response and the standard answer.
JUDGE_INSTRUCTION = (
    "You check answers. You are given a response to a question about an image and the "
    "question's standard answer. Reply valid if the response is not a refusal and gives the "
    "same answer as the standard answer: the meaning must be the same; case, punctuation, "
    "units, number format (3 or three) and, for multiple choice, the option letter or the "
    "option's text may differ. Reply invalid if the response refuses, hedges between several "
    "answers, or gives a different answer. Reply with one word: valid or invalid."
)


def judge_request_text(response: str, standard_answer: str) -> str:
    """The user message of a judge request.

    >>> print(judge_request_text("B", "B"))
    Response: B
    Standard answer: B
    """
    return f"Response: {response.strip()}\nStandard answer: {str(standard_answer).strip()}"


def judge_messages(response: str, standard_answer: str) -> list[dict]:
    """The chat messages of a judge request: text only (no image), as in LLaVA-CoT."""
    return [{"role": "system", "content": JUDGE_INSTRUCTION},
            {"role": "user", "content": judge_request_text(response, standard_answer)}]


_JUDGE_RE = re.compile(r"^Response:[ \t]*(?P<response>.*)\nStandard answer:[ \t]*(?P<answer>.*)$",
                       re.DOTALL)


def parse_judge_request(text: str) -> tuple[str, str] | None:
    """``(response, standard answer)`` from a judge request's user text, else None.

    >>> parse_judge_request(judge_request_text("three", "3"))
    ('three', '3')
    """
    m = _JUDGE_RE.match((text or "").strip())
    return (m["response"].strip(), m["answer"].strip()) if m else None


def local_judge_reply(text: str) -> str:
    """What a rule-based judge answers to a judge request: "valid" or "invalid" (refusals and
    answers that do not match by :func:`cotlib.normalize.answers_match` are invalid). The local
    teacher can serve this for requests whose system message is :data:`JUDGE_INSTRUCTION`.

    >>> local_judge_reply(judge_request_text("Three.", "3"))
    'valid'
    >>> local_judge_reply(judge_request_text("I'm sorry, I can't help with that.", "3"))
    'invalid'
    """
    parsed = parse_judge_request(text)
    if parsed is None:
        return "invalid"
    response, answer = parsed
    if is_refusal(response) or not answers_match(response, answer):
        return "invalid"
    return "valid"


def parse_judge_reply(reply: str | None) -> str | None:
    """"valid", "invalid" or None (unclear) from a judge's reply (the word anywhere in it; a
    reply that says both counts as "invalid").

    >>> parse_judge_reply("Valid."), parse_judge_reply("**invalid**"), parse_judge_reply("hmm")
    ('valid', 'invalid', None)
    """
    words = re.findall(r"[a-z]+", (reply or "").lower())
    if not words:
        return None
    pairs = set(zip(words, words[1:]))
    if "invalid" in words or ("not", "valid") in pairs:  # "invalid" wins any doubt
        return "invalid"
    if "valid" in words:
        return "valid"
    return None


def judge_with_teacher(config: Any, *, concurrency: int | None = None) -> Check:
    """A judge check that asks the teacher (``cotlib.teacher.TeacherConfig``: OpenAI, vLLM or
    the local teacher) whether the CONCLUSION is valid against the standard answer.

    Reasons: ``judge:invalid`` (the judge said so), ``judge:unclear`` (neither word in the
    reply), ``judge:error`` (the call failed after ``config.max_retries`` retries, under the
    teacher run's own retry policy: :func:`cotlib.teacher.replies.complete_with_retries`).
    Tasks with no standard answer are not judged. ``filter_traces`` calls it only on traces
    that passed every other check, ``concurrency`` (default: the config's) at a time.
    """
    import openai

    from cotlib import teacher

    key = teacher.key_for(config)  # OpenAI's key goes to OpenAI only (resolve_api_key)
    # the SDK's retries off: the teacher's policy retries (also a malformed 200)
    client = teacher.openai_client(config, key=key, max_retries=0, timeout=config.timeout_s)

    def judge(record: Mapping, task: Any) -> tuple[str, str] | None:
        if task is None or getattr(task, "answer", None) in (None, ""):
            return None
        conclusion = _parsed(record).stages.get("CONCLUSION") or stages.final_answer(
            record.get("text") or "")
        letter = getattr(task, "answer_letter", None)
        standard = letter if getattr(task, "choices", None) and letter else task.answer
        messages = judge_messages(conclusion, standard)
        try:
            reply = teacher.complete_with_retries(lambda: client.chat.completions.create(
                model=config.model, messages=messages, max_tokens=8, temperature=0), config).text
        except openai.OpenAIError as err:
            return "judge:error", teacher.redact(f"{type(err).__name__}: {err}", key)[:300]
        except teacher.BadResponse as err:
            return "judge:error", teacher.redact(f"bad_response:{err.kind}: {err}", key)[:300]
        verdict = parse_judge_reply(reply)
        if verdict == "valid":
            return None
        if verdict == "invalid":
            return "judge:invalid", f"judge replied {_excerpt(reply or '', 60)!r}"
        return "judge:unclear", f"judge replied {_excerpt(reply or '', 60)!r}"

    judge.concurrency = concurrency or getattr(config, "concurrency", 1)  # type: ignore[attr-defined]
    judge.close = client.close  # type: ignore[attr-defined]
    return judge


# -----------------------------------------------------------------------------
# running the filter


def record_problem(record: Any) -> tuple[str, str] | None:
    """``(reason, explanation)`` for a record no check can read, else None:
    ``record:not_json`` (a line :func:`read_traces` could not parse), ``record:not_an_object``
    (``null``, a list, a string...), ``text:not_a_string`` (e.g. a number stored as the trace):
    :func:`cotlib.teacher.store.trace_problem`, the trace type's own rule.

    >>> record_problem(None)[0], record_problem({"text": 5})[0], record_problem({"text": "x"})
    ('record:not_an_object', 'text:not_a_string', None)
    """
    if isinstance(record, Mapping) and UNREADABLE in record:
        return "record:not_json", str(record[UNREADABLE])
    return trace_problem(record)


def _text(record: Any) -> str:
    """A record's text, or "" when it has none a check can read."""
    text = record.get("text") if isinstance(record, Mapping) else None
    return text if isinstance(text, str) else ""


def tasks_by_id(tasks: Iterable[Any] | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``{task.id: task}`` from a list (or pass a mapping through); None stays None."""
    if tasks is None:
        return None
    if isinstance(tasks, Mapping):
        return dict(tasks)
    return {t.id: t for t in tasks}


def _run_check(check: Check, record: dict, task: Any) -> tuple[str, str] | None:
    name = getattr(check, "__name__", type(check).__name__)
    try:
        result = check(record, task)
    except Exception as err:  # a learner's check with a bug must not stop the filter
        last = traceback.extract_tb(err.__traceback__)[-1]
        return f"check_error:{name}", f"{type(err).__name__}: {err} (line {last.lineno})"
    if result is None or result is False or result == "":
        return None
    if isinstance(result, tuple):
        reason, explanation = str(result[0]), str(result[1]) if len(result) > 1 else ""
    else:
        reason, explanation = str(result), ""
    return reason, explanation


def filter_traces(
    records: Sequence[dict],
    tasks: Iterable[Any] | Mapping[str, Any] | None,
    checks: Sequence[Check] | None = None,
    judge: Check | None = None,
    *,
    dedupe: bool = True,
    near_threshold: float = 0.9,
    out: str | Path | None = None,
    allow_empty: bool = False,
) -> list[Verdict]:
    """One :class:`Verdict` per record, in order.

    Steps: (1) every check on every record (a record whose task is unknown is rejected as
    ``task:unknown`` when ``tasks`` is given); (2) ``judge`` — a check too, e.g.
    :func:`judge_with_teacher` — only on records that passed every check, to save calls;
    (3) :func:`find_duplicates` over the survivors. ``out`` (a folder or a ``.jsonl`` path)
    also writes the verdicts to ``verdicts.jsonl``.

    Raises :class:`FilterError` when ``records`` is empty, or when nothing is kept (unless
    ``allow_empty``); the error names the top reasons and carries the verdicts.
    """
    records = list(records)
    if not records:
        raise FilterError(
            "No traces to filter. Generate them first (notebook 02, or `cotlib generate`), and "
            "check that you read the right file: runs/<run>/traces.jsonl."
        )
    checks = DEFAULT_CHECKS if checks is None else list(checks)
    index = tasks_by_id(tasks)
    verdicts: list[Verdict] = []
    matched_tasks: list[Any] = []
    for record in records:
        unreadable = record_problem(record)
        if unreadable is not None:
            matched_tasks.append(None)
            task_id = str(record.get("task_id") or "") if isinstance(record, Mapping) else ""
            verdicts.append(Verdict(False, [unreadable[0]], {unreadable[0]: unreadable[1]},
                                    task_id, "unknown"))
            continue
        task_id = str(record.get("task_id", ""))
        task = index.get(task_id) if index is not None else None
        matched_tasks.append(task)
        reasons: list[str] = []
        details: dict[str, str] = {}
        if index is not None and task is None:
            reasons.append("task:unknown")
            details["task:unknown"] = f"no task with id {task_id!r} among the tasks given"
        else:
            for check in checks:
                found = _run_check(check, record, task)
                if found and found[0] not in reasons:
                    reasons.append(found[0])
                    details[found[0]] = found[1]
        task_type = getattr(task, "task_type", None) or str(record.get("task_type", "unknown"))
        verdicts.append(Verdict(not reasons, reasons, details, task_id, task_type))

    if judge is not None:
        todo = [i for i, v in enumerate(verdicts) if v.kept]
        workers = max(1, int(getattr(judge, "concurrency", 1) or 1))
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(lambda i: _run_check(judge, records[i], matched_tasks[i]),
                                    todo))
        for i, found in zip(todo, results):
            if found:
                verdicts[i].kept = False
                verdicts[i].reasons.append(found[0])
                verdicts[i].details[found[0]] = found[1]
    if dedupe:
        alive = [i for i, v in enumerate(verdicts) if v.kept]
        dups = find_duplicates([records[i] for i in alive], [matched_tasks[i] for i in alive],
                               near_threshold)
        for j, (reason, explanation) in dups.items():
            v = verdicts[alive[j]]
            v.kept, v.reasons, v.details = False, [reason], {reason: explanation}

    if out is not None:
        write_verdicts(verdicts, out)
    if not allow_empty and not any(v.kept for v in verdicts):
        raise FilterError(
            f"All {len(verdicts)} traces were rejected. Top reasons: {top_reasons(verdicts)}. "
            "Look at a few rejected traces (filtering.report(...).examples) before loosening a "
            "check; if the teacher failed, fix its connection or prompt and generate again.",
            verdicts,
        )
    return verdicts


def top_reasons(verdicts: Sequence[Verdict], n: int = 3) -> str:
    """'format:missing (12), refusal (3)' — the commonest rejection reasons.

    >>> top_reasons([Verdict(False, ["refusal"]), Verdict(True, [])])
    'refusal (1)'
    """
    counts = Counter(v.reason for v in verdicts if not v.kept)
    return ", ".join(f"{r} ({c})" for r, c in counts.most_common(n)) or "none"


def kept_records(records: Sequence[dict], verdicts: Sequence[Verdict]) -> list[dict]:
    """The records whose verdict is kept (same order)."""
    if len(records) != len(verdicts):
        raise ValueError(f"{len(records)} records but {len(verdicts)} verdicts: filter the same "
                         "list you pass here")
    return [r for r, v in zip(records, verdicts) if v.kept]


# -----------------------------------------------------------------------------
# files


def _jsonl_path(path: str | Path, name: str) -> Path:
    path = Path(path)
    return path if path.suffix == ".jsonl" else path / name


def write_verdicts(verdicts: Sequence[Verdict], path: str | Path) -> Path:
    """Write verdicts as JSON lines (``path`` may be a run folder → ``verdicts.jsonl``)."""
    path = _jsonl_path(path, "verdicts.jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for v in verdicts:
            f.write(json.dumps(v.to_json()) + "\n")
    return path


def read_verdicts(path: str | Path) -> list[Verdict]:
    """Read ``verdicts.jsonl`` (a file or the run folder holding it)."""
    path = _jsonl_path(path, "verdicts.jsonl")
    with open(path) as f:
        return [Verdict.from_json(json.loads(line)) for line in f if line.strip()]


def read_traces(path: str | Path) -> list[dict]:
    """Read ``traces.jsonl`` (a file or the run folder holding it). Every line is returned, in
    order — also repeats of a task, so the duplicate pass can see and name them; a line that is
    not JSON comes back as a record the filter names ``record:not_json``
    (:func:`cotlib.teacher.store.read_records`, the one reader of results files)."""
    path = _jsonl_path(path, "traces.jsonl")
    if not path.exists():
        raise FileNotFoundError(f"No traces at {path}. Run notebook 02 (or `cotlib generate`) "
                                "to write them, or pass the right run folder.")
    return read_records(path)


# -----------------------------------------------------------------------------
# the report


def markdown_table(df) -> str:
    """A pandas DataFrame as a GitHub markdown table (no extra dependency).

    >>> import pandas as pd
    >>> print(markdown_table(pd.DataFrame({"n": [1]}, index=["kept"])))
    |  | n |
    |---|---|
    | kept | 1 |
    """
    head = "| " + (df.index.name or "") + " | " + " | ".join(map(str, df.columns)) + " |"
    rule = "|---" * (len(df.columns) + 1) + "|"
    rows = ["| " + str(i) + " | " + " | ".join(map(str, r)) + " |"
            for i, r in zip(df.index, df.itertuples(index=False))]
    return "\n".join([head.replace("|  |", "|  |"), rule, *rows])


@dataclass
class FilterReport:
    """What the filter did: counts per reason and task type, stage lengths, examples.

    ``reasons``: rows = reasons (``kept`` first), columns = task types and ``total``; each trace
    is counted once, under its first reason. ``lengths``: one row per trace with the word count
    of every stage (NaN when the stage is missing). ``examples``: a few traces per reason.
    """

    reasons: Any  # pandas.DataFrame
    lengths: Any  # pandas.DataFrame
    examples: dict[str, list[dict]]
    n_traces: int
    n_kept: int

    def summary(self) -> str:
        rate = self.n_kept / self.n_traces if self.n_traces else 0.0
        rejected = self.reasons.drop(index=KEPT, errors="ignore")["total"]
        top = ", ".join(f"{r} ({c})" for r, c in rejected.head(3).items() if c) or "none"
        return (f"kept {self.n_kept} of {self.n_traces} traces ({rate:.0%}); "
                f"top rejection reasons: {top}")

    def examples_table(self, width: int = 100):
        """One row per example: reason, task id, the check's explanation, a text excerpt."""
        import pandas as pd

        rows = [{"reason": reason, "task_id": e["task_id"], "why": _excerpt(e["detail"], 70),
                 "text": _excerpt(e["text"], width)}
                for reason, items in self.examples.items() for e in items]
        return pd.DataFrame(rows, columns=["reason", "task_id", "why", "text"])

    def plot_reasons(self):
        """Horizontal bars: how many traces each reason rejected, split by task type."""
        import matplotlib.pyplot as plt

        data = self.reasons.drop(index=KEPT, errors="ignore").drop(columns="total")
        fig, ax = plt.subplots(figsize=(8, 0.45 * max(len(data), 2) + 1.2))
        if len(data):
            data.iloc[::-1].plot.barh(stacked=True, ax=ax, width=0.7, colormap="tab20")
            ax.legend(fontsize=7, ncol=2, loc="lower right", title="task type")
        else:
            ax.text(0.5, 0.5, "nothing rejected", ha="center", va="center")
        ax.set_xlabel("rejected traces")
        ax.set_title(self.summary(), fontsize=9)
        fig.tight_layout()
        return fig

    def plot_lengths(self):
        """Histogram of the words per stage, kept traces vs rejected ones."""
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(stages.STAGES), figsize=(13, 3))
        for ax, stage in zip(axes, stages.STAGES):
            col = self.lengths[stage]
            for kept, colour, label in ((True, "tab:green", "kept"),
                                        (False, "tab:red", "rejected")):
                values = col[self.lengths["kept"] == kept].dropna()
                if len(values):
                    ax.hist(values, bins=20, alpha=0.6, color=colour, label=label)
            ax.set_title(stage, fontsize=9)
            ax.set_xlabel("words")
        axes[0].set_ylabel("traces")
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        return fig

    def to_markdown(self) -> str:
        lines = ["# Filter report", "", self.summary(), "", "## Traces per reason and task type",
                 "", markdown_table(self.reasons), "", "## Words per stage (kept traces)", ""]
        kept = self.lengths[self.lengths["kept"]]
        if len(kept):
            desc = kept[list(stages.STAGES)].describe().loc[["min", "50%", "max"]].round(0)
            lines.append(markdown_table(desc.rename(index={"50%": "median"})))
        else:
            lines.append("(no kept traces)")
        lines += ["", "## Examples of each rejection", ""]
        table = self.examples_table()
        lines.append(markdown_table(table.set_index("reason")) if len(table) else "(none)")
        return "\n".join(lines) + "\n"

    def save(self, folder: str | Path) -> list[Path]:
        """Write filter_report.md, filter_reasons.csv and two figures into ``folder``."""
        import matplotlib.pyplot as plt

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / "filter_report.md", folder / "filter_reasons.csv",
                 folder / "filter_reasons.png", folder / "filter_lengths.png"]
        paths[0].write_text(self.to_markdown())
        self.reasons.to_csv(paths[1])
        for fig, path in ((self.plot_reasons(), paths[2]), (self.plot_lengths(), paths[3])):
            fig.savefig(path, dpi=100)
            plt.close(fig)
        return paths


def report(
    verdicts: Sequence[Verdict], records: Sequence[Mapping], n_examples: int = 3
) -> FilterReport:
    """Summarise a filter run: counts per reason per task type, stage lengths, examples."""
    import pandas as pd

    if len(records) != len(verdicts):
        raise ValueError(f"{len(records)} records but {len(verdicts)} verdicts")
    counts = Counter((v.reason, v.task_type or "unknown") for v in verdicts)
    types = sorted({t for _, t in counts})
    reason_names = [KEPT] + sorted({r for r, _ in counts if r != KEPT},
                                   key=lambda r: (-sum(c for (r2, _), c in counts.items()
                                                       if r2 == r), r))
    table = pd.DataFrame(
        [[counts.get((r, t), 0) for t in types] for r in reason_names],
        index=pd.Index(reason_names, name="reason"), columns=types,
    )
    table["total"] = table.sum(axis=1)

    rows = []
    examples: dict[str, list[dict]] = defaultdict(list)
    for v, record in zip(verdicts, records):
        found = stages.parse(_text(record)).stages
        rows.append({"task_id": v.task_id, "task_type": v.task_type, "kept": v.kept,
                     "reason": v.reason,
                     **{s: (word_count(found[s]) if s in found else float("nan"))
                        for s in stages.STAGES}})
        if not v.kept and len(examples[v.reason]) < n_examples:
            examples[v.reason].append({"task_id": v.task_id, "detail": v.details.get(v.reason, ""),
                                       "text": _text(record)})
    lengths = pd.DataFrame(rows, columns=["task_id", "task_type", "kept", "reason",
                                          *stages.STAGES])
    ordered = {r: examples[r] for r in reason_names if r in examples}
    return FilterReport(table, lengths, ordered, len(verdicts), sum(v.kept for v in verdicts))


# -----------------------------------------------------------------------------
# agreement with a known truth (the local teacher's fault-injection log)

#: Fault kinds the local teacher injects, and the reason family that should reject each.
EXPECTED_FAMILY: dict[str, str] = {
    "clean": KEPT,
    "malformed": "format",
    "wrong_answer": "answer",
    "refusal": "refusal",
}


def injected_kinds(records: Sequence[Mapping], injections: Iterable[Mapping]) -> list[str]:
    """Per record, the content fault the local teacher injected into its response ("malformed",
    "wrong_answer", "refusal") or "clean", joined on ``request_key`` (records and log entries
    both carry it). Transport faults (429, 500) and notes are ignored: the client retried them.
    If a key has several content faults (the same image and question asked twice), the last
    one counts.

    >>> injected_kinds([{"request_key": "k1"}, {"request_key": "k2"}],
    ...                [{"request_key": "k2", "fault": "refusal"}])
    ['clean', 'refusal']
    """
    content = {e.get("request_key"): e["fault"] for e in injections
               if e.get("fault") in EXPECTED_FAMILY and e.get("fault") != "clean"}
    return [content.get(r.get("request_key") if isinstance(r, Mapping) else None, "clean")
            for r in records]


def confusion_table(verdicts: Sequence[Verdict], injected: Sequence[str]):
    """Rows: what was injected into each trace; columns: the verdict's reason family; counts.

    >>> v = [Verdict(True, []), Verdict(False, ["refusal"]), Verdict(False, ["format:missing"])]
    >>> int(confusion_table(v, ["clean", "refusal", "malformed"]).loc["refusal", "refusal"])
    1
    """
    import pandas as pd

    if len(verdicts) != len(injected):
        raise ValueError(f"{len(verdicts)} verdicts but {len(injected)} injection labels")
    counts = Counter((kind, v.family) for v, kind in zip(verdicts, injected))
    kinds = [k for k in EXPECTED_FAMILY if any(k == i for i, _ in counts)]
    kinds += sorted({i for i, _ in counts} - set(kinds))
    families = [KEPT] + [f for f in ("format", "answer", "refusal") if f != KEPT]
    families += sorted({f for _, f in counts} - set(families))
    table = pd.DataFrame([[counts.get((k, f), 0) for f in families] for k in kinds],
                         index=pd.Index(kinds, name="injected"), columns=families)
    table["total"] = table.sum(axis=1)
    return table


def agreement(verdicts: Sequence[Verdict], injected: Sequence[str]) -> dict[str, float]:
    """Per injected kind, the fraction of traces whose verdict is the expected one
    (``EXPECTED_FAMILY``: clean → kept, malformed → format, …).

    >>> agreement([Verdict(True, []), Verdict(False, ["answer:wrong"])], ["clean", "wrong_answer"])
    {'clean': 1.0, 'wrong_answer': 1.0}
    """
    hits: Counter = Counter()
    totals: Counter = Counter()
    for v, kind in zip(verdicts, injected):
        totals[kind] += 1
        hits[kind] += v.family == EXPECTED_FAMILY.get(kind, "?")
    return {k: hits[k] / totals[k] for k in totals}


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
    conclusion = stages.parse(record.get("text") or "").stages.get("CONCLUSION", "")
    words = set(re.findall(r"[a-z]+", conclusion.lower()))
    return "style:hedging" if words & HEDGE_WORDS else None


def hedging_cases() -> list:
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

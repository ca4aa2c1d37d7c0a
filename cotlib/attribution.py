"""Where did a wrong four-stage answer go wrong? Perception, reasoning, or copying the answer.

The course's scenes are known, so every CoT answer can be checked stage by stage, with no judge:

1. **CAPTION against the scene**: the caption is read back into a scene (:func:`parse_caption`,
   the inverse of :func:`cotlib.synth.describe`) and compared item by item — objects found,
   missed, invented;
2. **REASONING on the model's own caption**: the question is solved again on the scene the
   caption describes; the reasoning is right if its result (the last "the answer is …") agrees;
3. **CONCLUSION against the REASONING's result**: the answer copied, or not.

A wrong answer is put in the first stage that failed (:func:`attribute`): ``"format"`` (no
CAPTION or CONCLUSION to read), ``"perception"`` (the caption's scene gives another answer than
the real one), ``"reasoning"`` (the reasoning did not reach what its own caption implies) or
``"copy"`` (the CONCLUSION differs from the reasoning's result).

>>> from cotlib import stages, synth
>>> task = synth.make_task(2, "count_color")
>>> text = stages.render("Count.", synth.describe(task.scene), "So the answer is 9.", "9")
>>> attribute(task, text).stage
'reasoning'
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from cotlib import normalize, stages, synth

_POSITIONS = {synth.position_name(r, c): (r, c) for r in range(3) for c in range(3)}
_WORD = "|".join
_SHAPE_ITEM = re.compile(
    rf"\b(?:an?\s+)?({_WORD(synth.SIZES)})\s+({_WORD(synth.COLORS)})\s+({_WORD(synth.SHAPES)})"
    rf"\s+(?:in the|at)\s+({_WORD(sorted(_POSITIONS, key=len, reverse=True))})\b")
_BAR_ITEM = re.compile(rf"\b(?:an?\s+)?({_WORD(synth.COLORS)})\s+bar\s+of\s+height\s+(\d+)\b")
_CELL_ITEM = re.compile(
    rf"\b({_WORD(sorted(_POSITIONS, key=len, reverse=True))})\s*:\s*(?:(empty)|"
    rf"({_WORD(synth.SIZES)})\s+({_WORD(synth.COLORS)})\s+({_WORD(synth.SHAPES)}))")
_LISTED_BAR = re.compile(rf"\b({_WORD(synth.COLORS)})\s+(\d+)\b")
_ANSWER_IS = re.compile(r"answer\s+is\s*:?\s*(.+?)\s*(?:\.\s*$|\.\s+|$)", re.I | re.S)

#: The stages a wrong answer can be put in, in the order they are checked.
FAILURE_STAGES = ("format", "perception", "reasoning", "copy")


def parse_caption(text: str) -> dict | None:
    """The scene a caption describes (the inverse of :func:`cotlib.synth.describe` and of
    :func:`cotlib.synth.listing`, tolerant of a lead-in and of items in any order); ``None`` if
    no item can be read.

    >>> parse_caption("The image shows: A 3x3 grid with 1 object: a small red circle in the "
    ...               "centre.")["objects"]
    [{'size': 'small', 'color': 'red', 'shape': 'circle', 'row': 1, 'col': 1}]
    >>> parse_caption("a blue bar of height 4; a red bar of height 2")["bars"][1]
    {'color': 'red', 'value': 2}
    >>> parse_caption("nothing here") is None
    True
    """
    if re.search(r"\bbars from left to right\s*:", text):  # synth.listing's format
        listed = text.split(":", 1)[1]
        return {"kind": "bars", "bars": [{"color": c, "value": int(v)}
                                         for c, v in _LISTED_BAR.findall(listed)]}
    cells = _CELL_ITEM.findall(text)
    if cells:
        return {"kind": "shapes", "objects": sorted(
            ({"size": s, "color": c, "shape": h, "row": _POSITIONS[p][0], "col": _POSITIONS[p][1]}
             for p, empty, s, c, h in cells if not empty), key=lambda o: (o["row"], o["col"]))}
    bars = [{"color": c, "value": int(v)} for c, v in _BAR_ITEM.findall(text)]
    objects = [{"size": s, "color": c, "shape": h, "row": _POSITIONS[p][0],
                "col": _POSITIONS[p][1]} for s, c, h, p in _SHAPE_ITEM.findall(text)]
    if bars and len(bars) >= len(objects):
        return {"kind": "bars", "bars": bars}
    if objects:
        return {"kind": "shapes", "objects": sorted(objects, key=lambda o: (o["row"], o["col"]))}
    if re.search(r"\bgrid with (?:0|no) objects\b", text):
        return {"kind": "shapes", "objects": []}
    return None


def _items(scene: dict | None) -> Counter:
    if not scene:
        return Counter()
    if scene["kind"] == "bars":
        return Counter((i, b["color"], b["value"]) for i, b in enumerate(scene["bars"]))
    return Counter((o["row"], o["col"], o["size"], o["color"], o["shape"])
                   for o in scene["objects"])


@dataclass
class CaptionScore:
    """A caption's items against the scene: right, missed (in the scene, not the caption) and
    invented (in the caption, not the scene). A bar is right at its place from the left."""

    right: int
    missed: int
    invented: int

    @property
    def exact(self) -> bool:
        return self.missed == 0 and self.invented == 0


def score_caption(caption: str, scene: dict) -> CaptionScore:
    """Compare a caption with the true scene, item by item.

    >>> scene = {"kind": "bars", "bars": [{"color": "red", "value": 3},
    ...                                   {"color": "blue", "value": 5}]}
    >>> score_caption("a red bar of height 3; a blue bar of height 4", scene)
    CaptionScore(right=1, missed=1, invented=1)
    """
    got, want = _items(parse_caption(caption)), _items(scene)
    right = sum((got & want).values())
    return CaptionScore(right, sum(want.values()) - right, sum(got.values()) - right)


def reasoning_result(reasoning: str) -> str:
    """The result a REASONING reaches: its last "the answer is …", else its last sentence.

    >>> reasoning_result("Red: 2. Blue: 1. In total 2 + 1 = 3. So the answer is 3.")
    '3'
    """
    found = _ANSWER_IS.findall(reasoning)
    if found:
        return found[-1].strip()
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", reasoning.strip()) if s]
    return sentences[-1].rstrip(".") if sentences else ""


@dataclass
class Attribution:
    """One answer checked stage by stage (see the module docstring)."""

    task_id: str
    correct: bool
    stage: str | None  # None when correct, else one of FAILURE_STAGES
    caption: CaptionScore | None = None
    caption_answer: str | None = None  # the answer the caption's scene gives (None: unsolvable)
    reasoning_answer: str | None = None
    details: dict = field(default_factory=dict)


def _solve_on(task, scene: dict | None) -> str | None:
    if scene is None:
        return None
    try:
        return synth.solve(task.prompt_question(), scene)[0]
    except (ValueError, KeyError):
        return None


def _same(task, a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    return normalize.answers_match(a, b, choices=task.choices or None,
                                   answer_letter=None)


def attribute(task, output: str) -> Attribution:
    """Check one four-stage ``output`` for a synthetic ``task`` (it needs ``task.scene``).

    >>> from cotlib import synth
    >>> t = synth.make_task(5, "count_shape")
    >>> steps = synth.solve(t.prompt_question(), t.scene)[1]
    >>> good = stages.render("Plan.", synth.describe(t.scene),
    ...                      " ".join(steps) + f" So the answer is {t.answer}.", t.answer)
    >>> a = attribute(t, good)
    >>> a.correct, a.stage, a.caption.exact
    (True, None, True)
    """
    from cotlib import evaluate

    correct = evaluate.is_correct(task, output)
    parsed = stages.parse(output)
    caption, reasoning = parsed.stages.get("CAPTION"), parsed.stages.get("REASONING")
    conclusion = stages.final_answer(output)
    out = Attribution(task.id, correct, None)
    if caption is not None and task.scene is not None:
        out.caption = score_caption(caption, task.scene)
        out.caption_answer = _solve_on(task, parse_caption(caption))
    if reasoning is not None:
        out.reasoning_answer = reasoning_result(reasoning)
    if correct:
        return out
    if caption is None or not conclusion or task.scene is None:
        out.stage = "format"
    elif not _same(task, out.caption_answer, task.answer):
        out.stage = "perception"
    elif not _same(task, out.reasoning_answer, out.caption_answer):
        out.stage = "reasoning"
    else:
        out.stage = "copy"
    return out


def attribution_table(tasks: Sequence, outputs: Sequence[str]) -> dict:
    """Counts over many answers: how many were right, and where the wrong ones failed; plus the
    captions' item scores (right / missed / invented, and exact captions).

    >>> from cotlib import synth
    >>> ts = synth.make_tasks(3, seed=9)
    >>> attribution_table(ts, ["no stages"] * 3)["wrong_by_stage"]["format"]
    3
    """
    rows = [attribute(t, o) for t, o in zip(tasks, outputs, strict=True)]
    captions = [r.caption for r in rows if r.caption is not None]
    return {
        "n": len(rows),
        "correct": sum(r.correct for r in rows),
        "wrong_by_stage": {s: sum(r.stage == s for r in rows) for s in FAILURE_STAGES},
        "captions": {"read": len(captions), "exact": sum(c.exact for c in captions),
                     "items_right": sum(c.right for c in captions),
                     "items_missed": sum(c.missed for c in captions),
                     "items_invented": sum(c.invented for c in captions)},
        "by_type": {kind: {s: sum(r.stage == s for r, t in zip(rows, tasks)
                                  if t.task_type == kind) for s in FAILURE_STAGES}
                    for kind in sorted({t.task_type for t in tasks})},
    }

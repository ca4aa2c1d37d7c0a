"""Questions: filling templates, recognising a question (and its options) from its text, and
solving it against a scene with the solver of the task type the question's form belongs to.

    >>> parse_question("What is the value of the red bar?").task_type
    'bar_value'
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from cotlib.synth.registry import TEMPLATES, type_of_form
from cotlib.synth.scenes import (
    COLORS,
    DEFAULT_CONFIG,
    LETTERS,
    RELATIONS,
    SHAPES,
    SIZES,
    SceneConfig,
)

MC_INSTRUCTION = "Answer with the option's letter."


def _slot_vocab(slot: str) -> dict[str, tuple[str, str]]:
    """Surface text -> (param key, value) for one template slot."""
    if slot.startswith("color"):
        return {c: (slot, c) for c in COLORS}
    if slot.endswith("_pl"):
        return {s + "s": (slot[:-3], s) for s in SHAPES}
    if slot.startswith("shape"):
        return {s: (slot, s) for s in SHAPES}
    if slot == "size":
        return {s: (slot, s) for s in SIZES}
    if slot == "relation":
        return {phrase: (slot, key) for key, phrase in RELATIONS.items()}
    raise KeyError(slot)


@functools.cache
def _template_regex(template: str) -> re.Pattern:
    out = []
    for part in re.split(r"(\{\w+\})", template):
        if m := re.fullmatch(r"\{(\w+)\}", part):
            words = sorted(_slot_vocab(m.group(1)), key=len, reverse=True)
            out.append(f"(?P<{m.group(1)}>{'|'.join(map(re.escape, words))})")
        else:
            out.append(re.escape(part))
    return re.compile("".join(out), re.IGNORECASE)


def question_text(form: str, params: dict) -> str:
    """Fill the template of `form` with params.

    >>> question_text("count_color_shape", {"color": "blue", "shape": "square"})
    'How many blue squares are there?'
    """
    texts = {k: v for k, v in params.items() if k != "form"}
    for k in ("shape", "shape2"):
        if k in params:
            texts[k + "_pl"] = params[k] + "s"
    if "relation" in params:
        texts["relation"] = RELATIONS[params["relation"]]
    return type_of_form(form).templates[form].format(**texts)


def format_prompt(question: str, choices: list[str] | None) -> str:
    """Question text plus options for multiple choice.

    >>> print(format_prompt("What color is the small circle?", ["red", "blue"]))
    What color is the small circle?
    Options: A. red B. blue
    Answer with the option's letter.
    """
    if not choices:
        return question
    options = " ".join(f"{letter}. {c}" for letter, c in zip(LETTERS, choices, strict=False))
    return f"{question}\nOptions: {options}\n{MC_INSTRUCTION}"


@dataclass
class ParsedQuestion:
    task_type: str
    params: dict  # includes "form"
    choices: list[str] | None = None


def _parse_options(text: str) -> list[str] | None:
    lines = text.split("\n")
    chunks = [lines[0]]
    for line in lines[1:]:
        if not re.match(r"\s*[A-Z]\.\s", line):
            break
        chunks.append(line)
    parts = re.split(r"\s([A-Z])\.\s+", " " + " ".join(chunks).strip())
    letters, texts = parts[1::2], [p.strip() for p in parts[2::2]]
    if not texts or "".join(letters) != LETTERS[: len(letters)]:
        raise ValueError(f"could not parse options from {text!r}")
    return texts


def parse_question(text: str) -> ParsedQuestion:
    """Recognise a course question (optionally with MC options) from its text.

    >>> p = parse_question("How many red objects are there?\\nOptions: A. 1 B. 2")
    >>> p.task_type, p.params, p.choices
    ('count_color', {'form': 'count_color', 'color': 'red'}, ['1', '2'])
    """
    head, sep, tail = text.partition("Options:")
    choices = _parse_options(tail) if sep else None
    found = []
    for form, (_, template) in TEMPLATES.items():
        if m := _template_regex(template).search(head):
            params: dict = {"form": form}
            for slot, word in m.groupdict().items():
                key, value = _slot_vocab(slot)[word.lower()]
                params[key] = value
            found.append(params)
    if len(found) != 1:
        raise ValueError(
            f"expected exactly one known question template in {head!r}, found {len(found)}"
        )
    return ParsedQuestion(TEMPLATES[found[0]["form"]][0], found[0], choices)


def solve_params(
    scene: dict, params: dict, config: SceneConfig = DEFAULT_CONFIG
) -> tuple[str, list[str]]:
    """Ground truth for a question given by its params (incl. "form"): (answer, reasoning steps),
    from the solver of the form's task type, after checking the scene is of that type's kind."""
    form = params["form"]
    task = type_of_form(form)
    if scene["kind"] != task.scene:
        raise ValueError(f"a {form} question needs a {task.scene} scene, got {scene['kind']}")
    return task.solve(scene, params, config)


def answer_question(
    scene: dict, task_type: str, params: dict, config: SceneConfig = DEFAULT_CONFIG
) -> str:
    """Ground-truth answer for a question given by task type and params (incl. "form").

    >>> scene = {"kind": "bars", "bars": [{"color": "red", "value": 3},
    ...                                   {"color": "blue", "value": 7}]}
    >>> answer_question(scene, "bar_diff", {"form": "bar_diff", "color": "red", "color2": "blue"})
    '4'
    """
    if type_of_form(params["form"]).name != task_type:
        raise ValueError(f"form {params['form']!r} does not belong to task type {task_type!r}")
    return solve_params(scene, params, config)[0]


def solve(
    question_text: str, scene: dict, config: SceneConfig = DEFAULT_CONFIG
) -> tuple[str, list[str]]:
    """Answer a question from its TEXT and a (recovered) scene: (answer, reasoning steps).

    For multiple choice the answer is the option text; the last step names the letter.

    >>> scene = {"kind": "bars", "bars": [{"color": "red", "value": 3},
    ...                                   {"color": "blue", "value": 7}]}
    >>> answer, steps = solve("Which color bar is the tallest?\\nOptions: A. red B. blue", scene)
    >>> answer, steps[-1]
    ('blue', 'That matches option B.')
    """
    parsed = parse_question(question_text)
    answer, steps = solve_params(scene, parsed.params, config)
    if parsed.choices is not None:
        if answer not in parsed.choices:
            raise ValueError(f"answer {answer!r} is not among the options {parsed.choices}")
        steps.append(f"That matches option {LETTERS[parsed.choices.index(answer)]}.")
    return answer, steps


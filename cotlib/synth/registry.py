"""The task-type registry: one :class:`TaskType` per kind of question, registered in one place.

A task type holds everything the library knows about it: the scene kind it asks about, its
question templates, its generator, its solver (answer plus reasoning steps), the local teacher's
plan wordings, the range its numeric answers take (multiple-choice distractors) and the words its
questions add to the tiny tokenizers' vocabulary. Generation (:func:`cotlib.synth.make_task`), the
question parser and solver, the local teacher (:mod:`cotlib.teacher_server`) and the tokenizer
corpus (:func:`cotlib.models.course_corpus`) all read it; an unknown type is an error.

    >>> from cotlib import synth
    >>> synth.task_type("bar_diff").scene, synth.task_type("bar_diff").forms
    ('bars', ('bar_diff',))
    >>> synth.task_type("bar_sum").default  # opt-in: made when asked for by name
    False
    >>> synth.task_type("count_rows")
    Traceback (most recent call last):
    ...
    ValueError: unknown task type 'count_rows'; known: ['bar_diff', 'bar_max', ...
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from cotlib.synth.scenes import MAX_OBJECTS, SCENE_KINDS, SceneConfig

#: ``generate(rng, config) -> (scene, params)``; ``params["form"]`` names the template used.
Generator = Callable[[random.Random, SceneConfig], tuple[dict, dict]]
#: ``solve(scene, params, config) -> (answer, reasoning steps)``; the scene kind is checked first.
Solver = Callable[[dict, dict, SceneConfig], tuple[str, list[str]]]


@dataclass(frozen=True)
class TaskType:
    """One kind of question. ``templates`` maps each form to its question text (slots
    ``{color} {color2} {shape} {shape2} {size} {relation}``, plurals ``{shape_pl} {shape2_pl}``);
    ``plans`` are the local teacher's SUMMARY wordings (slot ``{target}``); ``default`` types are
    the mix :func:`cotlib.synth.make_task` draws from when given no type."""

    name: str
    scene: str  # "shapes" or "bars"
    templates: Mapping[str, str]
    generate: Generator = field(repr=False)
    solve: Solver = field(repr=False)
    plans: tuple[str, ...]
    number_range: tuple[int, int] = (0, MAX_OBJECTS)  # numeric answers' range (MC distractors)
    default: bool = True
    words: tuple[str, ...] = ()  # whole words beyond BASE_WORDS its questions need

    @property
    def forms(self) -> tuple[str, ...]:
        return tuple(self.templates)


#: Every registered type by name, in registration order.
REGISTRY: dict[str, TaskType] = {}
#: The default mix, type -> scene kind, in registration order: what ``make_task(seed)`` draws
#: from, and what the shipped splits and the shipped base were made from. Opt-in types are not
#: here, so registering one changes no seed's type.
TASK_TYPES: dict[str, str] = {}
#: form -> (task type, template), for every registered type: generation and parsing share it.
TEMPLATES: dict[str, tuple[str, str]] = {}

#: The word list every tiny tokenizer has been trained on (:func:`cotlib.models.course_corpus`).
#: Kept as it is, word for word, so tokenizers built before the registry stay byte-identical; a
#: new type names its extra words in ``TaskType.words`` (appended by :func:`vocabulary`).
BASE_WORDS = (
    "red green blue yellow purple orange circle square triangle bar chart small large "
    "left right above below top bottom middle centre how many what which color colour "
    "shape object objects there is are more fewer than total value tallest shortest "
    "difference between the a an of in on and yes no answer question image option "
    "0 1 2 3 4 5 6 7 8 9 10 11 12 zero one two three four five six seven eight nine ten"
)

def register(task: TaskType) -> TaskType:
    """Add a task type (its name and forms must be new, its scene kind known, its plans given).

    >>> register(task_type("bar_max"))
    Traceback (most recent call last):
    ...
    ValueError: task type 'bar_max' is already registered
    """
    if task.name in REGISTRY:
        raise ValueError(f"task type {task.name!r} is already registered")
    if task.scene not in SCENE_KINDS:
        raise ValueError(f"task type {task.name!r}: unknown scene kind {task.scene!r}; "
                         f"known: {list(SCENE_KINDS)}")
    if not task.templates:
        raise ValueError(f"task type {task.name!r} needs at least one question template")
    taken = [form for form in task.templates if form in TEMPLATES]
    if taken:
        raise ValueError(f"task type {task.name!r}: forms {taken} belong to another type")
    if not task.plans:
        raise ValueError(f"task type {task.name!r} needs the local teacher's plan wordings")
    REGISTRY[task.name] = task
    if task.default:
        TASK_TYPES[task.name] = task.scene
    for form, template in task.templates.items():
        TEMPLATES[form] = (task.name, template)
    return task


def task_type(name: str) -> TaskType:
    """The registered type called ``name``; ValueError naming the known ones otherwise."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task type {name!r}; known: {sorted(REGISTRY)}") from None


def type_of_form(form: str) -> TaskType:
    """The type a question form belongs to; ValueError for an unknown form."""
    if form not in TEMPLATES:
        raise ValueError(f"unknown question form {form!r}; known: {sorted(TEMPLATES)}")
    return REGISTRY[TEMPLATES[form][0]]


def vocabulary() -> str:
    """The tokenizer corpus's word line: :data:`BASE_WORDS`, then any registered type's extra
    words not already in it (none for the course's types, so the line is unchanged).

    >>> vocabulary() == BASE_WORDS
    True
    """
    words = BASE_WORDS.split()
    for task in REGISTRY.values():
        words += [w for w in task.words if w not in words]
    return " ".join(words)

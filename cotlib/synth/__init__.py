"""Synthetic visual reasoning tasks with known answers: shape grids and bar charts.

Images are drawn without anti-aliasing from a small palette of pure colours on a grid
that lines up with ViT patches, so `scene_from_image` recovers the exact scene from
pixels alone. Every kind of question is one registered :class:`TaskType`
(:mod:`cotlib.synth.registry`): its question templates, which generation (`make_task`) and the
template parser (`solve`, used by the teacher) share, its generator, its solver (the answer
together with short reasoning steps), the local teacher's plan wordings and its vocabulary.

    >>> task = make_task(0, "count_color")
    >>> scene_from_image(task.get_image()) == task.scene
    True
    >>> solve(task.prompt_question(), task.scene)[0] == task.answer
    True

Modules: :mod:`~cotlib.synth.scenes` (palette, geometry, drawing, decoding, captions),
:mod:`~cotlib.synth.registry` (the task types), :mod:`~cotlib.synth.shapes` and
:mod:`~cotlib.synth.bars` (the types of each scene kind), :mod:`~cotlib.synth.questions`
(templates, parsing, solving), :mod:`~cotlib.synth.tasks` (`Task`, generation, splits).

Conventions (what the answers mean):
- counts are digits ("0".."7"); yes/no answers are "yes" or "no";
- compare_counts: "yes" only if the first count is strictly larger (a tie is "no");
- spatial "directly to the left of" = the adjacent cell in the same row; yes/no "above"
  = in a higher row (any column), "to the left of" = in a column further left (any row);
- bar_diff is the absolute difference (larger minus smaller), never negative;
- multiple choice: `answer` is the option TEXT, `answer_letter` its letter, and the
  prompt ends with "Answer with the option's letter.".

A new task type is one ``register(TaskType(...))`` call; types registered with
``default=False`` (such as ``bar_sum``) are made only when asked for by name, so the type
``make_task(seed)`` draws for a seed never changes.
"""

from __future__ import annotations

from cotlib.synth.registry import (
    BASE_WORDS,
    REGISTRY,
    TASK_TYPES,
    TEMPLATES,
    TaskType,
    register,
    task_type,
    type_of_form,
    vocabulary,
)
from cotlib.synth.scenes import (
    AXIS,
    BACKGROUND,
    COLORS,
    DEFAULT_CONFIG,
    DRAWN_COLOURS,
    GENERATOR_VERSION,
    GRIDLINE,
    LETTERS,
    MAX_BAR_VALUE,
    MAX_OBJECTS,
    OFFSETS,
    PALETTE,
    RELATIONS,
    SCENE_KINDS,
    SHAPES,
    SIZES,
    SceneConfig,
    describe,
    listing,
    position_name,
    render,
    scene_from_image,
    scene_items,
    validate_scene,
)

# The course's types register themselves on import, shapes first: registration order is the
# default mix's order, which fixes the type make_task(seed) draws for each seed.
# isort: split
from cotlib.synth import shapes  # noqa: F401

# isort: split
from cotlib.synth import bars  # noqa: F401

# isort: split
from cotlib.synth.questions import (
    MC_INSTRUCTION,
    ParsedQuestion,
    answer_question,
    format_prompt,
    parse_question,
    question_text,
    solve,
    solve_params,
)
from cotlib.synth.tasks import (
    Task,
    load_split,
    make_task,
    make_tasks,
    reference_trace,
    save_split,
)

__all__ = [
    "AXIS", "BACKGROUND", "BASE_WORDS", "COLORS", "DEFAULT_CONFIG", "DRAWN_COLOURS",
    "GENERATOR_VERSION", "GRIDLINE", "LETTERS", "MAX_BAR_VALUE", "MAX_OBJECTS", "MC_INSTRUCTION",
    "OFFSETS", "PALETTE", "REGISTRY", "RELATIONS", "SCENE_KINDS", "SHAPES", "SIZES", "TASK_TYPES",
    "TEMPLATES", "ParsedQuestion", "SceneConfig", "Task", "TaskType", "answer_question",
    "describe", "format_prompt", "listing", "load_split", "make_task", "make_tasks",
    "parse_question", "position_name", "question_text", "reference_trace", "register", "render",
    "save_split", "scene_from_image", "scene_items", "solve", "solve_params", "task_type",
    "type_of_form", "validate_scene", "vocabulary",
]

"""Tasks: one question about one scene with its known answer (:class:`Task`), made
deterministically from a seed by the registered task types, and saved or loaded as a split.

    >>> make_task(2, "count_shape").question
    'How many circles are there?'
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from cotlib import stages
from cotlib.synth import registry
from cotlib.synth.questions import answer_question, format_prompt, question_text, solve
from cotlib.synth.registry import TASK_TYPES
from cotlib.synth.scenes import (
    COLORS,
    DEFAULT_CONFIG,
    LETTERS,
    PALETTE,
    SHAPES,
    SceneConfig,
    describe,
    render,
)


def _make_choices(rng: random.Random, task_type: str, answer: str, scene: dict) -> list[str]:
    """Answer plus plausible distractors in random order (yes/no stays in that order)."""
    if answer in ("yes", "no"):
        return ["yes", "no"]
    if answer in SHAPES:
        choices = list(SHAPES)
    elif answer in PALETTE:
        items = scene.get("bars") or scene.get("objects")
        present = list(dict.fromkeys(o["color"] for o in items if o["color"] != answer))
        absent = [c for c in COLORS if c != answer and c not in present]
        rng.shuffle(present)
        rng.shuffle(absent)
        choices = [answer, *(present + absent)[:3]]
    else:
        lo, hi = registry.task_type(task_type).number_range
        a = int(answer)
        near = [str(x) for x in range(lo, hi + 1) if x != a and abs(x - a) <= 3]
        choices = [answer, *rng.sample(near, 3)]
    rng.shuffle(choices)
    return choices


@dataclass
class Task:
    """One question about one scene, with its known answer.

    >>> t = make_task(7, "bar_value", multiple_choice=True)
    >>> t.answer in t.choices and t.choices[LETTERS.index(t.answer_letter)] == t.answer
    True
    """

    id: str
    task_type: str
    question: str
    answer: str
    scene: dict
    seed: int
    params: dict = field(default_factory=dict)
    choices: list[str] | None = None
    answer_letter: str | None = None
    image: Image.Image | None = field(default=None, repr=False, compare=False)
    image_path: str | None = field(default=None, repr=False, compare=False)

    def get_image(self, config: SceneConfig = DEFAULT_CONFIG) -> Image.Image:
        """The image: cached, else loaded from `image_path`, else rendered from the scene."""
        if self.image is None:
            if self.image_path is not None and Path(self.image_path).exists():
                with Image.open(self.image_path) as im:
                    self.image = im.convert("RGB")
            else:
                self.image = render(self.scene, config)
        return self.image

    def prompt_question(self) -> str:
        """Question shown to the model; for MC followed by options and the instruction."""
        return format_prompt(self.question, self.choices)

    def to_record(self, image_path: str | None = None) -> dict:
        """JSON-safe dict (no pixels); image_path is stored as given (e.g. relative)."""
        return {
            "id": self.id,
            "task_type": self.task_type,
            "question": self.question,
            "answer": self.answer,
            "choices": self.choices,
            "answer_letter": self.answer_letter,
            "prompt": self.prompt_question(),
            "params": self.params,
            "scene": self.scene,
            "seed": self.seed,
            "image": image_path,
        }

    @classmethod
    def from_record(cls, rec: dict, image_root: str | Path | None = None) -> Task:
        """Inverse of `to_record`; the image loads lazily from image_root / rec["image"]."""
        path = rec.get("image")
        if path is not None and image_root is not None:
            path = str(Path(image_root) / path)
        return cls(
            id=rec["id"],
            task_type=rec["task_type"],
            question=rec["question"],
            answer=rec["answer"],
            scene=rec["scene"],
            seed=rec["seed"],
            params=rec.get("params", {}),
            choices=rec.get("choices"),
            answer_letter=rec.get("answer_letter"),
            image_path=path,
        )


def make_task(
    seed: int,
    task_type: str | None = None,
    multiple_choice: bool | None = None,
    config: SceneConfig = DEFAULT_CONFIG,
) -> Task:
    """Deterministic task from a seed (type and MC drawn from the seed when None: the type from
    the default mix :data:`TASK_TYPES`, never an opt-in type). An unknown type is a ValueError.

    The scene and question depend only on (seed, task_type), so the MC variant of a task
    shows the same scene and asks the same question as its free-form variant.

    >>> make_task(1, "bar_diff") == make_task(1, "bar_diff")
    True
    """
    rng = random.Random(seed)
    task_type = task_type or rng.choice(list(TASK_TYPES))
    mc = rng.random() < 0.3 if multiple_choice is None else multiple_choice
    scene, params = registry.task_type(task_type).generate(
        random.Random(f"{seed}:{task_type}"), config)
    answer = answer_question(scene, task_type, params, config)
    choices = letter = None
    if mc:
        choices = _make_choices(random.Random(f"{seed}:{task_type}:mc"), task_type, answer, scene)
        letter = LETTERS[choices.index(answer)]
    return Task(
        id=f"{task_type}-{seed}" + ("-mc" if mc else ""),
        task_type=task_type,
        question=question_text(params["form"], params),
        answer=answer,
        scene=scene,
        seed=seed,
        params=params,
        choices=choices,
        answer_letter=letter,
    )


def make_tasks(
    n: int,
    seed: int = 0,
    task_types: list[str] | None = None,
    mc_fraction: float = 0.3,
    config: SceneConfig = DEFAULT_CONFIG,
) -> list[Task]:
    """n tasks cycling through task types (balanced; the default mix when None, any registered
    type by name); task i uses seed * 1_000_000 + i.

    Exactly round(n * mc_fraction) tasks, chosen by `seed`, are multiple choice.

    >>> [t.task_type for t in make_tasks(3, task_types=["bar_max", "spatial"])]
    ['bar_max', 'spatial', 'bar_max']
    """
    types = list(task_types or TASK_TYPES)
    for name in types:
        registry.task_type(name)  # an unknown name fails before any work
    n_mc = round(n * mc_fraction)
    mc = [i < n_mc for i in range(n)]
    random.Random(f"mc:{seed}").shuffle(mc)
    return [make_task(seed * 1_000_000 + i, types[i % len(types)], mc[i], config) for i in range(n)]


def reference_trace(task: Task, config: SceneConfig = DEFAULT_CONFIG) -> str:
    """The solver's own trace for a task, in the course format: a plan naming the question, the
    scene's caption (:func:`describe`), the solver's steps and its answer (the option's text for
    multiple choice). The tokenizer corpus, teacher-free training data and notebook 06 use it.

    >>> print(reference_trace(make_task(3, "bar_value", multiple_choice=False)))
    <SUMMARY> I will look at the image and answer: What is the value of the orange bar? </SUMMARY>
    <BLANKLINE>
    <CAPTION> A bar chart with 4 bars, from left to right: a orange bar of height 2; ... </CAPTION>
    <BLANKLINE>
    <REASONING> Bar values ... The orange bar reaches gridline 2, so its value is 2. </REASONING>
    <BLANKLINE>
    <CONCLUSION> 2 </CONCLUSION>
    """
    answer, steps = solve(task.prompt_question(), task.scene, config)
    return stages.render(f"I will look at the image and answer: {task.question}",
                         describe(task.scene, config), " ".join(steps), answer)


def save_split(tasks: list[Task], folder: str | Path) -> None:
    """Write folder/images/<id>.png and folder/tasks.jsonl (one record per line)."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for t in tasks:
        rel = f"images/{t.id}.png"
        t.get_image().save(folder / rel, optimize=True)
        lines.append(json.dumps(t.to_record(rel)))
    (folder / "tasks.jsonl").write_text("\n".join(lines) + "\n")


def load_split(folder: str | Path) -> list[Task]:
    """Read a folder written by `save_split` (images load lazily)."""
    folder = Path(folder)
    with open(folder / "tasks.jsonl") as f:
        return [Task.from_record(json.loads(line), folder) for line in f if line.strip()]

"""Evaluation: accuracy by task type, format compliance, stage lengths, and the reasoning overhead.

The answer is read from the CONCLUSION (``stages.final_answer``) and compared with the standard
answer by the same normaliser the filter uses (``cotlib.normalize.answers_match``). Each system
under test gives one :class:`EvalResult`; :func:`comparison_table` puts several side by side,
with generated tokens and seconds per answer relative to the first (direct-answer) row — the
price of reasoning the course is honest about. :func:`plot_overhead` draws accuracy against
that price, :func:`best_within_budget` picks the system to deploy under a latency budget, and
:mod:`cotlib.experiment` runs the whole four-system comparison.

>>> from cotlib import synth
>>> task = synth.make_task(0, "count_color")
>>> r = score("direct", [task], [task.answer], seconds=[0.1], tokens=[2])
>>> r.accuracy, r.format_rate
(1.0, 0.0)
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cotlib import normalize, stages, tables


@dataclass
class EvalResult:
    """Scores of one system on one set of tasks."""

    name: str
    n: int
    accuracy: float
    by_type: dict[str, float]
    format_rate: float  # share of outputs with all four stages, in order, closed, non-empty
    mean_tokens: float
    mean_seconds: float
    stage_words: dict[str, float] = field(default_factory=dict)  # mean words per stage
    rows: list[dict] = field(default_factory=list)
    note: str = ""  # how the outputs were produced (decoding, subset), shown in reports

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EvalResult:
        """The inverse of :meth:`to_dict` (reads one entry of ``eval.json``)."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def is_correct(task, output: str) -> bool:
    """Does ``output`` (a four-stage trace or a direct answer) answer ``task`` correctly?

    >>> from cotlib import synth
    >>> t = synth.make_task(3, "bar_max")
    >>> is_correct(t, stages.render("p", "c", "r", t.answer))
    True
    """
    return _matches(task, stages.final_answer(output))


def _matches(task, final_answer: str) -> bool:
    """Is ``final_answer`` (read from an output's CONCLUSION) the task's standard answer?"""
    return normalize.answers_match(final_answer, task.answer, choices=task.choices,
                                   answer_letter=task.answer_letter)


@dataclass(frozen=True)
class Answer:
    """One system's answer to one task, as :func:`score_answers` grades it: the text as written,
    what it cost, and, where a decoder wrote the stage tags, whether the model closed every stage
    itself (``None``: the text alone decides the format).

    >>> Answer("3", seconds=0.1, tokens=2)
    Answer(text='3', seconds=0.1, tokens=2, well_formed=None)
    """

    text: str
    seconds: float = 0.0
    tokens: int = 0
    well_formed: bool | None = None


def score(
    name: str,
    tasks: Sequence,
    outputs: Sequence[str],
    *,
    seconds: Sequence[float] | None = None,
    tokens: Sequence[int] | None = None,
    well_formed: Sequence[bool] | None = None,
    note: str = "",
) -> EvalResult:
    """Score ``outputs`` (one per task) for the system called ``name``: :func:`score_answers`
    with the answers given field by field (``seconds`` and ``tokens``: 0 when left out).

    Format compliance is read from the text (``stages.parse(output).ok``) unless ``well_formed``
    is given: pass it when the decoder, not the model, wrote the stage tags (staged decoding
    feeds every opening tag, so the text always parses) — e.g. ``[a.ok for a in answers]``,
    true only when the model closed every stage itself.
    """
    if len(tasks) != len(outputs):
        raise ValueError(f"{len(tasks)} tasks but {len(outputs)} outputs: give one output each")
    if not tasks:
        raise ValueError("no tasks to evaluate: pass at least one task")
    seconds = list(seconds) if seconds is not None else [0.0] * len(tasks)
    tokens = list(tokens) if tokens is not None else [0] * len(tasks)
    flags = list(well_formed) if well_formed is not None else [None] * len(tasks)
    for what, values in (("seconds", seconds), ("tokens", tokens), ("well_formed flags", flags)):
        if len(values) != len(tasks):
            raise ValueError(f"{len(tasks)} tasks but {len(values)} {what}")
    return score_answers(name, tasks, [
        Answer(output, sec, tok, None if flag is None else bool(flag))
        for output, sec, tok, flag in zip(outputs, seconds, tokens, flags)], note=note)


def score_answers(name: str, tasks: Sequence, answers: Sequence[Answer], *,
                  note: str = "") -> EvalResult:
    """Score ``answers`` (one :class:`Answer` per task) for the system called ``name``: each
    text is parsed once, for its stages (format compliance, stage lengths) and its CONCLUSION
    (correctness); an answer's ``well_formed`` flag, when set, must hold too.

    >>> from cotlib import synth
    >>> t = synth.make_task(2, "count_shape")
    >>> r = score_answers("staged", [t], [Answer(stages.render("p", "c", "r", t.answer),
    ...                                          tokens=40, well_formed=False)])
    >>> r.accuracy, r.format_rate, r.mean_tokens
    (1.0, 0.0, 40.0)
    """
    if len(tasks) != len(answers):
        raise ValueError(f"{len(tasks)} tasks but {len(answers)} answers: give one answer each")
    if not tasks:
        raise ValueError("no tasks to evaluate: pass at least one task")
    by_type: dict[str, list[bool]] = defaultdict(list)
    words: dict[str, list[int]] = defaultdict(list)
    rows, formatted = [], 0
    for task, answer in zip(tasks, answers):
        parsed = stages.parse(answer.text)
        final = stages.final_answer(answer.text)
        correct = _matches(task, final)
        ok = parsed.ok if answer.well_formed is None else answer.well_formed and parsed.ok
        by_type[task.task_type].append(correct)
        formatted += ok
        for stage, text in parsed.stages.items():
            words[stage].append(len(text.split()))
        rows.append({"task_id": task.id, "task_type": task.task_type, "answer": task.answer,
                     "final_answer": final, "correct": correct, "well_formed": ok,
                     "tokens": answer.tokens, "seconds": round(answer.seconds, 4),
                     "output": answer.text})
    n = len(rows)
    return EvalResult(
        name=name, n=n,
        accuracy=round(sum(r["correct"] for r in rows) / n, 4),
        by_type={k: round(sum(v) / len(v), 4) for k, v in sorted(by_type.items())},
        format_rate=round(formatted / n, 4),
        mean_tokens=round(sum(a.tokens for a in answers) / n, 2),
        mean_seconds=round(sum(a.seconds for a in answers) / n, 4),
        stage_words={s: round(sum(words[s]) / len(words[s]), 1) for s in stages.STAGES
                     if words[s]},
        rows=rows,
        note=note,
    )


def comparison_table(results: Sequence[EvalResult]) -> str:
    """A markdown table: accuracy with its 95% interval (Wilson), format compliance, tokens and
    seconds per answer, and the overhead relative to the first row.

    >>> from cotlib import synth
    >>> t = synth.make_task(1, "count_shape")
    >>> a = score("direct", [t], [t.answer], seconds=[0.1], tokens=[2])
    >>> b = score("cot", [t], [stages.render("p", "c", "r", t.answer)], seconds=[0.4], tokens=[40])
    >>> print(comparison_table([a, b]).splitlines()[-1])
    | cot | 1 | 100.0% | 20.7%–100.0% | 100.0% | 40.0 | 0.400 | 20.0x | 4.0x |
    """
    if not results:
        raise ValueError("no results to compare")
    base = results[0]
    rows = []
    for r in results:
        tok_ratio = r.mean_tokens / base.mean_tokens if base.mean_tokens else float("nan")
        sec_ratio = r.mean_seconds / base.mean_seconds if base.mean_seconds else float("nan")
        lo, hi = accuracy_interval(r)
        rows.append([r.name, r.n, f"{r.accuracy:.1%}", f"{lo:.1%}–{hi:.1%}",
                     f"{r.format_rate:.1%}", f"{r.mean_tokens:.1f}", f"{r.mean_seconds:.3f}",
                     f"{tok_ratio:.1f}x", f"{sec_ratio:.1f}x"])
    return tables.markdown_table(
        ["system", "n", "accuracy", "95% interval", "format", "tokens/answer", "s/answer",
         "tokens vs first", "time vs first"], rows)


def by_type_table(results: Sequence[EvalResult]) -> str:
    """Accuracy per task type, one column per system (markdown)."""
    if not results:
        raise ValueError("no results to tabulate: give at least one EvalResult")
    kinds = sorted({k for r in results for k in r.by_type})
    return tables.markdown_table(
        ["task type", *(r.name for r in results)],
        [[kind, *(f"{r.by_type[kind]:.0%}" if kind in r.by_type else "–" for r in results)]
         for kind in kinds])


def plot_results(results: Sequence[EvalResult], path: str | Path | None = None):
    """Two panels: accuracy per system, and accuracy against seconds per answer (the overhead)."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = [r.name for r in results]
    left.bar(names, [r.accuracy for r in results], color="#4C72B0")
    left.set_ylabel("accuracy")
    left.set_ylim(0, 1)
    left.set_title("accuracy on held-out tasks")
    left.tick_params(axis="x", rotation=20)
    for r in results:
        right.scatter(r.mean_seconds, r.accuracy, s=60)
        right.annotate(r.name, (r.mean_seconds, r.accuracy), textcoords="offset points",
                       xytext=(5, 5), fontsize=8)
    right.set_xlabel("seconds per answer")
    right.set_ylabel("accuracy")
    right.set_title("what reasoning costs")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def save_results(results: Sequence[EvalResult], path: str | Path) -> None:
    """Write all results (with per-task rows) to ``eval.json``."""
    Path(path).write_text(json.dumps([r.to_dict() for r in results], indent=1))


def load_results(path: str | Path) -> list[EvalResult]:
    """Read ``eval.json`` (written by :func:`save_results`) back into results."""
    path = Path(path)
    if path.is_dir():
        path = path / "eval.json"
    if not path.exists():
        raise FileNotFoundError(f"No results at {path}: run the experiment first (`cotlib demo` "
                                "or cotlib.experiment.run_experiment).")
    return [EvalResult.from_dict(d) for d in json.loads(path.read_text())]


def stage_table(results: Sequence[EvalResult]) -> str:
    """Mean words per stage, one row per system that wrote stages (markdown).

    >>> from cotlib import synth
    >>> t = synth.make_task(1, "count_shape")
    >>> r = score("cot", [t], [stages.render("plan it", "c", "r", t.answer)])
    >>> print(stage_table([r]).splitlines()[-1])
    | cot | 2.0 | 1.0 | 1.0 | 1.0 |
    """
    return tables.markdown_table(
        ["system", *stages.STAGES],
        [[r.name, *(f"{r.stage_words[s]:.1f}" if s in r.stage_words else "–"
                    for s in stages.STAGES)]
         for r in results if r.stage_words])


def difference_se(a: EvalResult, b: EvalResult) -> float:
    """Standard error of the accuracy difference ``a - b`` (independent binomial estimates):
    differences smaller than about two of these are within the noise of ``n`` tasks.

    >>> from cotlib import synth
    >>> ts = synth.make_tasks(4, seed=9)
    >>> right = score("a", ts, [t.answer for t in ts])
    >>> half = score("b", ts, [t.answer for t in ts[:2]] + ["x", "x"])
    >>> round(difference_se(right, half), 3)
    0.25
    """
    var = a.accuracy * (1 - a.accuracy) / a.n + b.accuracy * (1 - b.accuracy) / b.n
    return var ** 0.5


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval (95% for ``z=1.96``) of an accuracy of ``k`` right out of ``n``:
    unlike ``p +- 2 SE`` it stays inside [0, 1] and is honest at 0 or n right.

    >>> [round(x, 3) for x in wilson_interval(45, 120)]
    [0.294, 0.464]
    >>> wilson_interval(0, 10)[0]
    0.0
    """
    if n <= 0:
        raise ValueError("an interval needs at least one task (n >= 1)")
    if not 0 <= k <= n:
        raise ValueError(f"k={k} right out of n={n} is impossible")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_interval(result: EvalResult) -> tuple[float, float]:
    """:func:`wilson_interval` of ``result``'s accuracy (from its rows)."""
    right = sum(bool(r["correct"]) for r in result.rows) if result.rows else round(
        result.accuracy * result.n)
    return wilson_interval(right, result.n)


@dataclass
class PairedComparison:
    """``a`` against ``b`` on the same tasks: the accuracy difference ``a - b``, its 95% interval
    (paired bootstrap over tasks), and the exact McNemar test on the tasks only one got right."""

    a: str
    b: str
    n: int
    difference: float
    interval: tuple[float, float]
    only_a: int  # tasks a got right and b wrong
    only_b: int
    p_value: float  # exact two-sided McNemar (binomial test on the discordant tasks)

    @property
    def supported(self) -> bool:
        """Whether the data support a difference (the 95% interval excludes 0)."""
        return self.interval[0] > 0 or self.interval[1] < 0

    def sentence(self) -> str:
        """One plain sentence: the difference, its interval, the test, what it supports."""
        lo, hi = self.interval
        verdict = (f"the data support that {self.a if self.difference > 0 else self.b} is more "
                   "accurate" if self.supported else "the data do not tell them apart")
        return (f"{self.a} - {self.b}: {100 * self.difference:+.1f} points (95% interval "
                f"{100 * lo:+.1f} to {100 * hi:+.1f}; {self.only_a} tasks right only for "
                f"{self.a}, {self.only_b} only for {self.b}, McNemar p = {self.p_value:.3g}): "
                f"{verdict}.")


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value: the chance, if both systems were equally good, of a split
    of the discordant tasks at least this uneven.

    >>> round(mcnemar_p(10, 2), 4), mcnemar_p(3, 3)
    (0.0386, 1.0)
    """
    m = only_a + only_b
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, i) for i in range(min(only_a, only_b) + 1)) / 2 ** m
    return min(1.0, 2 * tail)


def paired_comparison(a: EvalResult, b: EvalResult, *, resamples: int = 10_000,
                      seed: int = 0) -> PairedComparison:
    """Compare two systems on the tasks both answered (matched by task id).

    The interval resamples tasks (a paired bootstrap, fixed seed: the same numbers every run).

    >>> from cotlib import synth
    >>> ts = synth.make_tasks(40, seed=9)
    >>> good = score("good", ts, [t.answer for t in ts])
    >>> half = score("half", ts, [t.answer if i % 2 else "x" for i, t in enumerate(ts)])
    >>> c = paired_comparison(good, half)
    >>> c.difference, c.only_a, c.only_b, c.supported
    (0.5, 20, 0, True)
    """
    import numpy as np

    right_b = {r["task_id"]: bool(r["correct"]) for r in b.rows}
    pairs = [(bool(r["correct"]), right_b[r["task_id"]]) for r in a.rows
             if r["task_id"] in right_b]
    if not pairs:
        raise ValueError(f"{a.name!r} and {b.name!r} share no task: a paired comparison needs "
                         "both systems scored on the same tasks")
    x = np.array(pairs, dtype=float)
    diff = x[:, 0] - x[:, 1]
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    only_a, only_b = int((diff > 0).sum()), int((diff < 0).sum())
    return PairedComparison(a.name, b.name, len(pairs), round(float(diff.mean()), 4),
                            (round(float(lo), 4), round(float(hi), 4)), only_a, only_b,
                            mcnemar_p(only_a, only_b))


# --------------------------------------------------------------------------------------------
# controls: does the model look at the image?

#: The image conditions of :func:`controls`.
CONTROL_CONDITIONS = ("real", "shuffled", "blank")


def control_images(tasks: Sequence, condition: str, seed: int = 0) -> list:
    """The images to answer ``tasks`` with under ``condition``: ``"real"`` (each task's own),
    ``"shuffled"`` (another task's image of the same kind — shapes or bars — so the question
    still fits the picture's kind but not its content), or ``"blank"`` (white, same size).

    >>> from cotlib import synth
    >>> ts = synth.make_tasks(6, seed=9)
    >>> [im.getpixel((0, 0)) for im in control_images(ts[:2], "blank")]
    [(255, 255, 255), (255, 255, 255)]
    """
    import random

    from PIL import Image

    if condition not in CONTROL_CONDITIONS:
        raise ValueError(f"condition must be one of {CONTROL_CONDITIONS}, got {condition!r}")
    real = [t.get_image() for t in tasks]
    if condition == "real":
        return real
    if condition == "blank":
        return [Image.new("RGB", im.size, (255, 255, 255)) for im in real]
    rng = random.Random(seed)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(tasks):
        groups[(t.scene or {}).get("kind", "other")].append(i)
    out = list(real)
    for idx in groups.values():
        if len(idx) < 2:
            continue
        order = list(idx)  # a shuffle, then a rotation: no task keeps its own image
        rng.shuffle(order)
        moved = order[1:] + order[:1]
        for i, j in zip(order, moved, strict=True):
            out[i] = real[j]
    return out


def controls(answer: Callable[[Sequence, list], list[str]], tasks: Sequence, *,
             name: str = "model", conditions: Sequence[str] = CONTROL_CONDITIONS,
             seed: int = 0, majority_from: Sequence | None = None) -> dict[str, EvalResult]:
    """Score a model on ``tasks`` with real, shuffled and blank images: a model that looks at the
    picture loses accuracy without it; one that scores the same is answering from the question.

    ``answer(tasks, images)`` returns one output per task (e.g. a closure over
    :func:`cotlib.experiment.answer_freely`). Also returns ``"majority"``: always the most
    common answer of each task type among ``majority_from`` (give the training tasks: the
    answer a model could learn without looking; default ``tasks`` themselves, which flatters
    the floor on a small set) — a floor that needs no model at all.

    >>> from cotlib import synth
    >>> ts = synth.make_tasks(22, seed=9)
    >>> def reads(task, image):  # a perfect reader of the picture
    ...     try:
    ...         return synth.solve(task.prompt_question(), synth.scene_from_image(image))[0]
    ...     except ValueError:
    ...         return "cannot tell"
    >>> r = controls(lambda tasks, images: [reads(*x) for x in zip(tasks, images)], ts)
    >>> r["real"].accuracy, r["blank"].accuracy < 0.5
    (1.0, True)
    """
    results = {}
    for condition in conditions:
        images = control_images(tasks, condition, seed)
        results[condition] = score(f"{name} ({condition} images)", tasks,
                                   list(answer(tasks, images)),
                                   note=f"images: {condition}")
    results["majority"] = score("majority answer", tasks,
                                majority_answers(tasks, majority_from),
                                note="the most common answer of each task type")
    return results


def majority_answers(tasks: Sequence, source: Sequence | None = None) -> list[str]:
    """For each task, the most common standard answer of its type among ``source`` (default
    ``tasks``; ties: the first seen; a type ``source`` lacks: the most common answer overall).

    >>> from cotlib import synth
    >>> majority_answers([synth.make_task(i, "compare_counts") for i in range(5)])[0]
    'yes'
    """
    counts: dict[str, Counter] = defaultdict(Counter)
    for t in (tasks if source is None else source):
        counts[t.task_type][str(t.answer)] += 1
    best = {k: c.most_common(1)[0][0] for k, c in counts.items()}
    overall = sum(counts.values(), Counter()).most_common(1)[0][0]
    return [best.get(t.task_type, overall) for t in tasks]


def controls_table(results: dict[str, EvalResult]) -> str:
    """Accuracy by task type under each image condition (markdown), with 95% intervals overall.

    >>> from cotlib import synth
    >>> ts = synth.make_tasks(11, seed=9)
    >>> print(controls_table({"real": score("m", ts, [t.answer for t in ts])}).splitlines()[2])
    | **all** | 11 | 100.0 [74.1, 100.0] |
    """
    names = list(results)
    first = results[names[0]]
    overall = ["**all**", first.n]
    for r in results.values():
        lo, hi = accuracy_interval(r)
        overall.append(f"{100 * r.accuracy:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]")
    counts = Counter(row["task_type"] for row in first.rows)
    rows = [overall] + [
        [kind, counts[kind],
         *(f"{100 * r.by_type.get(kind, float('nan')):.1f}" for r in results.values())]
        for kind in sorted(first.by_type)]
    return tables.markdown_table(["task type", "n", *names], rows, "l" + "r" * (len(names) + 1))


def plot_overhead(results: Sequence[EvalResult], path: str | Path | None = None):
    """Accuracy against the price of an answer: generated tokens (left) and seconds (right),
    both on log scales, one labelled point per system. Up and to the left is better."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, attr, label in ((axes[0], "mean_tokens", "generated tokens per answer"),
                            (axes[1], "mean_seconds", "seconds per answer")):
        for i, r in enumerate(results):
            x = max(getattr(r, attr), 1e-4)
            ax.scatter(x, r.accuracy, s=70, color=f"C{i}", zorder=3, label=r.name)
            ax.annotate(f"{r.accuracy:.0%}", (x, r.accuracy), textcoords="offset points",
                        xytext=(0, 8), ha="center", fontsize=8)
        ax.set_xscale("log")
        ax.margins(x=0.15)
        ax.set_xlabel(label + " (log scale)")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_title("accuracy vs tokens")
    axes[1].set_title("accuracy vs latency")
    axes[0].legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def plot_by_type(results: Sequence[EvalResult], path: str | Path | None = None):
    """Accuracy per task type, one bar per system (grouped)."""
    import matplotlib.pyplot as plt

    kinds = sorted({k for r in results for k in r.by_type})
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(kinds)), 4))
    width = 0.8 / max(1, len(results))
    for i, r in enumerate(results):
        xs = [k + (i - (len(results) - 1) / 2) * width for k in range(len(kinds))]
        ax.bar(xs, [r.by_type.get(k, 0.0) for k in kinds], width, label=r.name, color=f"C{i}")
    ax.set_xticks(range(len(kinds)), kinds, rotation=25, ha="right")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.set_title("accuracy by task type")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def best_within_budget(results: Sequence[EvalResult], max_seconds: float) -> str | None:
    """The system to deploy under a latency budget: the most accurate one whose mean seconds
    per answer is at most ``max_seconds`` (a tie goes to the faster one); ``None`` if none fits.

    >>> from cotlib import synth
    >>> t = synth.make_task(1, "count_shape")
    >>> fast = score("direct", [t], ["9"], seconds=[0.01])
    >>> slow = score("cot", [t], [t.answer], seconds=[0.5])
    >>> best_within_budget([fast, slow], 1.0), best_within_budget([fast, slow], 0.1)
    ('cot', 'direct')
    """
    fits = [r for r in results if r.mean_seconds <= max_seconds]
    if not fits:
        return None
    return min(fits, key=lambda r: (-r.accuracy, r.mean_seconds)).name

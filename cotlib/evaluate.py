"""Evaluation: accuracy by task type, format compliance, stage lengths, and the reasoning overhead.

The answer is read from the CONCLUSION (``stages.final_answer``) and compared with the standard
answer by the same normaliser the filter uses (``cotlib.normalize.answers_match``). Each system
under test gives one :class:`EvalResult`; :func:`comparison_table` puts several side by side,
with generated tokens and seconds per answer relative to the first (direct-answer) row — the
price of reasoning the course is honest about.

>>> from cotlib import synth
>>> task = synth.make_task(0, "count_color")
>>> r = score("direct", [task], [task.answer], seconds=[0.1], tokens=[2])
>>> r.accuracy, r.format_rate
(1.0, 0.0)
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cotlib import normalize, stages


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

    def to_dict(self) -> dict:
        return asdict(self)


def is_correct(task, output: str) -> bool:
    """Does ``output`` (a four-stage trace or a direct answer) answer ``task`` correctly?

    >>> from cotlib import synth
    >>> t = synth.make_task(3, "bar_max")
    >>> is_correct(t, stages.render("p", "c", "r", t.answer))
    True
    """
    return normalize.answers_match(
        stages.final_answer(output), task.answer,
        choices=task.choices, answer_letter=task.answer_letter,
    )


def score(
    name: str,
    tasks: Sequence,
    outputs: Sequence[str],
    *,
    seconds: Sequence[float] | None = None,
    tokens: Sequence[int] | None = None,
) -> EvalResult:
    """Score ``outputs`` (one per task) for the system called ``name``."""
    if len(tasks) != len(outputs):
        raise ValueError(f"{len(tasks)} tasks but {len(outputs)} outputs: give one output each")
    if not tasks:
        raise ValueError("no tasks to evaluate: pass at least one task")
    seconds = list(seconds) if seconds is not None else [0.0] * len(tasks)
    tokens = list(tokens) if tokens is not None else [0] * len(tasks)
    by_type: dict[str, list[bool]] = defaultdict(list)
    words: dict[str, list[int]] = defaultdict(list)
    rows, formatted = [], 0
    for task, output, sec, tok in zip(tasks, outputs, seconds, tokens):
        parsed = stages.parse(output)
        correct = is_correct(task, output)
        by_type[task.task_type].append(correct)
        formatted += parsed.ok
        for stage, text in parsed.stages.items():
            words[stage].append(len(text.split()))
        rows.append({"task_id": task.id, "task_type": task.task_type, "answer": task.answer,
                     "final_answer": stages.final_answer(output), "correct": correct,
                     "well_formed": parsed.ok, "tokens": tok, "seconds": round(sec, 4),
                     "output": output})
    n = len(rows)
    return EvalResult(
        name=name, n=n,
        accuracy=round(sum(r["correct"] for r in rows) / n, 4),
        by_type={k: round(sum(v) / len(v), 4) for k, v in sorted(by_type.items())},
        format_rate=round(formatted / n, 4),
        mean_tokens=round(sum(tokens) / n, 2),
        mean_seconds=round(sum(seconds) / n, 4),
        stage_words={s: round(sum(words[s]) / len(words[s]), 1) for s in stages.STAGES
                     if words[s]},
        rows=rows,
    )


def comparison_table(results: Sequence[EvalResult]) -> str:
    """A markdown table: accuracy, format compliance, tokens and seconds per answer, and the
    overhead relative to the first row.

    >>> from cotlib import synth
    >>> t = synth.make_task(1, "count_shape")
    >>> a = score("direct", [t], [t.answer], seconds=[0.1], tokens=[2])
    >>> b = score("cot", [t], [stages.render("p", "c", "r", t.answer)], seconds=[0.4], tokens=[40])
    >>> print(comparison_table([a, b]).splitlines()[-1])
    | cot | 1 | 100.0% | 100.0% | 40.0 | 0.400 | 20.0x | 4.0x |
    """
    if not results:
        raise ValueError("no results to compare")
    base = results[0]
    lines = [
        "| system | n | accuracy | format | tokens/answer | s/answer | tokens vs first | "
        "time vs first |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        tok_ratio = r.mean_tokens / base.mean_tokens if base.mean_tokens else float("nan")
        sec_ratio = r.mean_seconds / base.mean_seconds if base.mean_seconds else float("nan")
        lines.append(
            f"| {r.name} | {r.n} | {r.accuracy:.1%} | {r.format_rate:.1%} | {r.mean_tokens:.1f} "
            f"| {r.mean_seconds:.3f} | {tok_ratio:.1f}x | {sec_ratio:.1f}x |"
        )
    return "\n".join(lines)


def by_type_table(results: Sequence[EvalResult]) -> str:
    """Accuracy per task type, one column per system (markdown)."""
    kinds = sorted({k for r in results for k in r.by_type})
    lines = ["| task type | " + " | ".join(r.name for r in results) + " |",
             "|---|" + "---|" * len(results)]
    for kind in kinds:
        cells = [f"{r.by_type[kind]:.0%}" if kind in r.by_type else "–" for r in results]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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

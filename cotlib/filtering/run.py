"""Running the filter: verdicts, unreadable records, the duplicate pass, and the verdict and
trace files."""

from __future__ import annotations

import json
import traceback
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cotlib.filtering.checks import DEFAULT_CHECKS, Check
from cotlib.teacher.store import UNREADABLE, read_records, trace_problem

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


def record_text(record: Any) -> str:
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

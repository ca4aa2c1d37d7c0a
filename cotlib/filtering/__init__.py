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

The package, read in this order (each module imports only the ones above it):
:mod:`~cotlib.filtering.scene` (scene consistency), :mod:`~cotlib.filtering.checks` (the checks
and their order), :mod:`~cotlib.filtering.judge` (the LLM judge), :mod:`~cotlib.filtering.run`
(verdicts, duplicates, :func:`filter_traces`, files) and :mod:`~cotlib.filtering.reporting` (the
report and the agreement with the fault log). Notebook 03's exercise checkers are in
:mod:`cotlib.checks.nb03_filtering`.
"""

from cotlib.filtering.checks import (
    DEFAULT_CHECKS,
    DEFAULT_LENGTH_BOUNDS,
    FORMAT_PRIORITY,
    HEDGE_WORDS,
    REFUSAL_PATTERNS,
    Check,
    check_answer,
    check_format,
    check_hedging,
    check_length,
    check_refusal,
    check_scene,
    check_status,
    default_checks,
    excerpt,
    is_refusal,
    length_check,
    parse_record,
    word_count,
)
from cotlib.filtering.judge import (
    JUDGE_INSTRUCTION,
    judge_messages,
    judge_request_text,
    judge_standard_answer,
    judge_with_teacher,
    local_judge_reply,
    parse_judge_reply,
    parse_judge_request,
)
from cotlib.filtering.reporting import (
    EXPECTED_FAMILY,
    FilterReport,
    agreement,
    confusion_table,
    injected_kinds,
    report,
)
from cotlib.filtering.run import (
    KEPT,
    FilterError,
    Verdict,
    filter_traces,
    find_duplicates,
    jaccard,
    kept_records,
    read_traces,
    read_verdicts,
    record_problem,
    record_text,
    shingles,
    tasks_by_id,
    top_reasons,
    write_verdicts,
)
from cotlib.filtering.scene import (
    COLOUR_SYNONYMS,
    FOREIGN_COLOURS,
    FOREIGN_SHAPES,
    SHAPE_SYNONYMS,
    scene_problem,
)

__all__ = [
    "COLOUR_SYNONYMS",
    "Check",
    "DEFAULT_CHECKS",
    "DEFAULT_LENGTH_BOUNDS",
    "EXPECTED_FAMILY",
    "FOREIGN_COLOURS",
    "FOREIGN_SHAPES",
    "FORMAT_PRIORITY",
    "FilterError",
    "FilterReport",
    "HEDGE_WORDS",
    "JUDGE_INSTRUCTION",
    "KEPT",
    "REFUSAL_PATTERNS",
    "SHAPE_SYNONYMS",
    "Verdict",
    "agreement",
    "check_answer",
    "check_format",
    "check_hedging",
    "check_length",
    "check_refusal",
    "check_scene",
    "check_status",
    "confusion_table",
    "default_checks",
    "excerpt",
    "filter_traces",
    "find_duplicates",
    "injected_kinds",
    "is_refusal",
    "jaccard",
    "judge_messages",
    "judge_request_text",
    "judge_standard_answer",
    "judge_with_teacher",
    "kept_records",
    "length_check",
    "local_judge_reply",
    "parse_judge_reply",
    "parse_judge_request",
    "parse_record",
    "read_traces",
    "read_verdicts",
    "record_problem",
    "record_text",
    "report",
    "scene_problem",
    "shingles",
    "tasks_by_id",
    "top_reasons",
    "word_count",
    "write_verdicts",
]

"""Notebook 03: the answer check, scored against the local teacher's injection log, and the
hedging check against the library's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cotlib import stages
from cotlib.checks.core import Case, call, checker, miss, run_cases

_ANSWER_HINTS = {
    "multiple_choice": "for multiple choice an answer may be the option's letter or its text: "
                       "answers_match takes the task's choices and answer_letter",
    "reworded": "a real teacher words its answer freely ('Three.', 'The answer is (B).'): "
                "compare meanings with cotlib.normalize.answers_match, not strings",
    "clean": "this trace gives the standard answer: compare with answers_match (the grader "
             "evaluation uses) and return None when it matches",
    "wrong": "the CONCLUSION gives another answer than the task's: return 'answer:wrong' when "
             "answers_match says no",
    "no_conclusion": "no CONCLUSION (a malformed trace or a refusal): return None — check_format "
                     "and check_refusal name those traces",
    "no_answer": "imported data may come with no task (None) or no standard answer (None or ''): "
                 "return None, there is nothing to compare with",
    "reason": "name the reason exactly 'answer:wrong' (family:detail), so the report counts it "
              "with the library's",
}


def _reason(result: Any) -> Any:
    """A check's result without its detail: ``("answer:wrong", "...")`` -> ``"answer:wrong"``."""
    return result[0] if isinstance(result, tuple) and result else result


_ANSWER_CASES: dict[tuple[int, int], tuple[tuple, ...]] = {}  # built once per process


def answer_check_cases(n_tasks: int = 48, seed: int = 11) -> tuple[tuple, ...]:
    """The checker's traces: ``(name, record, task, injected, kind)`` per case.

    ``n_tasks`` traces come from the local teacher with faults switched on (``injected`` is the
    fault its log records for the trace: "clean", "malformed", "wrong_answer", "refusal"); a few
    more are clean traces reworded the way a real teacher writes, a trace cut before its
    CONCLUSION, and traces of tasks with no standard answer (``injected`` None for those).
    """
    if (n_tasks, seed) in _ANSWER_CASES:
        return _ANSWER_CASES[n_tasks, seed]
    import dataclasses
    import tempfile
    from pathlib import Path

    from cotlib import filtering, synth, teacher, teacher_server

    tasks = synth.make_tasks(n_tasks, seed=seed, mc_fraction=0.4)
    faults = teacher_server.Faults(rate_malformed=0.15, rate_wrong_answer=0.2, rate_refusal=0.1,
                                   seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "traces.jsonl"
        with teacher_server.LocalTeacher(faults) as server:
            config = teacher.TeacherConfig(model=teacher.LOCAL_MODEL, base_url=server.base_url,
                                           concurrency=1)
            teacher.run_generation(tasks, out, config, progress=False)
            injections = server.injections
        records = filtering.read_traces(out)
    by_id = {t.id: t for t in tasks}
    injected = filtering.injected_kinds(records, injections)
    cases = []
    for record, kind in zip(records, injected):
        task = by_id[record["task_id"]]
        has_conclusion = bool(stages.parse(record["text"]).stages.get("CONCLUSION"))
        what = ("wrong" if kind == "wrong_answer" else "no_conclusion" if not has_conclusion
                else "multiple_choice" if task.choices else "clean")
        cases.append((f"{task.id}, injected: {kind}", record, task, kind, what))
    clean = [(r, by_id[r["task_id"]]) for r, k in zip(records, injected) if k == "clean"]

    def reword(task) -> str:
        if task.choices:
            return f"The answer is ({task.answer_letter}) {task.answer}."
        if task.answer in ("yes", "no"):
            return f"{task.answer.capitalize()}, it is."
        if task.answer.isdigit():
            return f"There are {task.answer} in total."
        return f"The answer is {task.answer.capitalize()}."

    for record, task in clean[:6]:
        text = record["text"].replace(f"<CONCLUSION> {teacher.standard_answer(task)} ",
                                      f"<CONCLUSION> {reword(task)} ")
        cases.append((f"{task.id}, reworded: {reword(task)!r}", {**record, "text": text}, task,
                      None, "multiple_choice" if task.choices else "reworded"))
    record, task = clean[0]
    cut = record["text"].split("<CONCLUSION>")[0]
    cases.append((f"{task.id}, cut off before the CONCLUSION", {**record, "text": cut}, task,
                  None, "no_conclusion"))
    record, task = clean[1]
    cases.append((f"{task.id}, imported: no standard answer", record,
                  dataclasses.replace(task, answer=""), None, "no_answer"))
    cases.append((f"{task.id}, imported: no task", record, None, None, "no_answer"))
    _ANSWER_CASES[n_tasks, seed] = tuple(cases)
    return _ANSWER_CASES[n_tasks, seed]


@checker
def check_answer_check(fn: Callable, n_tasks: int = 48, seed: int = 11) -> bool:
    """Check a learner's ``answer_check(record, task)`` (``"answer:wrong"`` or None) against
    ``filtering.check_answer`` on traces from the local teacher with injected faults, explain the
    first disagreement, and score the learner's check against the teacher's injection log."""
    from cotlib import filtering, teacher

    title = "answer check"
    cases = answer_check_cases(n_tasks, seed)
    results, first = [], None
    for name, record, task, kind, what in cases:
        ok, got = call(title, name, fn, record, task, hint=_ANSWER_HINTS[what])
        if not ok:
            return False
        got, expected = _reason(got), _reason(filtering.check_answer(record, task))
        results.append((kind, got))
        if got != expected and first is None:
            first = (name, record, task, what, got, expected)
    if first is None:
        print(f"✅ {title}: the same verdict as filtering.check_answer on all {len(cases)} traces")
    else:
        name, record, task, what, got, expected = first
        conclusion = stages.parse(record["text"]).stages.get("CONCLUSION")
        standard = teacher.standard_answer(task) if task is not None and task.answer else None
        if standard and task.choices:
            standard = f"{standard} ({task.answer})"
        hint = _ANSWER_HINTS[what]
        if got is not None and expected is not None:
            hint = _ANSWER_HINTS["reason"]
        miss(title, name, repr(got), repr(expected), hint,
             f"CONCLUSION {conclusion!r}, standard answer {standard!r}")
    wrong = [got for kind, got in results if kind == "wrong_answer"]
    clean = [got for kind, got in results if kind == "clean"]
    print(f"   against the injection log: flagged {sum(g == 'answer:wrong' for g in wrong)} of "
          f"{len(wrong)} injected wrong answers (a perfect check: all) and "
          f"{sum(g is not None for g in clean)} of {len(clean)} clean traces (a perfect check: "
          "none)")
    return first is None


def hedging_cases() -> list[Case]:
    """The cases a learner's hedging check must pass, each with a hint.

    >>> [case.name for case in hedging_cases()][:2]
    ['a plain answer', "'maybe' in the conclusion"]
    """

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


@checker
def check_hedging_exercise(fn: Callable) -> bool:
    """Check a learner's hedging check against ``filtering.check_hedging`` (notebook 03)."""
    from cotlib.filtering import check_hedging

    cases = hedging_cases()
    for case in cases:  # the table must agree with the library, or the checker is wrong
        assert check_hedging(*case.args) == case.expected, case.name
    return run_cases("hedging check", fn, cases)

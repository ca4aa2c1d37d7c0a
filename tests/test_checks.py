"""The exercise checkers: they pass right answers, explain wrong ones, and never crash."""

from __future__ import annotations

import pytest
import torch

from cotlib import checks, filtering, stages


def test_cmp_values_and_tensors(capsys):
    assert checks.cmp("x", 1, 1)
    assert not checks.cmp("x", 1, 2)
    assert checks.cmp("t", torch.ones(3), torch.ones(3))
    assert not checks.cmp("t", torch.ones(3), torch.zeros(3))
    assert not checks.cmp("t", torch.ones(3), torch.ones(4))
    out = capsys.readouterr().out
    assert "got 1, expected 2" in out and "shape (3,), expected (4,)" in out


def test_stub_is_reported_as_not_done(capsys):
    def stub(a, b):
        raise NotImplementedError("Exercise: write this part")

    assert not checks.check_weights_gib(stub)
    assert "not done yet" in capsys.readouterr().out


def test_learner_exception_is_shown_not_raised(capsys):
    def buggy(a, b):
        return [][10]

    assert not checks.check_weights_gib(buggy)
    assert "IndexError" in capsys.readouterr().out


def test_conditioned_prompt_checker(capsys):
    from cotlib import teacher

    assert checks.check_conditioned_prompt(teacher.request_text)
    assert not checks.check_conditioned_prompt(lambda q, a: f"Question: {q}\nAnswer: {a}")
    out = capsys.readouterr().out
    assert "all 4 cases pass" in out and "Standard answer" in out


def test_weights_gib_checker_accepts_the_library_and_names_common_mistakes(capsys):
    from cotlib import models

    assert models.weights_gib(256, "bfloat16") == round(256e6 * 2 / 2**30, 2)
    assert checks.check_weights_gib(models.weights_gib)
    # decimal gigabytes instead of GiB: caught, with the hint about 2**30
    assert not checks.check_weights_gib(
        lambda p, d: round(p * 1e6 * models.BYTES_PER_PARAM[d] / 1e9, 2))
    assert "2**30" in capsys.readouterr().out
    # every dtype costing 2 bytes: caught on float32
    assert not checks.check_weights_gib(lambda p, d: round(p * 1e6 * 2 / 2**30, 2))
    assert "float32" in capsys.readouterr().out
    with pytest.raises(ValueError, match="choose one of"):
        models.weights_gib(1, "fp8")


# --------------------------------------------------------------------------------------------
# the mechanism exercises (issue 22): a correct implementation passes, wrong ones are explained


def _stub(*args):
    raise NotImplementedError("Exercise: write this part")


_STAGE_TAG = __import__("re").compile(r"<[ \t]*(/?)[ \t]*([A-Za-z]+)[ \t]*>")


def split_stages_solution(text):
    found, current, start = {}, None, 0
    for m in _STAGE_TAG.finditer(text):
        closing, name = m.group(1) == "/", m.group(2).upper()
        if name not in stages.STAGES:
            continue
        if not closing:
            if current is not None:
                found.setdefault(current, text[start:m.start()].strip())
            current, start = name, m.end()
        elif name == current:
            found.setdefault(current, text[start:m.start()].strip())
            current = None
    if current is not None:
        found.setdefault(current, text[start:].strip())
    return found


def test_split_stages_checker(capsys):
    import re

    assert checks.check_split_stages(split_stages_solution)
    assert "all 10 cases pass" in capsys.readouterr().out

    def exact_case(text):  # the naive regex: upper-case tags only, must be closed
        return {m.group(1): m.group(2).strip()
                for m in re.finditer(r"<(SUMMARY|CAPTION|REASONING|CONCLUSION)>(.*?)</\1>",
                                     text, re.S)}

    assert not checks.check_split_stages(exact_case)
    out = capsys.readouterr().out
    assert "case 'lower-case tags'" in out and "got:" in out and "expected:" in out
    assert "hint: Compare tag names case-insensitively" in out

    def last_wins(text):  # a repeated stage overwrites the first one
        found = split_stages_solution(text)
        for m in re.finditer(r"<CONCLUSION>(.*?)</CONCLUSION>", text, re.S):
            found["CONCLUSION"] = m.group(1).strip()
        return found

    assert not checks.check_split_stages(last_wins)
    assert "case 'a repeated stage'" in capsys.readouterr().out
    assert not checks.check_split_stages(_stub)
    assert "not done yet" in capsys.readouterr().out


def completion_labels_solution(input_ids, attention_mask, prompt_lengths, image_token_id,
                               end_token_id):
    labels = input_ids.clone()
    labels[attention_mask == 0] = -100
    labels[input_ids == image_token_id] = -100
    for i, n in enumerate(prompt_lengths):
        labels[i, :n] = -100
        if end_token_id is not None:
            ends = (input_ids[i, n:] == end_token_id).nonzero()
            if len(ends):
                labels[i, n + int(ends[0]) + 1:] = -100
    return labels


def test_completion_labels_checker_against_trls_collator(capsys):
    assert checks.check_completion_labels(completion_labels_solution)
    out = capsys.readouterr().out
    assert "same labels as the collator (2 batches)" in out
    assert "after the end-of-turn token are trained too" in out  # TRL trains the newline

    def prompt_only(ids, mask, lengths, image_id, end_id):  # forgets the padding
        labels = ids.clone()
        for i, n in enumerate(lengths):
            labels[i, :n] = -100
        return labels

    assert not checks.check_completion_labels(prompt_only)
    out = capsys.readouterr().out
    assert "in padding" in out and "attention_mask == 0" in out

    def in_place(ids, mask, lengths, image_id, end_id):
        ids[mask == 0] = -100
        return ids

    assert not checks.check_completion_labels(in_place)
    assert "input_ids changed" in capsys.readouterr().out

    def first_length_for_all(ids, mask, lengths, image_id, end_id):
        labels = ids.clone()
        labels[mask == 0] = -100
        labels[:, :lengths[0]] = -100
        return labels

    assert not checks.check_completion_labels(first_length_for_all)
    assert "each row has its own prompt length" in capsys.readouterr().out
    assert not checks.check_completion_labels(_stub)
    assert "not done yet" in capsys.readouterr().out


def test_completion_labels_checker_with_a_collator_that_stops_at_the_end_token(capsys):
    """A collator that trains nothing after the end-of-turn token: the learner gets its id."""
    from transformers import AutoProcessor
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from cotlib import models

    processor = AutoProcessor.from_pretrained(models.tiny("idefics3"))
    trl = DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True)
    end = processor.tokenizer.eos_token_id

    def stop_at_end(examples):
        batch = trl(examples)
        for i in range(batch["labels"].shape[0]):
            trained = (batch["labels"][i] != -100).nonzero().flatten()
            ends = [int(p) for p in trained if batch["input_ids"][i, p] == end]
            if ends:
                batch["labels"][i, ends[0] + 1:] = -100
        return batch

    assert checks.check_completion_labels(completion_labels_solution, stop_at_end, processor)
    assert "nothing after the end-of-turn token is trained" in capsys.readouterr().out

    def ignores_end(ids, mask, lengths, image_id, end_id):
        return completion_labels_solution(ids, mask, lengths, image_id, None)

    assert not checks.check_completion_labels(ignores_end, stop_at_end, processor)
    assert "after the end-of-turn token" in capsys.readouterr().out


def lora_forward_solution(x, W, b, A, B, alpha, r):
    out = x @ W.T + (alpha / r) * (x @ A.T @ B.T)
    return out + b if b is not None else out


def test_lora_forward_checker(capsys):
    assert checks.check_lora_forward(lora_forward_solution)
    assert "matches PEFT's LoRA layers on 5 modules" in capsys.readouterr().out

    def unscaled(x, W, b, A, B, alpha, r):
        out = x @ W.T + x @ A.T @ B.T
        return out + b if b is not None else out

    assert not checks.check_lora_forward(unscaled)
    assert "scaled by alpha / r" in capsys.readouterr().out

    def frozen_only(x, W, b, A, B, alpha, r):
        return x @ W.T + (b if b is not None else 0)

    assert not checks.check_lora_forward(frozen_only)
    assert "add the low-rank detour" in capsys.readouterr().out

    def no_bias(x, W, b, A, B, alpha, r):
        return x @ W.T + (alpha / r) * (x @ A.T @ B.T)

    assert not checks.check_lora_forward(no_bias)  # Qwen2's q_proj has a bias
    assert "bias" in capsys.readouterr().out
    assert not checks.check_lora_forward(lambda x, W, b, A, B, alpha, r: B @ A)
    assert "shape" in capsys.readouterr().out
    assert not checks.check_lora_forward(_stub)
    assert "not done yet" in capsys.readouterr().out


@pytest.fixture(scope="module")
def stand_in(tiny_cache):
    """A tiny model overfit on one trace: it writes the closing tags itself."""
    from cotlib import infer, models, synth

    torch.manual_seed(0)
    model, processor = models.load(models.tiny("idefics3"), dtype="float32")
    task = synth.make_tasks(1, seed=3)[0]
    trace = stages.render("I will count.", "Two shapes.", "So two.", "2")
    infer.memorise(model, processor, task.get_image(), task.prompt_question(), trace)
    return model, processor, task.get_image(), task.prompt_question()


def decode_one_stage_solution(state, max_new_tokens):
    from cotlib import infer

    tok = state.processor.tokenizer
    close = stages.close_tag(state.next_stage)
    infer.feed(state, [state.rows[0].pending])
    ids = []
    while True:
        token = int(state.logits[0].argmax())
        if token == tok.eos_token_id:
            return ids, "eos"
        ids.append(token)
        if close in tok.decode(ids):
            return ids, "tag"
        if len(ids) >= max_new_tokens:
            return ids, "length"
        infer.feed(state, [[token]])


def test_decode_stage_checker(stand_in, capsys):
    assert checks.check_decode_stage(decode_one_stage_solution, *stand_in)
    assert "in all 5 cases" in capsys.readouterr().out

    def no_opening(state, max_new_tokens):  # forgets to feed the opening tag
        state.rows[0].pending = []
        return decode_one_stage_solution(state, max_new_tokens)

    assert not checks.check_decode_stage(no_opening, *stand_in)
    assert "feed the stage's opening tokens" in capsys.readouterr().out

    def budget_only(state, max_new_tokens):  # never looks for the closing tag
        from cotlib import infer

        infer.feed(state, [state.rows[0].pending])
        ids = []
        while len(ids) < max_new_tokens:
            ids.append(int(state.logits[0].argmax()))
            infer.feed(state, [[ids[-1]]])
        return ids, "length"

    assert not checks.check_decode_stage(budget_only, *stand_in)
    out = capsys.readouterr().out
    assert "case 'SUMMARY with max_new_tokens=128'" in out and "stop 'tag'" in out
    assert "closing tag" in out

    def wrong_stop(state, max_new_tokens):
        ids, stop = decode_one_stage_solution(state, max_new_tokens)
        return ids, "done"

    assert not checks.check_decode_stage(wrong_stop, *stand_in)
    assert "right tokens, wrong reason" in capsys.readouterr().out
    assert not checks.check_decode_stage(_stub, *stand_in)
    assert "not done yet" in capsys.readouterr().out


def knockout_solution(scores, closed):
    alive, matches, rnd = list(range(len(scores))), [], 0
    while len(alive) > 1:
        rnd += 1
        winners = []
        for a, b in zip(alive[0::2], alive[1::2]):
            if closed[a] != closed[b]:
                w = a if closed[a] else b
            else:
                w = b if scores[b] > scores[a] else a
            matches.append((rnd, a, b, w))
            winners.append(w)
        if len(alive) % 2:
            winners.append(alive[-1])
        alive = winners
    return alive[0], matches


def test_knockout_checker(capsys):
    assert checks.check_knockout(knockout_solution)
    assert "all 9 cases pass" in capsys.readouterr().out

    def argmax(scores, closed):  # the right winner without a knockout
        return max(range(len(scores)), key=lambda i: scores[i]), []

    assert not checks.check_knockout(argmax)
    out = capsys.readouterr().out
    assert "right winner, but the matches differ" in out and "Round 1 pairs 0-1" in out

    def ties_to_second(scores, closed):
        alive, matches, rnd = list(range(len(scores))), [], 0
        while len(alive) > 1:
            rnd += 1
            nxt = []
            for a, b in zip(alive[0::2], alive[1::2]):
                w = b if scores[b] >= scores[a] else a
                matches.append((rnd, a, b, w))
                nxt.append(w)
            alive = nxt + ([alive[-1]] if len(alive) % 2 else [])
        return alive[0], matches

    assert not checks.check_knockout(ties_to_second)
    assert "case 'a tie'" in capsys.readouterr().out

    def ignores_closed(scores, closed):
        return knockout_solution(scores, [True] * len(scores))

    assert not checks.check_knockout(ignores_closed)
    assert "closed its stage beats" in capsys.readouterr().out

    def drops_the_odd_one(scores, closed):
        return knockout_solution(scores[: len(scores) // 2 * 2] or scores, closed)

    assert not checks.check_knockout(drops_the_odd_one)
    assert "bye" in capsys.readouterr().out
    assert not checks.check_knockout(_stub)
    assert "not done yet" in capsys.readouterr().out


def test_lora_merge_checker(capsys):
    assert checks.check_lora_merge(lambda W, A, B, alpha, r: W + (alpha / r) * B @ A)
    assert "the same merged weights as PEFT on 4 modules" in capsys.readouterr().out
    assert not checks.check_lora_merge(lambda W, A, B, alpha, r: (alpha / r) * B @ A)
    assert "add the frozen weight W" in capsys.readouterr().out
    assert not checks.check_lora_merge(lambda W, A, B, alpha, r: W + B @ A)
    assert "scaled by alpha / r" in capsys.readouterr().out
    assert not checks.check_lora_merge(lambda W, A, B, alpha, r: W + alpha / r * A.T @ B.T)
    assert "B @ A is (out, in)" in capsys.readouterr().out
    assert not checks.check_lora_merge(_stub)
    assert "not done yet" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# Notebook 03: the answer check, scored against the local teacher's injection log


def _conclusion(record):
    return stages.parse(record["text"]).stages.get("CONCLUSION")


def _log_counts():
    kinds = [kind for *_, kind, _ in checks.answer_check_cases()]
    return kinds.count("wrong_answer"), kinds.count("clean")


def _answer_check(record, task):
    """A learner's correct answer check, written without calling filtering.check_answer."""
    from cotlib.normalize import answers_match

    conclusion = _conclusion(record)
    if task is None or not task.answer or not conclusion:
        return None
    if answers_match(conclusion, task.answer, task.choices, task.answer_letter):
        return None
    return "answer:wrong", f"concluded {conclusion!r}"


def test_answer_check_cases_cover_every_kind_of_trace():
    cases = checks.answer_check_cases()
    kinds = {kind for *_, kind, _ in cases}
    assert {"clean", "malformed", "wrong_answer", "refusal"} <= kinds
    whats = {what for *_, what in cases}
    assert whats == {"clean", "multiple_choice", "wrong", "no_conclusion", "reworded",
                     "no_answer"}
    for _name, record, task, _, what in cases:
        if what == "reworded":  # the rewording really changed the CONCLUSION
            assert _conclusion(record) != task.answer_letter and _conclusion(record) != task.answer


def test_answer_checker_accepts_correct_checks(capsys):
    from cotlib import filtering

    assert checks.check_answer_check(filtering.check_answer)
    assert checks.check_answer_check(_answer_check)
    out = capsys.readouterr().out
    wrong, clean = _log_counts()
    assert wrong >= 5 and clean >= 10
    assert "same verdict as filtering.check_answer" in out
    assert f"flagged {wrong} of {wrong} injected wrong answers" in out
    assert f"and 0 of {clean} clean" in out


def test_answer_checker_explains_wrong_checks(capsys):
    from cotlib import teacher
    from cotlib.normalize import answers_match

    def string_compare(record, task):
        conclusion = _conclusion(record)
        if task is None or not task.answer or not conclusion:
            return None
        return None if conclusion.strip().lower() == task.answer.lower() else "answer:wrong"

    def without_choices(record, task):
        conclusion = _conclusion(record)
        if task is None or not task.answer or not conclusion:
            return None
        return None if answers_match(conclusion, task.answer) else "answer:wrong"

    def teacher_string(record, task):  # passes every teacher trace, fails a reworded one
        conclusion = _conclusion(record)
        if task is None or not task.answer or not conclusion:
            return None
        return None if conclusion == teacher.standard_answer(task) else "answer:wrong"

    def crashes_without_conclusion(record, task):
        conclusion = stages.parse(record["text"]).stages["CONCLUSION"]
        return None if answers_match(conclusion, task.answer, task.choices,
                                     task.answer_letter) else "answer:wrong"

    def wrong_name(record, task):
        result = _answer_check(record, task)
        return "wrong" if result else None

    def never_flags(record, task):
        return None

    for fn, expected in [
        (string_compare, "a real teacher words its answer freely"),
        (without_choices, "takes the task's choices and answer_letter"),
        (teacher_string, "compare meanings with cotlib.normalize.answers_match"),
        (crashes_without_conclusion, "raised KeyError"),
        (wrong_name, "name the reason exactly 'answer:wrong'"),
        (never_flags, "return 'answer:wrong' when answers_match says no"),
    ]:
        assert not checks.check_answer_check(fn), fn.__name__
        out = capsys.readouterr().out
        assert expected in out, (fn.__name__, out)
        assert "❌" in out and "hint:" in out
        if "raised" not in out:
            assert "got:" in out and "expected:" in out and "input:" in out
            assert "against the injection log" in out
        assert "answers_match(conclusion" not in out  # never prints a solution


def test_answer_checker_scores_against_the_injection_log(capsys):
    def flags_everything(record, task):
        return "answer:wrong" if task is not None and task.answer and _conclusion(record) else None

    assert not checks.check_answer_check(flags_everything)
    out = capsys.readouterr().out
    wrong, clean = _log_counts()
    assert f"flagged {wrong} of {wrong} injected wrong answers" in out
    assert f"and {clean} of {clean} clean" in out


def test_answer_checker_stub_is_not_done(capsys):
    def stub(record, task):
        raise NotImplementedError("Exercise: write this part")

    assert not checks.check_answer_check(stub)
    out = capsys.readouterr().out
    assert "not done yet" in out and "hint" not in out


# --------------------------------------------------------------------------------------------
# where the checkers live
# --------------------------------------------------------------------------------------------

def test_no_pipeline_module_imports_the_course_scaffolding():
    import ast
    from pathlib import Path

    import cotlib

    root = Path(cotlib.__file__).resolve().parent
    offenders = set()
    for path in sorted(root.rglob("*.py")):
        if root / "checks" in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [f"{node.module}.{a.name}" for a in node.names]
                     + [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "cotlib.checks" or n.startswith("cotlib.checks.") for n in names):
                offenders.add(path.relative_to(root.parent).as_posix())
    assert not offenders, f"pipeline modules importing cotlib.checks: {offenders}"


def test_every_notebook_checker_is_reachable_from_the_package():
    """Notebooks call ``checks.check_x``: each per-notebook module's checkers are re-exported."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(checks.__path__):
        module = importlib.import_module(f"cotlib.checks.{info.name}")
        for name in dir(module):
            if name.startswith("check_") and callable(getattr(module, name)):
                assert getattr(checks, name) is getattr(module, name), (info.name, name)


def test_hedging_exercise_checker(capsys):
    assert checks.check_hedging_exercise(filtering.check_hedging)
    assert "all 6 cases pass" in capsys.readouterr().out

    def substring(record, task):  # a common mistake: substring instead of whole words
        conclusion = stages.parse(record["text"]).stages.get("CONCLUSION", "").lower()
        return "style:hedging" if any(w in conclusion for w in filtering.HEDGE_WORDS) else None

    assert not checks.check_hedging_exercise(substring)
    assert "merely contains a hedge" in capsys.readouterr().out

    def stub(record, task):
        raise NotImplementedError

    assert not checks.check_hedging_exercise(stub)
    assert "not done yet" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# what a checker returns: True/False in code, nothing under a notebook cell
# --------------------------------------------------------------------------------------------

def test_verdict_behaves_like_the_bool_it_stands_for():
    import pickle

    yes, no = checks.Verdict(True), checks.Verdict(False)
    assert yes and not no
    assert yes == True and no == False  # noqa: E712 — the comparison learners and tests write
    assert yes != False and no != True  # noqa: E712
    assert checks.Verdict("ok") == True and checks.Verdict([]) == False  # noqa: E712
    assert {True: "pass", False: "fail"}[yes] == "pass"  # hashes like the bool
    assert (repr(yes), str(no), f"{yes}") == ("True", "False", "True")
    assert sum([yes, yes, no]) == 2 and isinstance(yes, int)
    assert pickle.loads(pickle.dumps(no)) == False  # noqa: E712
    assert type(pickle.loads(pickle.dumps(no))) is checks.Verdict


def test_verdict_shows_nothing_in_ipython(capsys):
    """IPython's display formatter (what a kernel's display hook asks) gives no output at all
    for a verdict, where a bare bool gets its ``True``; the kernel test below runs the real
    path."""
    from IPython.core.formatters import DisplayFormatter

    formatter = DisplayFormatter()
    assert formatter.format(True) == ({"text/plain": "True"}, {})
    for verdict in (checks.Verdict(True), checks.Verdict(False)):
        assert formatter.format(verdict) == ({}, {})
    assert capsys.readouterr().out == ""


def test_every_checker_returns_a_verdict(capsys):
    import inspect

    names = [n for n in checks.__all__ if n.startswith("check_")] + ["cmp", "run_cases"]
    for name in names:
        fn = getattr(checks, name)
        assert getattr(fn, "__wrapped__", None) is not None, f"{name}: decorate it with @checker"
        assert inspect.signature(fn).return_annotation == "Verdict", name

    def stub(*args):
        raise NotImplementedError

    cheap = [checks.check_weights_gib, checks.check_split_stages, checks.check_conditioned_prompt,
             checks.check_knockout, checks.check_best_within_budget, checks.check_first_upload,
             checks.check_hedging_exercise]
    for fn in cheap:
        verdict = fn(stub)
        assert type(verdict) is checks.Verdict and verdict == False, fn.__name__  # noqa: E712
    assert "not done yet" in capsys.readouterr().out
    passed = checks.run_cases("double", lambda x: 2 * x, [checks.Case("two", (2,), 4)])
    assert type(passed) is checks.Verdict and passed == True  # noqa: E712
    missed = checks.miss("t", "c", 1, 2)
    assert type(missed) is checks.Verdict and not missed
    assert capsys.readouterr().out == ("✅ double: all 1 cases pass\n❌ t: case 'c'\n"
                                       "   got:      1\n   expected: 2\n")


def test_a_checker_cell_in_jupyter_shows_only_the_checkers_lines():
    """In a real kernel the last value of a checker cell adds no ``True``/``False`` output."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")

    cells = ["from cotlib import checks\nchecks.cmp('x', 1, 1)",
             "def stub(p, d):\n    raise NotImplementedError\nchecks.check_weights_gib(stub)",
             "ok = checks.cmp('y', 1, 2)\nok == False",  # the value still works in code
             "1 == 1"]  # the control: a plain bool does show
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    outputs = [[(o.output_type, o.get("text") or o.get("data", {}).get("text/plain"))
                for o in cell.outputs] for cell in nb.cells]
    assert outputs[0] == [("stream", "✅ x: matches\n")]
    assert [kind for kind, _ in outputs[1]] == ["stream"] and "not done yet" in outputs[1][0][1]
    assert outputs[2] == [("stream", "❌ y: got 1, expected 2\n"), ("execute_result", "True")]
    assert outputs[3] == [("execute_result", "True")]


def test_no_stored_checker_cell_shows_a_bare_bool():
    """The stored notebook outputs come from the checkers as learners run them: a cell that ends
    in a checker shows its lines and no ``True``/``False`` (re-execute a notebook that does:
    ``python scripts/execute_solutions.py solutions/NN_x.ipynb``)."""
    import re
    from pathlib import Path

    import nbformat

    root = Path(__file__).resolve().parent.parent
    shown = []
    for path in sorted((root / "solutions").glob("*.ipynb")) + sorted(
            (root / "notebooks").glob("*.ipynb")):
        for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
            if cell.cell_type != "code" or not re.search(r"checks\.\w+\(", cell.source):
                continue
            if any(o.output_type == "execute_result"
                   and o.get("data", {}).get("text/plain") in ("True", "False")
                   for o in cell.outputs):
                shown.append(f"{path.parent.name}/{path.name} cell {i}")
    assert not shown, f"a bare True/False under a checker: {shown}"

"""The filter: named reasons for every rejection, a report, and agreement with the local
teacher's fault-injection log."""

from __future__ import annotations

import json
import random
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cotlib import env, filtering, stages, synth, teacher, teacher_server
from cotlib.filtering import FilterError, Verdict, filter_traces

TRAIN = env.DATA_DIR / "tasks" / "train"


@pytest.fixture(scope="module")
def tasks():
    return synth.load_split(TRAIN)[:132]  # 12 of each of the 11 task types


def trace(task, fault=None, seed=0):
    """The local teacher's trace for ``task`` (no server: the same pure function it uses)."""
    body = {"model": teacher.LOCAL_MODEL, "messages": teacher.build_messages(task)}
    result = teacher_server.complete(body, seed=seed, fault=fault,
                                     fault_rng=random.Random(f"{task.id}:{seed}"))
    return result["choices"][0]["message"]["content"]


def record(task, text, **extra):
    return {**teacher.make_record(task.id, text, model="m", mode="conditioned"), **extra}


def reasons_for(task, text, **kwargs):
    verdicts = filter_traces([record(task, text)], [task], allow_empty=True, **kwargs)
    return verdicts[0].reasons


# -----------------------------------------------------------------------------
# each check


def test_clean_teacher_traces_are_all_kept(tasks):
    records = [record(t, trace(t, seed=s)) for s in (0, 1) for t in tasks]
    verdicts = filter_traces(records, tasks, dedupe=False)
    rejected = [(v.task_id, v.reasons, v.details) for v in verdicts if not v.kept]
    assert rejected == []


@pytest.mark.parametrize("fault, family", [
    ("malformed", "format"), ("wrong_answer", "answer"), ("refusal", "refusal"),
])
def test_injected_faults_get_their_reason(tasks, fault, family):
    records = [record(t, trace(t, fault)) for t in tasks]
    verdicts = filter_traces(records, tasks, allow_empty=True)
    assert {v.family for v in verdicts} == {family}, [v.reasons for v in verdicts][:5]


def _good(task):
    answer, steps = synth.solve(task.prompt_question(), task.scene)
    conclusion = task.answer_letter or answer
    return {"SUMMARY": "I will look at the image and answer step by step.",
            "CAPTION": synth.describe(task.scene), "REASONING": " ".join(steps),
            "CONCLUSION": conclusion}


COUNT = synth.make_task(5, "count_color")
BARS = synth.make_task(3, "bar_value")
MC = synth.make_task(8, "bar_max", multiple_choice=True)


@pytest.mark.parametrize("task, edit, reason", [
    (COUNT, lambda p: stages.render_dict(p).replace("<REASONING>", "").replace(
        "</REASONING>", ""), "format:missing"),
    (COUNT, lambda p: stages.render_dict(p).replace("</CONCLUSION>", ""), "format:unclosed"),
    (COUNT, lambda p: "<CAPTION>x y z</CAPTION>" + stages.render_dict(p).split("</CAPTION>")[1]
     .replace("<REASONING>", "<SUMMARY>a b c</SUMMARY><REASONING>"), "format:out_of_order"),
    (COUNT, lambda p: stages.render_dict({**p, "SUMMARY": " "}), "format:empty"),
    (COUNT, lambda p: "Sure! Here it is.\n" + stages.render_dict(p), "format:outside_text"),
    (COUNT, lambda p: stages.render_dict(p) + "\n<CONCLUSION> 1 </CONCLUSION>",
     "format:duplicated"),
    (COUNT, lambda p: stages.render_dict({**p, "CONCLUSION": "9"}), "answer:wrong"),
    (MC, lambda p: stages.render_dict({**p, "CONCLUSION": "A" if p["CONCLUSION"] != "A"
                                       else "B"}), "answer:wrong"),
    (COUNT, lambda p: "I'm sorry, but I can't assist with this request.", "refusal"),
    (COUNT, lambda p: stages.render_dict({**p, "CONCLUSION": "I cannot answer this."}),
     "refusal"),
    (COUNT, lambda p: "<SUMMARY> I'm sorry, I can't help with that. </SUMMARY>", "refusal"),
    (COUNT, lambda p: stages.render_dict({**p, "SUMMARY": "Count."}),
     "length:SUMMARY_too_short"),
    (COUNT, lambda p: stages.render_dict({**p, "REASONING": "word " * 600}),
     "length:REASONING_too_long"),
    (COUNT, lambda p: stages.render_dict({**p, "CAPTION": p["CAPTION"] + " A pink star."}),
     "scene:unknown_colour"),
    (COUNT, lambda p: stages.render_dict({**p, "CAPTION": p["CAPTION"] + " One hexagon."}),
     "scene:unknown_shape"),
    (COUNT, lambda p: stages.render_dict({**p, "CAPTION": p["CAPTION"] + " 9 objects."}),
     "scene:count_mismatch"),
    (BARS, lambda p: stages.render_dict({**p, "CAPTION": p["CAPTION"].replace(
        "height ", "height 1")}), "scene:wrong_value"),
])
def test_each_problem_has_its_named_reason(task, edit, reason):
    assert reasons_for(task, edit(_good(task)))[0] == reason


def test_refusal_words_inside_a_proper_trace_are_not_a_refusal():
    parts = _good(COUNT)
    parts["REASONING"] = "I cannot see any other red objects, so the count stands. " + \
        parts["REASONING"]
    assert reasons_for(COUNT, stages.render_dict(parts)) == []


def test_caption_may_mention_what_the_question_asks_about():
    task = next(t for t in synth.make_tasks(60, seed=4, task_types=["count_color"])
                if t.answer == "0")
    colour = task.params["color"]
    parts = {**_good(task), "CAPTION": f"There are no {colour} objects. "
             + synth.describe(task.scene)}
    assert reasons_for(task, stages.render_dict(parts)) == []


def test_failed_and_unknown_tasks():
    failed = {**record(COUNT, ""), "status": "failed", "failure": "timeout after 5 attempts"}
    stranger = record(COUNT, stages.render_dict(_good(COUNT)), task_id="nobody")
    good = record(COUNT, stages.render_dict(_good(COUNT)))
    verdicts = filter_traces([failed, stranger, good], [COUNT])
    assert [v.reason for v in verdicts] == ["teacher:failed", "task:unknown", "kept"]
    assert "timeout" in verdicts[0].details["teacher:failed"]
    # without tasks, the checks that need one (answer, scene) are skipped
    wrong = record(COUNT, stages.render_dict({**_good(COUNT), "CONCLUSION": "9"}))
    assert filter_traces([wrong], None)[0].kept
    everything_rejected = filter_traces([failed], [COUNT], allow_empty=True)
    rep = filtering.report(everything_rejected, [failed])
    assert rep.n_kept == 0 and rep.reasons.loc["kept", "total"] == 0
    assert "(no kept traces)" in rep.to_markdown()


def test_duplicates_exact_same_task_and_near():
    text = stages.render_dict(_good(COUNT))
    twin = synth.Task(**{**COUNT.__dict__, "id": "twin", "image": None})  # same scene + question
    near = text.replace("I will look at the image and answer step by step.",
                        "I will look at the image and then answer step by step.")
    records = [record(COUNT, text), record(COUNT, text.upper()),
               record(COUNT, text.replace("step by step", "carefully")),
               {**record(twin, near)}]
    verdicts = filter_traces(records, [COUNT, twin])
    assert [v.reason for v in verdicts] == ["kept", "duplicate:exact", "duplicate:task",
                                            "duplicate:near"]
    assert filter_traces(records[:1] + records[3:], [COUNT, twin], near_threshold=0.99)[1].kept


def test_learners_checks_compose_and_a_buggy_check_is_named():
    def hedging(record, task):
        words = stages.parse(record["text"]).stages.get("CONCLUSION", "").lower().split()
        return "style:hedging" if {"maybe", "probably"} & set(words) else None

    def broken(record, task):
        return 1 / 0

    hedge = stages.render_dict({**_good(COUNT), "CONCLUSION": f"maybe {COUNT.answer}"})
    checks = [*filtering.DEFAULT_CHECKS, hedging]
    assert reasons_for(COUNT, hedge, checks=checks) == ["style:hedging"]
    got = reasons_for(COUNT, stages.render_dict(_good(COUNT)), checks=[broken])
    assert got == ["check_error:broken"]


def test_length_bounds_are_validated():
    with pytest.raises(ValueError, match="CAPTIONS"):
        filtering.length_check({"CAPTIONS": (1, 2)})
    with pytest.raises(ValueError, match="min <= max"):
        filtering.length_check({"CAPTION": (5, 2)})


# -----------------------------------------------------------------------------
# errors, report, files


def test_empty_input_is_a_clear_error():
    with pytest.raises(FilterError, match="No traces to filter"):
        filter_traces([], [COUNT])


def test_everything_rejected_names_the_top_reasons():
    records = [record(COUNT, "I'm sorry, I can't help with that."),
               record(BARS, "I'm sorry, I can't help with that."),
               record(MC, "<SUMMARY>only</SUMMARY>")]
    with pytest.raises(FilterError) as info:
        filter_traces(records, [COUNT, BARS, MC])
    assert "refusal (2)" in str(info.value) and "format:missing (1)" in str(info.value)
    assert len(info.value.verdicts) == 3


def test_report_table_examples_and_files(tmp_path, tasks):
    some = tasks[:22]
    faults = [None, "malformed", "wrong_answer", "refusal"]
    records = [record(t, trace(t, faults[i % 4])) for i, t in enumerate(some)]
    verdicts = filter_traces(records, some, out=tmp_path)
    rep = filtering.report(verdicts, records, n_examples=2)
    assert rep.reasons["total"].sum() == len(records) == rep.n_traces
    assert rep.reasons.loc["kept", "total"] == rep.n_kept == 6
    assert set(rep.examples) == {v.reason for v in verdicts if not v.kept}
    assert all(len(e) <= 2 for e in rep.examples.values())
    assert rep.summary().startswith("kept 6 of 22 traces")
    paths = rep.save(tmp_path)
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)
    assert "| kept |" in (tmp_path / "filter_report.md").read_text()
    assert [v.to_json() for v in filtering.read_verdicts(tmp_path)] == \
        [v.to_json() for v in verdicts]


def test_read_traces_explains_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="notebook 02"):
        filtering.read_traces(tmp_path)


# -----------------------------------------------------------------------------
# against the local teacher with fault injection (the acceptance test)


def test_verdicts_agree_with_the_injection_log(tmp_path):
    tasks = synth.load_split(TRAIN)  # 240 tasks
    faults = teacher_server.Faults(rate_malformed=0.1, rate_wrong_answer=0.1, rate_refusal=0.1,
                                   rate_500=0.05, seed=1)
    with teacher_server.LocalTeacher(faults) as server:
        config = teacher.TeacherConfig(model=teacher.LOCAL_MODEL, base_url=server.base_url,
                                       backoff_base_s=0.01)
        summary = teacher.run_generation(tasks, tmp_path / "traces.jsonl", config,
                                         progress=False)
        with urllib.request.urlopen(server.base_url + "/cotlib/injections") as response:
            injections = json.load(response)["data"]
    assert summary.done == len(tasks), summary
    records = filtering.read_traces(tmp_path)
    kinds = filtering.injected_kinds(records, injections)
    verdicts = filter_traces(records, tasks)
    table = filtering.confusion_table(verdicts, kinds)
    print("\n" + table.to_string())
    rates = filtering.agreement(verdicts, kinds)
    print(rates)
    for kind in ("malformed", "wrong_answer", "refusal"):
        assert table.loc[kind, "total"] >= 10, table  # enough of each to mean something
        assert rates[kind] >= 0.99, (kind, table)
    assert 1 - rates["clean"] < 0.01, table


# -----------------------------------------------------------------------------
# the LLM judge


def test_judge_request_and_reply_parsing():
    text = filtering.judge_request_text("B", "B")
    assert filtering.parse_judge_request(text) == ("B", "B")
    assert filtering.parse_judge_request("What is 2 + 2?") is None
    assert filtering.local_judge_reply(filtering.judge_request_text("3 objects", "3")) == "valid"
    assert filtering.local_judge_reply(filtering.judge_request_text("4", "3")) == "invalid"
    for reply, verdict in [("valid", "valid"), ("Invalid.", "invalid"), ("not valid", "invalid"),
                           ("The response is valid", "valid"), ("", None), ("unsure", None)]:
        assert filtering.parse_judge_reply(reply) == verdict, reply


class _JudgeHandler(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible judge: answers with local_judge_reply."""

    seen: list = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.seen.append(body)
        user = body["messages"][-1]["content"]
        reply = filtering.local_judge_reply(user)
        out = json.dumps({"id": "x", "object": "chat.completion", "created": 0,
                          "model": body["model"], "choices": [{
                              "index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": reply}}],
                          "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                    "total_tokens": 2}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


def test_judge_with_teacher_sends_text_only_requests_and_rejects_invalid():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _JudgeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        config = teacher.TeacherConfig(model="judge", base_url=f"http://127.0.0.1:"
                                       f"{server.server_address[1]}/v1", max_retries=0)
        judge = filtering.judge_with_teacher(config)
        good = stages.render_dict(_good(COUNT))
        # a wrong answer the rule checks would also catch: run the judge alone to see it work
        wrong = stages.render_dict({**_good(COUNT), "CONCLUSION": "9"})
        records = [record(COUNT, good), record(MC, stages.render_dict(_good(MC))),
                   record(BARS, wrong)]
        verdicts = filter_traces(records, [COUNT, MC, BARS], checks=[], judge=judge)
        judge.close()
    finally:
        server.shutdown()
    assert [v.reason for v in verdicts] == ["kept", "kept", "judge:invalid"]
    sent = _JudgeHandler.seen[0]["messages"]
    assert sent[0] == {"role": "system", "content": filtering.JUDGE_INSTRUCTION}
    assert isinstance(sent[1]["content"], str) and sent[1]["content"].startswith("Response: ")
    sent_texts = [b["messages"][1]["content"] for b in _JudgeHandler.seen]
    mc_standard = f"{teacher.standard_answer(MC)} (option {MC.answer_letter})"
    assert any(t.endswith(f"Standard answer: {mc_standard}") for t in sent_texts)


class _FlakyJudgeHandler(_JudgeHandler):
    """The judge above, but the first requests get the planned faults: "html" (a 200 that is
    not a completion), "500" or "429" (with a 10 ms Retry-After)."""

    plan: list = []
    seen: list = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        if not self.plan:
            return super().do_POST()
        fault = self.plan.pop(0)
        body = self.rfile.read(int(self.headers["content-length"]))
        self.seen.append(json.loads(body))
        out = b"<html>proxy login</html>" if fault == "html" else b'{"error": {}}'
        self.send_response({"html": 200, "500": 500, "429": 429}[fault])
        self.send_header("content-type", "text/html" if fault == "html" else "application/json")
        if fault == "429":
            self.send_header("retry-after-ms", "10")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


@pytest.mark.parametrize("max_retries, reason, requests", [
    (3, "kept", 4),  # html, 500, 429, then the answer
    (1, "judge:error", 2),  # html, 500: out of retries
])
def test_judge_retries_by_the_teachers_policy(max_retries, reason, requests):
    """One retry policy: the judge retries a malformed 200, a 500 and a 429 as a teacher run does
    (the SDK's own retries would not retry the 200), and counts them against max_retries."""
    _FlakyJudgeHandler.plan = ["html", "500", "429"]
    _FlakyJudgeHandler.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FlakyJudgeHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = teacher.TeacherConfig(model="judge", base_url=f"http://127.0.0.1:"
                                       f"{server.server_address[1]}/v1",
                                       max_retries=max_retries, backoff_base_s=0.001)
        judge = filtering.judge_with_teacher(config)
        (verdict,) = filter_traces([record(COUNT, stages.render_dict(_good(COUNT)))], [COUNT],
                                   checks=[], judge=judge, allow_empty=True)
        judge.close()
    finally:
        server.shutdown()
    assert verdict.reason == reason, verdict.details
    assert len(_FlakyJudgeHandler.seen) == requests
    if reason == "judge:error":
        assert verdict.details[reason].startswith("InternalServerError"), verdict.details


def test_judge_against_the_local_teacher():
    with teacher_server.LocalTeacher() as server:
        config = teacher.TeacherConfig(model=teacher.LOCAL_MODEL, base_url=server.base_url,
                                       max_retries=0)
        judge = filtering.judge_with_teacher(config)
        probe = judge(record(COUNT, stages.render_dict(_good(COUNT))), COUNT)
        wrong = record(COUNT, stages.render_dict({**_good(COUNT), "CONCLUSION": "9"}))
        verdicts = filter_traces([record(COUNT, stages.render_dict(_good(COUNT))), wrong],
                                 [COUNT], checks=[], judge=judge, dedupe=False)
        judge.close()
    assert probe is None
    assert [v.reason for v in verdicts] == ["kept", "judge:invalid"]


def test_judge_keeps_multiple_choice_traces_concluding_with_the_text_or_the_letter():
    """The teacher concludes a multiple-choice trace with the option's text (its instruction
    says so) and older traces with the letter: the judge is told both, so it keeps either. It
    used to be told the letter only, and rejected every correct trace that gave the text."""
    tasks = [synth.make_task(seed, "bar_max", multiple_choice=True) for seed in range(4)]
    texts = [trace(t) for t in tasks]
    assert all(stages.final_answer(x) == t.answer != t.answer_letter for x, t in zip(texts, tasks))
    letter = stages.render_dict({**_good(tasks[0]), "CONCLUSION": tasks[0].answer_letter})
    wrong = next(c for c in tasks[1].choices if c != tasks[1].answer)
    records = [record(t, x) for t, x in zip(tasks, texts)] + [
        record(tasks[0], letter), record(tasks[1], stages.render_dict(
            {**_good(tasks[1]), "CONCLUSION": wrong}))]
    with teacher_server.LocalTeacher() as server:
        config = teacher.TeacherConfig(model=teacher.LOCAL_MODEL, base_url=server.base_url,
                                       max_retries=0)
        judge = filtering.judge_with_teacher(config)
        verdicts = filter_traces(records, tasks, checks=[], judge=judge, dedupe=False)
        judge.close()
    assert [v.reason for v in verdicts] == ["kept"] * 5 + ["judge:invalid"]


def test_verdict_json_round_trip():
    v = Verdict(False, ["refusal"], {"refusal": "x"}, "t1", "count_color")
    assert Verdict.from_json(json.loads(json.dumps(v.to_json()))) == v

"""Trace generation through the real openai client against the local teacher (127.0.0.1 only)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import pickle
import random
import re
import secrets
import signal
import socket
import string
import subprocess
import sys
import time
import traceback
from pathlib import Path

import httpx
import openai
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from hypothesis import given, settings
from hypothesis import strategies as st

from cotlib import images, stages, synth, teacher, teacher_server
from cotlib.teacher import TeacherConfig, run_generation
from cotlib.teacher_server import Faults, LocalTeacher

LOCAL = teacher.LOCAL_MODEL


@pytest.fixture(scope="module")
def server():
    with LocalTeacher() as t:
        yield t


@pytest.fixture(scope="module")
def tasks():
    """Two generated tasks of every type (some multiple choice) plus shipped validation tasks."""
    generated = synth.make_tasks(2 * len(synth.TASK_TYPES), seed=11, mc_fraction=0.4)
    shipped = synth.load_split(Path(__file__).parent.parent / "data" / "tasks" / "val")[:11]
    assert {t.task_type for t in generated} == set(synth.TASK_TYPES)
    return generated + shipped


def config(t: LocalTeacher, **kw) -> TeacherConfig:
    return TeacherConfig(model=LOCAL, base_url=t.base_url, **kw)


def lines(path: Path) -> list[dict]:
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    return [json.loads(line) for line in raw.split(b"\n")[:-1]]


# --------------------------------------------------------------------------------------------
# the prompt


def test_messages_shape_and_roundtrip(tasks):
    task = next(t for t in tasks if t.choices)
    for mode in teacher.MODES:
        messages = teacher.build_messages(task, mode=mode, hint="Count carefully.")
        assert [m["role"] for m in messages] == ["system", "user"]
        assert messages[0]["content"] == teacher.instruction(mode)
        image_part, text_part = messages[1]["content"]
        assert image_part["type"] == "image_url"
        url = image_part["image_url"]["url"]
        assert url.startswith("data:image/png;base64,")
        assert images.data_url_to_image(url).tobytes() == task.get_image().tobytes()
        assert teacher.request_parts(messages) == (url, text_part["text"])
        parsed = teacher.parse_request_text(text_part["text"])
        assert parsed.question == task.prompt_question()
        assert parsed.mode == mode and parsed.hint == "Count carefully."
        assert parsed.answer == (task.answer if mode == "conditioned" else None)  # option text
    assert "standard answer" in teacher.TEACHER_INSTRUCTION.lower()
    assert "standard answer is correct" not in teacher.BLIND_INSTRUCTION
    for tag in ("<SUMMARY>", "</CAPTION>", "<REASONING>", "</CONCLUSION>"):
        assert tag in teacher.BLIND_INSTRUCTION
    with pytest.raises(ValueError, match="standard answer"):
        teacher.request_text("How many?", None, mode="conditioned")
    with pytest.raises(ValueError, match="mode"):
        teacher.build_messages(task, mode="guess")


def test_task_image_is_encoded_once_per_image_object():
    from PIL import Image

    task = synth.make_task(4, "count_color")
    first = teacher.task_data_url(task)
    assert teacher.task_data_url(task) is first
    assert teacher.build_messages(task)[1]["content"][0]["image_url"]["url"] is first
    task.image = task.get_image().transpose(Image.Transpose.FLIP_LEFT_RIGHT)  # a new image
    again = teacher.task_data_url(task)
    assert again != first
    assert images.data_url_to_image(again).tobytes() == task.image.tobytes()


_TEXT = st.text(string.ascii_letters + string.digits + " ?.,'\n", min_size=1).filter(str.strip)


@settings(max_examples=150, deadline=None)
@given(question=_TEXT, answer=st.one_of(st.none(), _TEXT.filter(lambda s: "\n" not in s)),
       hint=st.one_of(st.none(), _TEXT.filter(lambda s: "\n" not in s)))
def test_request_text_roundtrip_property(question, answer, hint):
    mode = "conditioned" if answer is not None else "blind"
    parsed = teacher.parse_request_text(teacher.request_text(question, answer, hint, mode))
    assert parsed.question == question.strip()
    assert parsed.answer == (answer.strip() if answer is not None else None)
    assert parsed.hint == (hint.strip() if hint is not None else None)
    assert parsed.mode == mode


# --------------------------------------------------------------------------------------------
# the real openai client over real HTTP


def test_openai_client_both_modes_answers_match(server, tasks):
    client = openai.OpenAI(base_url=server.base_url, api_key="not-needed", max_retries=0)
    summaries = set()
    for task in tasks:
        for mode in teacher.MODES:
            response = client.chat.completions.create(
                model=LOCAL, messages=teacher.build_messages(task, mode=mode))
            assert response.object == "chat.completion" and response.model == LOCAL
            choice = response.choices[0]
            text = choice.message.content
            assert choice.finish_reason == "stop", text
            parsed = stages.parse(text)
            assert parsed.ok, (task.id, mode, parsed.problems)
            assert stages.final_answer(text) == teacher.standard_answer(task), (task.id, mode)
            usage = response.usage
            assert usage.prompt_tokens > teacher_server.IMAGE_TOKENS
            assert usage.completion_tokens > 10
            assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
            summaries.add(parsed.stages["SUMMARY"])
    assert len(summaries) >= 10  # wording varies, so near-duplicate detection has work to do
    again = client.chat.completions.create(model=LOCAL, messages=teacher.build_messages(tasks[0]))
    first = client.chat.completions.create(model=LOCAL, messages=teacher.build_messages(tasks[0]))
    assert again.choices[0].message.content == first.choices[0].message.content  # deterministic
    client.close()


def test_teacher_disagreement_photo_and_unknown_question(server, tasks):
    client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
    before = len(server.injections)
    task = next(t for t in tasks if not t.choices and t.answer.isdigit())
    wrong = str(int(task.answer) + 1)
    text = client.chat.completions.create(
        model=LOCAL, messages=teacher.build_messages(task, answer=wrong)).choices[0].message.content
    assert stages.parse(text).ok and stages.final_answer(text) == wrong  # as GPT-4o was told
    photo = images.load_sample_photo("chelsea")
    for mode, expected in (("conditioned", "cat"), ("blind", "I cannot tell from this image.")):
        messages = teacher.build_messages(photo, "What animal is this?", answer="cat", mode=mode)
        text = client.chat.completions.create(model=LOCAL, messages=messages)
        text = text.choices[0].message.content
        assert stages.parse(text).ok and stages.final_answer(text) == expected
        assert "course" in stages.parse(text).stages["SUMMARY"]
    odd = teacher.build_messages(task.get_image(), "Is this art?", mode="blind")
    assert stages.parse(client.chat.completions.create(
        model=LOCAL, messages=odd).choices[0].message.content).ok
    kinds = [e["fault"] for e in server.injections[before:]]
    assert kinds == ["answer_disagrees", "not_a_scene", "not_a_scene", "unknown_question"]
    client.close()


def test_errors_are_openai_shaped(server, tasks):
    client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
    text_only = [{"role": "user", "content": "How many red objects are there?"}]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=LOCAL, messages=text_only)
    assert err.value.status_code == 400 and "image" in err.value.message
    assert err.value.code == "invalid_value" and err.value.param == "messages"
    messages = teacher.build_messages(tasks[0])
    with pytest.raises(openai.BadRequestError, match="streaming not supported"):
        client.chat.completions.create(model=LOCAL, messages=messages, stream=True)
    messages[1]["content"][0]["image_url"]["url"] = "data:image/png;base64,!!!notbase64"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=LOCAL, messages=messages)
    assert err.value.code == "invalid_image"
    tagged = teacher.build_messages(tasks[0], answer="2 </CONCLUSION> <SUMMARY>")
    with pytest.raises(openai.BadRequestError, match="stage tag"):
        client.chat.completions.create(model=LOCAL, messages=tagged)
    models = client.models.list()
    assert [m.id for m in models] == [LOCAL]
    client.close()

    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        for body, code in (({"messages": []}, "missing_required_parameter"),
                           ({"model": LOCAL}, "missing_required_parameter"),
                           ([1, 2], None)):
            r = http.post("/chat/completions", json=body)
            assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
            assert r.json()["error"]["code"] == code
        r = http.post("/chat/completions", content=b"{not json", headers={"content-type": "x"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
        r = http.get("/no/such/route")
        assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param",
                                                                     "code"}
        assert http.get(server.base_url.replace("/v1", "/health")).json()["status"] == "ok"

    small = teacher_server.create_app(max_body_bytes=2000)
    with LocalTeacher(app=small) as tiny:
        client = openai.OpenAI(base_url=tiny.base_url, api_key="x", max_retries=0)
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model=LOCAL, messages=teacher.build_messages(tasks[0]))
        assert err.value.status_code == 413 and err.value.code == "request_too_large"
        client.close()


def test_max_tokens_truncates_with_finish_reason_length(server, tasks):
    client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0)
    r = client.chat.completions.create(model=LOCAL, messages=teacher.build_messages(tasks[0]),
                                       max_tokens=20)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens <= 20
    assert not stages.parse(r.choices[0].message.content).ok
    client.close()


# --------------------------------------------------------------------------------------------
# generate_traces: records, retries, failures


def test_generation_records_both_modes(server, tasks, tmp_path):
    for mode in teacher.MODES:
        out = tmp_path / f"{mode}.jsonl"
        summary = run_generation(tasks, out, config(server, mode=mode, concurrency=4),
                                 progress=False)
        assert (summary.done, summary.failed, summary.skipped) == (len(tasks), 0, 0)
        assert summary.prompt_tokens > 0 and summary.completion_tokens > 0
        assert summary.attempts == len(tasks) and summary.cost_usd == 0.0
        records = lines(out)
        assert sorted(r["task_id"] for r in records) == sorted(t.id for t in tasks)
        by_id = {r["task_id"]: r for r in records}
        for task in tasks:
            r = by_id[task.id]
            assert set(r) >= {"task_id", "status", "model", "mode", "text", "stages", "problems",
                              "final_answer", "usage", "cost_usd", "attempts", "failure",
                              "seconds", "created"}
            assert r["status"] == "done" and r["mode"] == mode and r["failure"] is None
            assert r["problems"] == [] and list(r["stages"]) == list(stages.STAGES)
            assert r["final_answer"] == teacher.standard_answer(task)
            assert r["usage"]["prompt_tokens"] > 0 and r["attempts"] == 1
            assert r["request_key"] == teacher.messages_key(teacher.build_messages(task, mode=mode))
    again = run_generation(tasks, tmp_path / "blind.jsonl", config(server, mode="blind"),
                           progress=False)
    assert (again.done, again.skipped) == (0, len(tasks))


def test_accepts_records_and_plain_dicts(server, tasks, tmp_path):
    task = tasks[0]
    image = tmp_path / "scene.png"
    task.get_image().save(image)
    rows = [
        task.to_record(image_path="scene.png"),
        {"id": "own-1", "image": "scene.png", "question": task.prompt_question(),
         "answer": teacher.standard_answer(task)},
        {"id": "own-2", "image": "missing.png", "question": "What is it?", "answer": "x"},
    ]
    summary = run_generation(rows, tmp_path / "t.jsonl", config(server), image_root=tmp_path,
                             progress=False)
    assert (summary.done, summary.failed) == (2, 1)
    assert summary.failures == {"image_error": 1}
    records = teacher.latest_records(tmp_path / "t.jsonl")
    assert records["own-1"]["final_answer"] == teacher.standard_answer(task)
    assert records["own-2"]["failure"].startswith("image_error:")
    with pytest.raises(ValueError, match="duplicate"):
        run_generation([task, task], tmp_path / "d.jsonl", config(server), progress=False)


def test_429_retry_after_is_honoured_and_counted(tasks, tmp_path):
    faults = Faults(rate_429=0.5, retry_after_s=0.02, seed=3)
    with LocalTeacher(faults) as t:
        # Full-jitter backoff with a 20 s base would take many seconds; Retry-After is 20 ms.
        cfg = config(t, concurrency=4, max_retries=12, backoff_base_s=20.0)
        started = time.perf_counter()
        summary = run_generation(tasks[:12], tmp_path / "t.jsonl", cfg, progress=False)
        elapsed = time.perf_counter() - started
        n_429 = sum(e["fault"] == "rate_limit" for e in t.injections)
    assert summary.done == 12 and summary.failed == 0
    assert n_429 > 0 and summary.attempts == 12 + n_429 == t.requests
    records = lines(tmp_path / "t.jsonl")
    assert sum(r["attempts"] for r in records) == 12 + n_429
    assert any(r["attempts"] > 1 for r in records)
    assert elapsed < 8, elapsed


def test_backoff_and_error_classification():
    cfg = TeacherConfig(backoff_base_s=1.0, backoff_max_s=4.0)
    rng = random.Random(0)
    assert all(0 <= teacher.backoff_s(k, cfg, rng) <= min(4.0, 2 ** (k - 1)) for k in range(1, 9))
    assert teacher.backoff_s(2, cfg, rng, after=9.0) == 4.0  # Retry-After capped too
    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")

    def status_error(cls, status, headers=None, body=None):
        response = httpx.Response(status, headers=headers or {}, request=request)
        return cls(f"Error code: {status}", response=response, body=body)

    err = status_error(openai.RateLimitError, 429, {"retry-after": "1.5"})
    assert teacher.classify_error(err) == ("rate_limit", True)
    assert teacher.retry_after_s(err) == 1.5
    assert teacher.retry_after_s(status_error(openai.RateLimitError, 429,
                                              {"retry-after-ms": "250"})) == 0.25
    quota = status_error(openai.RateLimitError, 429, body={"code": "insufficient_quota"})
    assert teacher.classify_error(quota) == ("quota", False)
    assert teacher.classify_error(status_error(openai.InternalServerError, 503)) == (
        "server_error", True)
    assert teacher.classify_error(status_error(openai.BadRequestError, 400)) == (
        "bad_request", False)
    assert teacher.classify_error(openai.APIConnectionError(request=request)) == (
        "connection", True)
    assert teacher.classify_error(openai.APITimeoutError(request=request)) == ("timeout", True)


def test_fault_mix_every_task_done_or_failed_with_reason(tasks, tmp_path):
    faults = Faults(rate_429=0.2, rate_500=0.05, retry_after_s=0.01, seed=5)
    work = synth.make_tasks(40, seed=12)
    out = tmp_path / "t.jsonl"
    with LocalTeacher(faults) as t:
        first = run_generation(work, out, config(t, concurrency=8, max_retries=0),
                               progress=False)
        transport = sum(e["fault"] in ("rate_limit", "server_error") for e in t.injections)
        assert first.done + first.failed == 40 and first.failed == transport > 0
        assert sum(first.failures.values()) == first.failed
        assert set(first.failures) <= {"rate_limit", "server_error"}
        records = lines(out)
        assert sorted(r["task_id"] for r in records) == sorted(x.id for x in work)
        for r in records:
            if r["status"] == "failed":
                assert r["failure"].split(":")[0] in ("rate_limit", "server_error")
                assert r["text"] == "" and r["attempts"] == 1
        n_before = t.requests
        second = run_generation(work, out, config(t, concurrency=8, max_retries=10,
                                                  backoff_base_s=0.01), progress=False)
        assert second.skipped == first.done and second.done == first.failed
        assert second.failed == 0
        assert t.requests - n_before == second.attempts  # nothing re-requested for done tasks
    records = lines(out)
    assert len(records) == 40 and {r["status"] for r in records} == {"done"}
    assert len({r["task_id"] for r in records}) == 40


# --------------------------------------------------------------------------------------------
# crash safety and resume


def test_sigkill_mid_run_then_resume(tmp_path):
    split = tmp_path / "split"
    work = synth.make_tasks(30, seed=21)
    synth.save_split(work, split)
    out = tmp_path / "run" / "traces.jsonl"
    with LocalTeacher(Faults(latency_ms=150)) as t:
        cmd = [sys.executable, "-m", "cotlib.teacher", "--split", str(split), "--out", str(out),
               "--base-url", t.base_url, "--model", LOCAL, "--concurrency", "2", "--no-progress"]
        env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and out.read_bytes().count(b"\n") >= 6:
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        written = teacher.latest_records(out)
        assert 6 <= len(written) < 30
        assert all(r["status"] == "done" for r in written.values())
        n_before = t.requests
        summary = run_generation(synth.load_split(split), out, config(t, concurrency=4),
                                 progress=False)
        assert summary.skipped == len(written)
        assert summary.done == 30 - len(written) == t.requests - n_before
    records = lines(out)
    assert len(records) == 30 and len({r["task_id"] for r in records}) == 30
    assert all(r["status"] == "done" and not r["problems"] for r in records)
    for r in records:  # the records written before the kill were kept, not redone
        if r["task_id"] in written:
            assert r == written[r["task_id"]]


def test_torn_last_line_is_ignored_then_repaired(server, tasks, tmp_path):
    out = tmp_path / "t.jsonl"
    first = tasks[:2]
    run_generation(first, out, config(server), progress=False)
    whole = out.read_bytes()
    torn = json.dumps(teacher.make_record(tasks[2].id, "x", model=LOCAL, mode="conditioned"))
    out.write_bytes(whole + b"not json at all\n" + torn[:37].encode())  # garbage + torn tail
    loaded = teacher.latest_records(out)
    assert sorted(loaded) == sorted(t.id for t in first)
    summary = run_generation(tasks[:4], out, config(server), progress=False)
    assert (summary.skipped, summary.done) == (2, 2)
    records = lines(out)
    assert sorted(r["task_id"] for r in records) == sorted(t.id for t in tasks[:4])


def test_load_keeps_last_record_and_compact_is_one_line_per_task(tmp_path):
    out = tmp_path / "t.jsonl"
    kw = {"model": LOCAL, "mode": "blind"}
    with teacher.ResultsWriter(out) as w:
        w.write(teacher.make_record("a", status="failed", failure="rate_limit: x", **kw))
        w.write(teacher.make_record("b", stages.render("s", "c", "r", "1"), **kw))
        w.write(teacher.make_record("a", stages.render("s", "c", "r", "2"), **kw))
    assert teacher.latest_records(out)["a"]["final_answer"] == "2"
    assert teacher.compact_results(out) == 2
    records = lines(out)
    assert [r["task_id"] for r in records] == ["a", "b"]
    assert records[0]["status"] == "done"
    assert not list(tmp_path.glob(".*tmp"))
    with teacher.ResultsWriter(out), pytest.raises(RuntimeError, match="another"):
        teacher.ResultsWriter(out)


#: The file format: a results line's keys, in order (shipped runs and old files have them).
RECORD_KEYS = ["task_id", "status", "model", "mode", "text", "stages", "problems", "final_answer",
               "usage", "cost_usd", "attempts", "failure", "seconds", "created", "request_key",
               "finish_reason"]


def test_trace_type_reads_and_writes_the_file_format_unchanged(server, tasks, tmp_path):
    out = tmp_path / "t.jsonl"
    run_generation(tasks[:3], out, config(server), progress=False)
    raws = out.read_bytes().split(b"\n")[:-1]
    for raw, row in zip(raws, lines(out)):
        assert list(row) == RECORD_KEYS
        trace = teacher.Trace.from_json(row)
        assert trace.done and trace.text == row["text"] and trace.usage == row["usage"]
        assert json.dumps(trace.to_json(), ensure_ascii=False).encode() == raw  # byte for byte
    # an old or imported line: fields missing, a key this version does not know, an int id
    old = {"task_id": 7, "status": "done", "model": "llava-cot-100k", "mode": "import",
           "text": "x", "stages": {}, "problems": ["missing"], "final_answer": "", "usage": {},
           "cost_usd": 0.0, "attempts": 1, "failure": None, "seconds": 0.0, "created": None,
           "task_type": "chartqa"}
    trace = teacher.Trace.from_json(old)
    assert (trace.task_id, trace.extra, trace.request_key) == ("7", {"task_type": "chartqa"}, None)
    assert trace.to_json()["task_type"] == "chartqa"
    for bad, reason in ((None, "record:not_an_object"), ([1], "record:not_an_object"),
                        ({"task_id": "a", "text": 5}, "text:not_a_string")):
        with pytest.raises(teacher.TraceError) as err:
            teacher.Trace.from_json(bad)
        assert err.value.reason == reason
    with teacher.ResultsWriter(tmp_path / "typed.jsonl") as w:  # the writer takes a Trace too
        w.write(trace)
    assert lines(tmp_path / "typed.jsonl") == [trace.to_json()]


def test_a_trace_parses_its_text_once_for_every_reader():
    """Trace.parsed is the one parse of a text: the results line's derived keys, the filter's
    checks and the dataset read the same cached object, and the line's stages are a copy."""
    from cotlib import data, filtering
    from cotlib.teacher.store import parse_text

    text = stages.render("I will count.", "Two circles.", "One and one make two.", "2")
    trace = teacher.Trace("a", text, model=LOCAL, mode="blind")
    assert trace.parsed is parse_text(text) is filtering.parse_record({"text": text})
    assert trace.parsed.stages["CONCLUSION"] == "2" and trace.final_answer == "2"
    row = trace.to_json()
    assert (row["stages"], row["problems"], row["final_answer"]) == (
        trace.parsed.stages, [], "2")
    row["stages"]["CONCLUSION"] = "changed"  # a reader editing its line changes no other
    assert trace.parsed.stages["CONCLUSION"] == "2"
    assert data.cot_completion(text) == stages.render_dict(trace.parsed.stages)
    empty = teacher.Trace("b", status="failed")
    assert empty.final_answer == "" and empty.parsed.missing == list(stages.STAGES)
    assert empty.to_json()["stages"] == {} and empty.to_json()["problems"] == []


def test_one_reader_two_views(tmp_path):
    """read_lines parses the file once; the filter's view keeps every line (repeats, garbage
    named, a torn tail that parses), the resume view keeps the last record of each task."""
    kw = {"model": LOCAL, "mode": "blind"}
    first = teacher.make_record("a", status="failed", failure="timeout: x", **kw)
    other = teacher.make_record("b", stages.render("s", "c", "r", "1"), **kw)
    again = teacher.make_record("a", stages.render("s", "c", "r", "2"), **kw)
    tail = teacher.make_record("c", "cut", **kw)
    path = tmp_path / "traces.jsonl"
    path.write_bytes(b"".join(teacher.encode_line(r) for r in (first, other)) + b"null\n\n{oops\n"
                     + teacher.encode_line(again) + teacher.encode_line(tail).rstrip(b"\n"))
    every = teacher.read_records(path)
    assert [r.get("task_id") if isinstance(r, dict) else r for r in every] == [
        "a", "b", None, "line 5", "a", "c"]
    assert teacher.UNREADABLE in every[3] and "line 5" in every[3][teacher.UNREADABLE]
    latest = teacher.latest_records(path)
    assert list(latest) == ["a", "b"] and latest["a"] == again
    assert not hasattr(teacher, "load_results")  # evaluate.load_results is the only one


# --------------------------------------------------------------------------------------------
# budget


def test_budget_cap_stops_cleanly_and_rerun_continues(server, tasks, tmp_path):
    out = tmp_path / "t.jsonl"
    prices = {LOCAL: (1000.0, 1000.0)}  # make the free teacher expensive: ~$0.5 per request
    work = tasks[:10]
    cfg = config(server, concurrency=1, budget_usd=4.0, prices=prices, max_tokens=300)
    worst = min(teacher.worst_case_cost(teacher.build_messages(t), cfg) for t in work)
    assert 1.0 < worst < 2.0  # the reservation: prompt bound + 300 tokens at $0.001 a token
    first = run_generation(work, out, cfg, progress=False)
    assert first.stopped_by_budget and first.not_started == 10 - first.done and first.failed == 0
    costs = [r["cost_usd"] for r in lines(out)]  # one at a time, so in spending order
    assert len(costs) == first.done >= 2  # nothing written for tasks never started
    assert sum(costs) <= 4.0 < sum(costs) + worst  # a ceiling: stopped before it could cross
    assert first.cost_usd == pytest.approx(sum(costs))
    same = run_generation(work, out, cfg, progress=False)  # the cap covers the whole file
    assert same.stopped_by_budget and same.done == 0 and same.skipped == first.done
    more = run_generation(work, out, config(server, concurrency=4, budget_usd=None,
                                            prices=prices), progress=False)
    assert not more.stopped_by_budget and more.done == 10 - first.done
    assert len(lines(out)) == 10
    with pytest.raises(ValueError, match="no price"):
        run_generation(work, tmp_path / "x.jsonl",
                       TeacherConfig(model="mystery", base_url=server.base_url, budget_usd=1.0),
                       progress=False)


def test_prices_and_cost_estimates():
    assert teacher.estimate_cost({"prompt_tokens": 10**6, "completion_tokens": 10**6},
                                 "gpt-4o") == 12.5
    assert teacher.price_for("gpt-4o-2024-08-06") == (2.5, 10.0)
    assert teacher.price_for("gpt-4.1-mini-2025-04-14") == teacher.PRICES["gpt-4.1-mini"]
    assert teacher.estimate_cost({"prompt_tokens": 5}, "unknown-model") == 0.0
    assert teacher.estimate_cost({"prompt_tokens": 10**6}, "mine", {"mine": (1.0, 2.0)}) == 1.0
    assert teacher.estimate_run_cost(1000, "gpt-4o", 1000, 0) == 2.5
    assert teacher.estimate_run_cost(1000, "gpt-4o", 1000, 0, batch=True) == 1.25
    assert teacher.estimate_run_cost(100, LOCAL) == 0.0
    with pytest.raises(ValueError, match="no price"):
        teacher.estimate_run_cost(1, "mystery")


def test_image_tokens_follow_each_models_billing_rule():
    # OpenAI's published examples: 1024x1024 high = 765, 2048x4096 high = 1105, low = 85
    assert teacher.image_tokens("gpt-4o", 1024, 1024) == 765
    assert teacher.image_tokens("gpt-4o", 2048, 4096) == 1105
    assert teacher.image_tokens("gpt-4o", 4096, 8192, detail="low") == 85
    assert teacher.image_tokens("gpt-4o-2024-08-06") == 255  # a snapshot bills like its model
    # gpt-4o-mini: 2833 base + 5667 per tile; about 33x gpt-4o's tokens at 1/16.7 the price
    assert teacher.image_tokens("gpt-4o-mini") == 2833 + 5667
    assert teacher.image_tokens("gpt-4o-mini", detail="low") == 2833
    assert teacher.image_tokens("gpt-4.1") == 255
    # patch models: 32-px patches (at most 1536) times 1.62 / 2.46, whatever the detail
    assert teacher.image_tokens("gpt-4.1-mini", 1800, 2400) == 2352
    assert teacher.image_tokens("gpt-4.1-nano", detail="low") == int(36 * 2.46)
    assert teacher.image_tokens("gpt-4.1-mini", 8000, 8000) <= int(1536 * 1.62)
    for model in teacher.PRICES:  # every priced model has a rule (or is the free local one)
        assert model == LOCAL or teacher.cost._rule_for(model) is not None, model
    # the course's 192-px scene costs TWICE as much on gpt-4o-mini as on gpt-4o at list prices
    image_usd = {m: teacher.image_tokens(m) * teacher.PRICES[m][0] / 1e6
                 for m in ("gpt-4o", "gpt-4o-mini")}
    assert image_usd["gpt-4o-mini"] == pytest.approx(2 * image_usd["gpt-4o"])
    mini, full = teacher.estimate_run_cost(1000, "gpt-4o-mini"), teacher.estimate_run_cost(1000)
    assert mini == pytest.approx((295 + 8500) * 0.15 / 1000 + 250 * 0.6 / 1000)
    assert 0.3 < mini / full < 0.45  # not the 1/16 the text prices alone suggest
    assert teacher.estimate_run_cost(1000, "gpt-4o-mini", detail="low") < mini


# --------------------------------------------------------------------------------------------
# the API key never shows up anywhere


def _echo_key_app(seen: dict) -> FastAPI:
    """A server that rejects every key and, carelessly, echoes it back in full."""
    app = FastAPI()

    @app.get("/health")  # LocalTeacher waits for this
    async def health():
        return {"status": "ok"}

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def reject(path: str, request: Request):
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        seen["requests"] = seen.get("requests", 0) + 1
        seen["got_key"] = token == os.environ.get("OPENAI_API_KEY")
        body = {"error": {"message": f"Incorrect API key provided: {token}.",
                          "type": "invalid_request_error", "param": None,
                          "code": "invalid_api_key"}}
        return JSONResponse(body, status_code=401)

    return app


def test_api_key_never_leaks(server, tasks, tmp_path, monkeypatch, caplog, capsys):
    secret = "sk-test-" + "".join(random.SystemRandom().choices(
        string.ascii_letters + string.digits, k=32))
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    caplog.set_level(logging.DEBUG)
    seen: dict = {}
    texts = []
    with LocalTeacher(app=_echo_key_app(seen)) as bad:
        # naming the variable explicitly sends its key to this (non-OpenAI) server on purpose
        cfg = config(bad, max_retries=0, api_key_env="OPENAI_API_KEY")
        texts.append(repr(cfg))
        summary = run_generation(tasks[:3], tmp_path / "rejected.jsonl", cfg, progress=True)
        assert seen["got_key"] is True  # the key really was sent (and echoed back)
        assert summary.failed == 3 and summary.failures == {"auth": 3}
        texts.append(str(summary))
        for r in lines(tmp_path / "rejected.jsonl"):
            assert r["failure"].startswith("auth:") and "[REDACTED]" in r["failure"]
        with pytest.raises(teacher.TeacherError) as err:
            teacher.check_teacher(cfg)
        assert err.value.__cause__ is None and err.value.__context__ is None
        texts += [str(err.value), repr(err.value),
                  "".join(traceback.format_exception(err.value))]
    good = run_generation(tasks[:3], tmp_path / "ok.jsonl", config(server), progress=True)
    assert good.done == 3
    assert teacher.check_teacher(config(server)) == [LOCAL]
    key = teacher.get_api_key()
    assert key.reveal() == secret
    texts += [repr(key), str(key), f"{key}", repr([key]), json.dumps(server.injections)]
    with pytest.raises(TypeError):
        pickle.dumps(key)
    captured = capsys.readouterr()
    texts += [captured.out, captured.err, caplog.text]
    texts += [p.read_text() for p in tmp_path.glob("*.jsonl")]
    assert caplog.records  # the debug logs really were captured
    for text in texts:
        assert secret not in text
        assert secret[8:] not in text


def test_no_key_in_any_stored_notebook():
    """Runs nothing: scans every cell (source and stored outputs, tracebacks included) of the
    course notebooks for anything shaped like an OpenAI key."""
    import nbformat

    key_like = re.compile(r"sk-[A-Za-z0-9_-]{20,}")
    root = Path(__file__).resolve().parent.parent
    paths = sorted((root / "solutions").glob("*.ipynb")) + sorted(
        (root / "notebooks").glob("*.ipynb"))
    assert paths
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(nb.cells):
            texts = [cell.source, json.dumps(cell.get("outputs", []))]
            for text in texts:
                found = key_like.search(text)
                assert found is None, f"{path.name} cell {i}: {found.group(0)[:6]}... looks " \
                    "like an API key: clear the output (and never print a key)"


def test_get_api_key_sources(monkeypatch):
    monkeypatch.delenv("COTLIB_TEST_KEY", raising=False)
    monkeypatch.delenv(teacher.SERVER_KEY_ENV, raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    openai_only = "sk-test-" + secrets.token_hex(8)  # made at run time, not a literal
    monkeypatch.setenv("OPENAI_API_KEY", openai_only)
    assert teacher.get_api_key(base_url="http://127.0.0.1:1/v1").reveal() == teacher.DUMMY_KEY
    assert teacher.get_api_key().reveal() == openai_only  # OpenAI itself
    with pytest.raises(RuntimeError, match="COTLIB_TEST_KEY") as err:  # named, but not set
        teacher.get_api_key("COTLIB_TEST_KEY", base_url="http://127.0.0.1:1/v1")
    with pytest.raises(RuntimeError, match="COTLIB_TEST_KEY") as err:
        teacher.get_api_key("COTLIB_TEST_KEY")
    assert "sk-" not in str(err.value)
    monkeypatch.setattr("getpass.getpass", lambda prompt: "sk-" + "typed-in-key-123456789")
    assert teacher.get_api_key("COTLIB_TEST_KEY", prompt=True).reveal().startswith("sk-typed")
    monkeypatch.setenv("COTLIB_TEST_KEY", "sk-from-env")
    assert teacher.get_api_key("COTLIB_TEST_KEY").reveal() == "sk-from-env"
    assert teacher.redact("key sk-from-env here", "sk-from-env") == "key [REDACTED] here"
    assert teacher.is_openai_url("https://api.openai.com/v1")
    assert not teacher.is_openai_url("https://openai.com.evil.example/v1")


# --------------------------------------------------------------------------------------------
# OpenAI Batch API files


def test_batch_file_writer_and_output_reader(server, tasks, tmp_path):
    work = tasks[:5]
    cfg = TeacherConfig(model="gpt-4o", max_tokens=800)
    batch_in = tmp_path / "batch.jsonl"
    assert teacher.write_batch_file(work, batch_in, cfg) == 5
    requests = lines(batch_in)
    for task, line in zip(work, requests, strict=True):
        assert set(line) == {"custom_id", "method", "url", "body"}
        assert (line["custom_id"], line["method"], line["url"]) == (
            task.id, "POST", "/v1/chat/completions")
        assert line["body"]["model"] == "gpt-4o" and line["body"]["max_tokens"] == 800
        assert line["body"]["messages"] == teacher.build_messages(task)

    # What a finished batch's output file looks like (documented shape), built with the
    # local teacher standing in for GPT-4o: 3 successes, one 400 and one expired request.
    out_lines = []
    for i, line in enumerate(requests[:3]):
        completion = teacher_server.complete(line["body"], request_id=f"chatcmpl-{i}")
        completion.pop("_cotlib")
        out_lines.append({"id": f"batch_req_{i}", "custom_id": line["custom_id"],
                          "response": {"status_code": 200, "request_id": f"req_{i}",
                                       "body": completion}, "error": None})
    out_lines.append({"id": "batch_req_3", "custom_id": requests[3]["custom_id"],
                      "response": {"status_code": 400, "request_id": "req_3", "body": {
                          "error": {"message": "Invalid image.", "type": "invalid_request_error",
                                    "param": None, "code": "invalid_image"}}}, "error": None})
    out_lines.append({"id": "batch_req_4", "custom_id": requests[4]["custom_id"],
                      "response": None, "error": {"code": "batch_expired", "message":
                                                  "This request could not be executed before "
                                                  "the completion window expired."}})
    random.Random(0).shuffle(out_lines)  # batch output order is not guaranteed
    batch_out = tmp_path / "batch_out.jsonl"
    batch_out.write_text("".join(json.dumps(x) + "\n" for x in out_lines))

    traces = tmp_path / "traces.jsonl"
    summary = teacher.read_batch_output(batch_out, traces)
    assert (summary.done, summary.failed, summary.total) == (3, 2, 5)
    assert summary.failures == {"bad_request": 1, "batch_error": 1}
    records = teacher.latest_records(traces)
    for task in work[:3]:
        r = records[task.id]
        assert r["status"] == "done" and r["final_answer"] == teacher.standard_answer(task)
        assert r["cost_usd"] == pytest.approx(teacher.estimate_cost(r["usage"], "gpt-4o") / 2)
    assert records[work[3].id]["failure"].startswith("bad_request: invalid_image")
    assert records[work[4].id]["failure"].startswith("batch_error: batch_expired")
    # the failed ones are retried live, the done ones kept
    resumed = run_generation(work, traces, config(server), progress=False)
    assert (resumed.skipped, resumed.done) == (3, 2)
    assert len(lines(traces)) == 5


# --------------------------------------------------------------------------------------------
# fault injection


def test_fault_rates_and_injection_log(tasks, tmp_path):
    faults = Faults(rate_429=0.1, rate_500=0.05, rate_refusal=0.1, rate_malformed=0.15,
                    rate_wrong_answer=0.15, retry_after_s=0.01, seed=7)
    work = synth.make_tasks(200, seed=31)
    with LocalTeacher(faults) as t:
        summary = run_generation(work, tmp_path / "t.jsonl",
                                 config(t, concurrency=8, max_retries=0), progress=False)
        log = t.injections
        served = httpx.get(t.base_url + "/cotlib/injections", timeout=10).json()
        n_requests = t.requests
    assert served["data"] == log and served["requests"] == n_requests == 200
    counts = {kind: sum(e["fault"] == kind for e in log) for kind in teacher_server.INJECTED}

    def near(count, n, p):
        return abs(count - n * p) <= 4 * math.sqrt(n * p * (1 - p)) + 1

    assert near(counts["rate_limit"], 200, 0.1) and near(counts["server_error"], 200, 0.05)
    answered = 200 - counts["rate_limit"] - counts["server_error"]
    assert answered == summary.done
    for kind, p in (("refusal", 0.1), ("malformed", 0.15), ("wrong_answer", 0.15)):
        assert near(counts[kind], answered, p), (kind, counts)

    # the log joins with the results through request_key; verdicts agree with the faults
    fault_of = {e["request_key"]: e["fault"] for e in log}
    expected = {x.id: teacher.standard_answer(x) for x in work}
    seen = set()
    for r in teacher.latest_records(tmp_path / "t.jsonl").values():
        fault = fault_of.get(r["request_key"])
        seen.add(fault)
        if r["status"] == "failed":
            assert fault in ("rate_limit", "server_error")
        elif fault == "refusal":
            assert not r["stages"] and "sorry" in r["text"].lower()
        elif fault == "malformed":
            assert r["problems"]
        elif fault == "wrong_answer":
            assert not r["problems"] and r["final_answer"] != expected[r["task_id"]]
        else:
            assert fault is None and not r["problems"]
            assert r["final_answer"] == expected[r["task_id"]]
    assert seen >= {None, *teacher_server.INJECTED}
    assert all(len(e["task_hint"]) <= 80 for e in log)
    with pytest.raises(ValueError):
        Faults(rate_429=0.7, rate_500=0.5)


def test_content_faults_do_not_depend_on_arrival_order(tmp_path):
    faults = Faults(rate_429=0.2, rate_refusal=0.2, rate_malformed=0.2, rate_wrong_answer=0.2,
                    retry_after_s=0.01, seed=9)
    work = synth.make_tasks(30, seed=41)
    runs = []
    for concurrency in (1, 8):
        with LocalTeacher(faults) as t:
            run_generation(work, tmp_path / f"c{concurrency}.jsonl",
                           config(t, concurrency=concurrency, max_retries=8), progress=False)
            content = {e["request_key"]: e["fault"] for e in t.injections
                       if e["fault"] in ("refusal", "malformed", "wrong_answer")}
        texts = {r["task_id"]: r["text"]
                 for r in teacher.latest_records(tmp_path / f"c{concurrency}.jsonl").values()}
        runs.append((content, texts))
    (faults_1, texts_1), (faults_8, texts_8) = runs
    assert faults_1 and faults_1 == faults_8  # the same tasks broken the same way
    assert len(texts_1) == 30 and texts_1 == texts_8  # so every trace repeats, word for word


def test_fault_flags_roundtrip_through_the_command_line():
    faults = Faults(latency_ms=12.5, rate_429=0.2, retry_after_s=0.05, rate_malformed=0.1, seed=4)
    args = teacher_server.build_parser().parse_args(teacher_server.fault_args(faults))
    assert args.rate_429 == 0.2 and args.retry_after == 0.05 and args.fault_seed == 4
    assert args.latency_ms == 12.5 and args.rate_malformed == 0.1


def test_clis_take_their_defaults_from_the_dataclasses():
    """Each setting is declared once: the CLIs' options carry the dataclasses' defaults (shown
    in --help) and rebuild the same objects."""
    from cotlib.teacher import cli

    bare = ["--split", "s", "--out", "o"]
    assert cli.config_from_args(cli.build_parser().parse_args(bare)) == TeacherConfig()
    chosen = TeacherConfig(model="m", base_url="http://127.0.0.1:1/v1", mode="blind",
                           concurrency=3, max_retries=0, timeout_s=2.5, budget_usd=0.5,
                           max_tokens=7, api_key_env="X", prompt_for_key=True)
    argv = bare + ["--model", "m", "--base-url", "http://127.0.0.1:1/v1", "--mode", "blind",
                   "--concurrency", "3", "--max-retries", "0", "--timeout", "2.5", "--budget",
                   "0.5", "--max-tokens", "7", "--api-key-env", "X", "--prompt-key"]
    assert cli.config_from_args(cli.build_parser().parse_args(argv)) == chosen
    help_text = " ".join(cli.build_parser().format_help().split())
    for flag, name, _ in cli.CONFIG_OPTIONS:
        assert flag in help_text and f"(default: {getattr(TeacherConfig(), name)})" in help_text
    serve = teacher_server.build_parser()
    assert teacher_server.faults_from_args(serve.parse_args([])) == Faults()
    assert "(default: 0.1)" in serve.format_help()  # Faults.retry_after_s


def test_judge_requests_get_a_verdict_and_never_a_fault(tasks):
    from cotlib import filtering

    with LocalTeacher(Faults(rate_500=1.0, rate_refusal=1.0, seed=1)) as t:
        client = openai.OpenAI(base_url=t.base_url, api_key="x", max_retries=0)

        def ask(messages):
            r = client.chat.completions.create(model=LOCAL, messages=messages, max_tokens=8,
                                               temperature=0)
            return r.choices[0].message.content

        replies = [ask(filtering.judge_messages(response, answer)) for response, answer in
                   (("Three.", "3"), ("4", "3"), ("I'm sorry, I can't help with that.", "3"))]
        assert replies == ["valid", "invalid", "invalid"]
        parts = filtering.judge_messages("(B)", "B")
        parts[1]["content"] = [{"type": "text", "text": parts[1]["content"]}]
        assert ask(parts) == "valid"
        with pytest.raises(openai.BadRequestError, match="judge request needs a user message"):
            ask(parts[:1])
        with pytest.raises(openai.InternalServerError):  # trace requests still get faults
            client.chat.completions.create(model=LOCAL, messages=teacher.build_messages(tasks[0]))
        assert (t.judge_requests, t.requests) == (5, 1)
        assert [e["fault"] for e in t.injections] == ["server_error"]
        client.close()
    body = {"model": "m", "messages": filtering.judge_messages("no", "yes")}
    assert teacher_server.complete(body)["choices"][0]["message"]["content"] == "invalid"


def test_local_teacher_in_a_child_process(tasks):
    with LocalTeacher(Faults(rate_refusal=1.0), process=True) as t:
        client = openai.OpenAI(base_url=t.base_url, api_key="x", max_retries=0)
        r = client.chat.completions.create(model=LOCAL, messages=teacher.build_messages(tasks[0]))
        assert "sorry" in r.choices[0].message.content.lower()
        assert t.requests == 1 and [e["fault"] for e in t.injections] == ["refusal"]
        client.close()


# --------------------------------------------------------------------------------------------
# notebooks: the sync wrapper inside a running event loop


def test_run_generation_inside_a_running_event_loop(server, tasks, tmp_path):
    async def notebook_cell():
        return run_generation(tasks[:3], tmp_path / "t.jsonl", config(server), progress=False)

    summary = asyncio.run(notebook_cell())
    assert summary.done == 3 and len(lines(tmp_path / "t.jsonl")) == 3


def test_serve_on_a_busy_port_says_so_and_names_the_fix(capsys):
    from cotlib import teacher_server

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert teacher_server.main(["--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is already in use" in err and "--port" in err
    assert "Traceback" not in err

"""What real servers and proxies do to a teacher run, reproduced by small fault-injecting servers
on 127.0.0.1: where the API key goes, malformed 200 responses, the budget ceiling, fail-fast when
the server is down or hangs, an unknown model, deep JSON and huge images sent to the local
teacher, and records the filter cannot read."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import secrets
import socket
import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from cotlib import filtering, search, synth, teacher, teacher_server
from cotlib.teacher import TeacherConfig, run_generation
from cotlib.teacher_server import LocalTeacher

LOCAL = teacher.LOCAL_MODEL
SECRET = "sk-test-" + secrets.token_hex(16)  # made at run time: no key-like literal in the source


@pytest.fixture(scope="module")
def work():
    return synth.make_tasks(24, seed=5)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def fault_app(plan: dict[str, str] | None = None, *, hang_chat: bool = False,
              hang_models_after: int | None = None) -> FastAPI:
    """An OpenAI-compatible server that answers like the local teacher, except for the requests
    whose :func:`cotlib.teacher.messages_key` is in ``plan``: those get the planned bad 200.
    Every ``Authorization`` header is recorded in ``app.state.auth``."""
    app = FastAPI()
    app.state.plan = dict(plan or {})
    app.state.auth = []
    app.state.chat_requests = 0

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    app.state.model_requests = 0

    @app.get("/v1/models")
    async def models(request: Request):
        app.state.auth.append(request.headers.get("authorization"))
        app.state.model_requests += 1
        if hang_models_after is not None and app.state.model_requests > hang_models_after:
            await asyncio.sleep(2.5)
        return {"object": "list", "data": [{"id": LOCAL, "object": "model", "created": 0,
                                            "owned_by": "test"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        app.state.auth.append(request.headers.get("authorization"))
        app.state.chat_requests += 1
        body = await request.json()
        if hang_chat:
            await asyncio.sleep(2.5)  # far beyond the client's timeout; done before shutdown
        if teacher_server.judge_text(body) is not None:
            result = teacher_server.complete(body)
            result.pop("_cotlib")
            return JSONResponse(result)
        kind = app.state.plan.get(teacher.messages_key(body["messages"]))
        if kind == "html":
            return Response("<html><body>502 Bad Gateway (but status 200)</body></html>",
                            media_type="text/html")
        result = teacher_server.complete(body)
        result.pop("_cotlib")
        message = result["choices"][0]["message"]
        if kind == "surrogate":
            text = json.dumps(result).replace(json.dumps(message["content"])[1:-1], "\\ud800", 1)
            return Response(text, media_type="application/json")
        if kind == "choices_empty":
            result["choices"] = []
        elif kind == "choices_null":
            result["choices"] = None
        elif kind == "content_empty":
            message["content"] = ""
        elif kind == "content_int":
            message["content"] = 5
        elif kind == "usage_negative":
            result["usage"]["prompt_tokens"] = -300_000_000
        elif kind == "usage_absurd":
            result["usage"]["completion_tokens"] = 10**12
        return JSONResponse(result)

    return app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# 1. the OpenAI key goes to OpenAI only


def test_openai_key_reaches_only_openai(work, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.delenv(teacher.SERVER_KEY_ENV, raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    app = fault_app()
    with LocalTeacher(app=app) as server:
        cfg = TeacherConfig(model=LOCAL, base_url=server.base_url, max_retries=0)

        def sent(**kw) -> set:
            app.state.auth.clear()
            run_generation(work[:2], tmp_path / f"{len(os.listdir(tmp_path))}.jsonl",
                           TeacherConfig(**{**cfg.__dict__, **kw}), progress=False)
            return set(app.state.auth)

        assert sent() == {f"Bearer {teacher.DUMMY_KEY}"}  # the default: a dummy, not the key
        monkeypatch.setenv(teacher.SERVER_KEY_ENV, "course-server-key")
        assert sent() == {"Bearer course-server-key"}  # the course's own variable
        assert sent(api_key="explicit-key") == {"Bearer explicit-key"}
        monkeypatch.setenv("MY_VLLM_KEY", "vllm-key")
        assert sent(api_key_env="MY_VLLM_KEY") == {"Bearer vllm-key"}
        monkeypatch.delenv(teacher.SERVER_KEY_ENV)

        app.state.auth.clear()  # the command line: --api-key-env NAME
        split = tmp_path / "split"
        synth.save_split(work[:2], split)
        assert teacher.generate_main(["--split", str(split), "--out", str(tmp_path / "cli.jsonl"),
                                      "--base-url", server.base_url, "--model", LOCAL,
                                      "--api-key-env", "MY_VLLM_KEY", "--no-progress"]) == 0
        assert set(app.state.auth) == {"Bearer vllm-key"}

        app.state.auth.clear()  # the filter's LLM judge
        judge = filtering.judge_with_teacher(cfg)
        task = work[0]
        good = teacher_server.complete({"model": LOCAL, "messages": teacher.build_messages(task)})
        judge({"task_id": task.id, "status": "done",
               "text": good["choices"][0]["message"]["content"]}, task)
        judge.close()
        assert app.state.auth == [f"Bearer {teacher.DUMMY_KEY}"]

        app.state.auth.clear()  # search's OpenAI judge, given a base_url
        scorer = search.openai_judge_scorer(server.base_url, LOCAL)
        scorer.client.models.list()
        rater = search.openai_reward_scorer(cfg, LOCAL)
        rater.client.models.list()
        assert app.state.auth == [f"Bearer {teacher.DUMMY_KEY}"] * 2

        app.state.auth.clear()  # OPENAI_BASE_URL pointing elsewhere is not OpenAI either
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        run_generation(work[:1], tmp_path / "env.jsonl", TeacherConfig(model=LOCAL),
                       progress=False)
        assert set(app.state.auth) == {f"Bearer {teacher.DUMMY_KEY}"}
        monkeypatch.delenv("OPENAI_BASE_URL")
    # OpenAI itself does get the key (no request is sent: the client is only built)
    for base_url in (None, "https://api.openai.com/v1"):
        client = teacher.openai_client(base_url)
        assert client.api_key == SECRET and client.base_url.host == "api.openai.com"
        client.close()
    for base_url in ("http://api.openai.com/v1", "https://api.openai.com.example.org/v1",
                     "http://10.1.2.3:8000/v1"):
        assert teacher.resolve_api_key(base_url).reveal() == teacher.DUMMY_KEY, base_url
    assert "explicit-key" not in repr(TeacherConfig(api_key="explicit-key"))


# --------------------------------------------------------------------------------------------
# 2-4. malformed 200 responses fail that task, are retried, and a rerun retries them


BAD_KINDS = {
    "html": "bad_response:not_a_completion",
    "surrogate": "bad_response:invalid_unicode",
    "choices_empty": "bad_response:no_choices",
    "choices_null": "bad_response:no_choices",
    "content_empty": "bad_response:empty_content",
    "content_int": "bad_response:content_not_a_string",
    "usage_negative": "bad_response:usage",
    "usage_absurd": "bad_response:usage",
}


def test_bad_responses_fail_their_task_and_a_rerun_retries_them(work, tmp_path):
    tasks = work[:12]
    keys = [teacher.messages_key(teacher.build_messages(t)) for t in tasks]
    plan = dict(zip(keys, BAD_KINDS))  # the first 8 tasks get one bad kind each, always
    expected = dict(zip([t.id for t in tasks], BAD_KINDS.values()))
    app = fault_app(plan)
    out = tmp_path / "traces.jsonl"
    prices = {LOCAL: (1.0, 1.0)}
    with LocalTeacher(app=app) as server:
        cfg = TeacherConfig(model=LOCAL, base_url=server.base_url, max_retries=1,
                            backoff_base_s=0.01, prices=prices, concurrency=4)
        first = run_generation(tasks, out, cfg, progress=False)
        assert (first.done, first.failed, first.not_started) == (4, 8, 0)
        records = {r["task_id"]: r for r in lines(out)}
        assert len(records) == 12
        for task_id, reason in expected.items():
            r = records[task_id]
            assert r["status"] == "failed" and r["attempts"] == 2, r
            assert r["failure"].startswith(reason + " after 2 attempts: "), r["failure"]
            assert r["cost_usd"] >= 0.0  # a negative usage is no credit
        assert first.failures == {k: list(BAD_KINDS.values()).count(k)
                                  for k in set(BAD_KINDS.values())}
        assert first.cost_usd >= 0
        app.state.plan.clear()  # the server is healthy again: a rerun retries the failures
        second = run_generation(tasks, out, cfg, progress=False)
    assert (second.done, second.skipped, second.failed) == (8, 4, 0)
    final = lines(out)
    assert len(final) == 12 and all(r["status"] == "done" and isinstance(r["text"], str)
                                    and r["text"].strip() for r in final)
    verdicts = filtering.filter_traces(final, tasks)
    assert all(v.kept for v in verdicts)


def test_read_reply_names_every_bad_shape():
    ok = {"choices": [{"message": {"content": "x"}, "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 3, "completion_tokens": 1}, "model": "m"}
    reply = teacher.read_reply(ok, max_tokens=5)
    assert (reply.text, reply.prompt_tokens, reply.completion_tokens) == ("x", 3, 1)
    refusal = {"choices": [{"message": {"content": None, "refusal": "I can't help."}}]}
    assert teacher.read_reply(refusal).text == "I can't help."
    for body, kind in [("<html>", "not_a_completion"), (None, "not_a_completion"),
                       ({"choices": None}, "no_choices"), ({}, "no_choices"),
                       ({"choices": [{}]}, "no_message"),
                       ({"choices": [{"message": {"content": "  "}}]}, "empty_content"),
                       ({"choices": [{"message": {"content": ["a"]}}]}, "content_not_a_string"),
                       ({**ok, "usage": {"prompt_tokens": 1.5}}, "usage"),
                       ({**ok, "usage": {"prompt_tokens": True}}, "usage"),
                       ({**ok, "usage": {"completion_tokens": 6}}, "usage")]:
        with pytest.raises(teacher.BadResponse) as err:
            teacher.read_reply(body, max_tokens=5)
        assert err.value.kind == kind, body


# --------------------------------------------------------------------------------------------
# 4. the budget is a ceiling


@pytest.mark.parametrize("concurrency", [1, 8, 32, 64])
def test_budget_is_a_ceiling_at_any_concurrency(concurrency, tmp_path):
    tasks = synth.make_tasks(48, seed=9)
    prices = {LOCAL: (1000.0, 1000.0)}  # ~$0.5 per request, ~$1.6 reserved per request
    cap = 6.0
    out = tmp_path / "t.jsonl"
    with LocalTeacher() as server:
        cfg = TeacherConfig(model=LOCAL, base_url=server.base_url, budget_usd=cap,
                            prices=prices, max_tokens=300, concurrency=concurrency)
        summary = run_generation(tasks, out, cfg, progress=False)
        requests = server.requests
    spent = sum(r["cost_usd"] for r in lines(out))
    written = {r["task_id"] for r in lines(out)}
    # the request it did not send is one of the tasks left (which one depends on arrival order
    # at high concurrency); their worst cases differ by a few cents
    worst = max(teacher.worst_case_cost(teacher.build_messages(t), cfg) for t in tasks
                if t.id not in written)
    print(f"concurrency {concurrency}: spent ${spent:.4f} of ${cap} cap, {summary.done} done, "
          f"worst case of a request left ${worst:.4f}")
    assert spent <= cap and summary.cost_usd <= cap
    assert spent + worst > cap  # it stopped only when one more request could cross the cap
    assert summary.stopped_by_budget and summary.done >= 3 and summary.failed == 0
    assert requests == summary.done == len(lines(out))  # nothing sent beyond what was written
    assert summary.not_started == 48 - summary.done
    assert re.search(r"could cost up to \$1\.\d+ .* budget_usd=\$6 is spent", str(summary))


def test_a_budget_below_one_requests_worst_case_sends_nothing(work, tmp_path):
    # the case: --budget 0.001 on gpt-4o spent $0.0192 at concurrency 8
    app = fault_app()
    with LocalTeacher(app=app) as server:
        cfg = TeacherConfig(model="gpt-4o", base_url=server.base_url, budget_usd=0.001,
                            concurrency=8)
        summary = run_generation(work, tmp_path / "t.jsonl", cfg, progress=False)
    assert app.state.chat_requests == 0 and summary.cost_usd == 0
    assert summary.stopped_by_budget and summary.not_started == len(work)
    worst = teacher.worst_case_cost(teacher.build_messages(work[0]), cfg)
    assert worst > 0.001 and f"${worst:.6f}" in str(summary)


# --------------------------------------------------------------------------------------------
# 5. fail fast: a server that is down, or that accepts and never answers


def test_server_down_fails_fast_with_one_message_naming_the_url(work, tmp_path, capsys):
    url = f"http://127.0.0.1:{_free_port()}/v1"
    cfg = TeacherConfig(model=LOCAL, base_url=url, concurrency=8)
    started = time.perf_counter()
    with pytest.raises(teacher.TeacherError) as err:
        run_generation(work, tmp_path / "t.jsonl", cfg, progress=False)
    seconds = time.perf_counter() - started
    with capsys.disabled():
        print(f"server down: stopped after {seconds:.2f} s")
    message = str(err.value)
    assert url in message and "Check that the server is running" in message
    assert err.value.summary.not_started == len(work) and err.value.summary.done == 0
    split = tmp_path / "split"
    synth.save_split(work, split)
    code = teacher.generate_main(["--split", str(split), "--out", str(tmp_path / "c.jsonl"),
                                  "--base-url", url, "--model", LOCAL, "--no-progress"])
    err_text = capsys.readouterr().err
    assert code == 1 and url in err_text and "Traceback" not in err_text
    assert len([line for line in err_text.splitlines() if line.startswith("cotlib generate:")]) \
        == 1


def test_server_that_never_answers_fails_fast_and_timeouts_name_the_url(work, tmp_path):
    # a socket that accepts connections (the kernel's backlog) and never answers
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    try:
        cfg = TeacherConfig(model=LOCAL, base_url=url, timeout_s=0.5, concurrency=4)
        started = time.perf_counter()
        with pytest.raises(teacher.TeacherError) as err:
            run_generation(work, tmp_path / "t.jsonl", cfg, progress=False)
        print(f"silent server: stopped after {time.perf_counter() - started:.2f} s")
    finally:
        listener.close()
    assert url in str(err.value) and "0.5 s" in str(err.value)

    # /models answers, the chat requests hang: N timeouts in a row stop the run
    app = fault_app(hang_chat=True)
    with LocalTeacher(app=app) as server:
        cfg = TeacherConfig(model=LOCAL, base_url=server.base_url, timeout_s=0.5,
                            concurrency=2, fail_fast_after=3, backoff_base_s=0.01)
        started = time.perf_counter()
        with pytest.raises(teacher.TeacherError) as err:
            run_generation(work, tmp_path / "hang.jsonl", cfg, progress=False)
        print(f"hanging chat: stopped after {time.perf_counter() - started:.2f} s, "
              f"{app.state.chat_requests} requests")
        assert app.state.chat_requests <= 3 + 2  # the streak, plus what was already in flight
    assert server.base_url in str(err.value) and "3 requests in a row failed" in str(err.value)
    summary = err.value.summary
    assert summary.done == 0 and summary.not_started >= len(work) - 2
    for r in lines(tmp_path / "hang.jsonl"):
        assert r["status"] == "failed" and r["failure"].startswith("timeout")
        assert server.base_url in r["failure"] and "0.5 s timeout" in r["failure"]

    # the server hangs mid-run (after the first check): one timeout and an unanswered probe
    # stop the run, even one request at a time, without waiting out fail_fast_after timeouts
    app = fault_app(hang_chat=True, hang_models_after=1)
    with LocalTeacher(app=app) as server:
        cfg = TeacherConfig(model=LOCAL, base_url=server.base_url, timeout_s=0.5,
                            connect_check_s=0.5, concurrency=1)
        started = time.perf_counter()
        with pytest.raises(teacher.TeacherError) as err:
            run_generation(work, tmp_path / "hung.jsonl", cfg, progress=False)
        print(f"server hung mid-run: stopped after {time.perf_counter() - started:.2f} s, "
              f"{app.state.chat_requests} chat request(s)")
        assert app.state.chat_requests == 1 and app.state.model_requests == 2
    assert "GET " + server.base_url + "/models got none either" in str(err.value)


# --------------------------------------------------------------------------------------------
# 7. the local teacher: unknown model, deep JSON, huge images


def test_unknown_model_is_a_404_and_the_run_names_the_models_there(work, tmp_path):
    with LocalTeacher() as server:
        with httpx.Client(base_url=server.base_url, timeout=10) as http:
            body = {"model": "gpt-4o", "messages": teacher.build_messages(work[0])}
            r = http.post("/chat/completions", json=body)
            assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
            assert LOCAL in r.json()["error"]["message"]
            r = http.post("/chat/completions", content=b"[" * 100_000,
                          headers={"content-type": "application/json"})
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
            assert "nested" in r.json()["error"]["message"]
        cfg = TeacherConfig(model="gpt-4o", base_url=server.base_url)
        with pytest.raises(teacher.TeacherError) as err:
            run_generation(work, tmp_path / "t.jsonl", cfg, progress=False)
        assert server.requests <= 3 + cfg.concurrency
    message = str(err.value)
    assert "no model 'gpt-4o'" in message and repr(LOCAL) in message and server.base_url in message


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_huge_images_are_not_decoded_and_memory_stays_low(work):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (6300, 6300), (200, 30, 30)).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    messages = teacher.build_messages(work[0])
    messages[1]["content"][0]["image_url"]["url"] = url
    body = {"model": LOCAL, "messages": messages}
    with LocalTeacher(process=True) as server:
        pid = server._proc.pid
        before = _rss_mb(pid)

        async def send_eight() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as http:
                return await asyncio.gather(*[http.post("/chat/completions", json=body)
                                              for _ in range(8)])

        responses = asyncio.run(send_eight())
        after = _rss_mb(pid)
        notes = [e["fault"] for e in server.injections]
    print(f"local teacher RSS: {before:.0f} MB before, {after:.0f} MB after 8 concurrent "
          f"{len(buffer.getvalue()) // 1024} KB 6300x6300 PNGs")
    assert all(r.status_code == 200 for r in responses)
    text = responses[0].json()["choices"][0]["message"]["content"]
    assert "6300x6300" in text and notes == ["not_a_scene"] * 8
    assert after < 300
    # beyond the bomb guard's 40M pixels: still refused with a 400, from the header alone
    buffer = io.BytesIO()
    Image.new("1", (7000, 7000)).save(buffer, format="PNG")
    messages[1]["content"][0]["image_url"]["url"] = (
        "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode())
    with LocalTeacher() as server, httpx.Client(base_url=server.base_url, timeout=30) as http:
        r = http.post("/chat/completions", json={"model": LOCAL, "messages": messages})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_image"
    assert "decompression bomb" in r.json()["error"]["message"]


# --------------------------------------------------------------------------------------------
# 8. the filter: every record gets a named reason, never an exception


def test_filter_names_records_it_cannot_read_and_the_report_renders(work, tmp_path):
    task = work[0]
    good = teacher_server.complete({"model": LOCAL, "messages": teacher.build_messages(task)})
    text = good["choices"][0]["message"]["content"]
    records = [None, [1, 2], "a string",
               {"task_id": work[1].id, "status": "done", "text": 5},
               {"task_id": task.id, "status": "done", "text": text}]
    verdicts = filtering.filter_traces(records, work)
    assert [v.reason for v in verdicts] == ["record:not_an_object"] * 3 + [
        "text:not_a_string", "kept"]
    rendered = filtering.report(verdicts, records).to_markdown()
    assert "record:not_an_object" in rendered and "text:not_a_string" in rendered
    path = tmp_path / "traces.jsonl"
    path.write_text("null\n[1]\n{not json\n" + json.dumps(records[-1]) + "\n")
    read = filtering.read_traces(path)
    assert len(read) == 4
    reasons = [v.reason for v in filtering.filter_traces(read, work)]
    assert reasons == ["record:not_an_object", "record:not_an_object", "record:not_json", "kept"]

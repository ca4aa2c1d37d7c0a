"""The local teacher as a FastAPI app: ``/v1/chat/completions``, ``/v1/models``, ``/health`` and
the injection log, with OpenAI-shaped errors and the configured faults."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cotlib import teacher
from cotlib.teacher_server.settings import MAX_BODY_BYTES, MODEL_ID, MODELS, Faults
from cotlib.teacher_server.traces import (
    RequestError,
    check_body,
    check_model,
    complete_request,
    judge_completion,
    judge_text,
    validate_request,
)

log = logging.getLogger(__name__)


# -----------------------------------------------------------------------------
# the FastAPI app


def _error(status: int, message: str, *, type: str = "invalid_request_error",
           param: str | None = None, code: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestError(f"request body is {int(declared):,} bytes; the limit is {limit:,}",
                           code="request_too_large", status=413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"request body exceeds the limit of {limit:,} bytes",
                               code="request_too_large", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(faults: Faults | None = None, seed: int = 0, *,
               max_body_bytes: int = MAX_BODY_BYTES,
               models: tuple[str, ...] = MODELS) -> FastAPI:
    """The local teacher as a FastAPI app.

    Routes: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /health``,
    ``GET /v1/cotlib/injections`` (``{"requests": n, "judge_requests": m, "data": [entry, ...]}``,
    each entry ``{request_id, request_key, task_hint, fault, detail, mode}``). Any
    ``Authorization`` header is accepted and never looked at. A ``model`` not in ``models``
    gets OpenAI's 404 ``model_not_found`` (naming the models there are); a body nested too deeply
    to parse gets a 400. State: ``app.state.injections``
    (list of entries), ``app.state.requests`` (count of trace requests, bad ones included),
    ``app.state.judge_requests`` (count of judge requests), ``app.state.faults``.

    A chat request whose system message is :data:`cotlib.filtering.JUDGE_INSTRUCTION` is the
    filter's LLM judge (text only, no image): it is answered "valid" or "invalid" by
    :func:`cotlib.filtering.local_judge_reply`, after the configured latency, and never gets a
    fault -- so judge calls neither shift the fault draws of trace requests nor appear in the
    injection log.
    """
    faults = faults or Faults()
    app = FastAPI(title="cotlib local teacher", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.faults = faults
    app.state.injections = []
    app.state.requests = 0
    app.state.judge_requests = 0
    rng = random.Random(faults.seed)  # 429s, 500s and latency jitter, in arrival order
    judge_rng = random.Random(f"judge:{faults.seed}")  # judge latency jitter only

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail), code=str(exc.status_code))

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": MODEL_ID}

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "cotlib"}
            for name in models]}

    @app.get("/v1/cotlib/injections")
    async def injections():
        return {"object": "list", "requests": app.state.requests,
                "judge_requests": app.state.judge_requests, "data": list(app.state.injections)}

    def log_entry(request_id: str, request_key: str | None, question: str, fault: str,
                  mode: str | None, detail: Any = None) -> None:
        app.state.injections.append({
            "request_id": request_id, "request_key": request_key,
            "task_hint": question[:80], "fault": fault, "detail": detail, "mode": mode,
        })

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        arrived = time.monotonic()
        try:
            body = json.loads(await _read_body(request, max_body_bytes))
            check_body(body)
            check_model(body, models)
        except RequestError as err:
            app.state.requests += 1
            return _error(err.status, str(err), param=err.param, code=err.code)
        except RecursionError:  # e.g. 100,000 '[': json.loads runs out of stack
            app.state.requests += 1
            return _error(400, "the request body is nested too deeply to be a chat request",
                          code="invalid_json")
        except ValueError:
            app.state.requests += 1
            return _error(400, "the request body is not valid JSON", code="invalid_json")
        judged = judge_text(body)
        if judged is not None:  # the filter's LLM judge: latency, but no faults and no log
            app.state.judge_requests += 1
            request_id = f"chatcmpl-cotlib-judge-{app.state.judge_requests:06d}"
            try:
                result = judge_completion(body, judged, request_id=request_id)
            except RequestError as err:
                return _error(err.status, str(err), param=err.param, code=err.code)
            delay = max(0.0, faults.latency_ms + judge_rng.uniform(-1, 1)
                        * faults.latency_jitter_ms) / 1000
            await asyncio.sleep(arrived + delay - time.monotonic())
            return JSONResponse(result)
        app.state.requests += 1
        request_id = f"chatcmpl-cotlib-{app.state.requests:06d}"
        try:
            url, _, parsed = validate_request(body)
        except RequestError as err:
            return _error(err.status, str(err), param=err.param, code=err.code)
        key = teacher.request_key(parsed.question, url)
        u = rng.random()
        if u < faults.rate_429:
            log_entry(request_id, key, parsed.question, "rate_limit", parsed.mode)
            wait = faults.retry_after_s
            return _error(429, f"Rate limit reached for {MODEL_ID} (injected); please try again "
                          f"in {wait:g}s.", type="requests", code="rate_limit_exceeded",
                          headers={"retry-after": f"{wait:g}",
                                   "retry-after-ms": str(round(wait * 1000))})
        jitter = rng.uniform(-1, 1) * faults.latency_jitter_ms
        deadline = arrived + max(0.0, faults.latency_ms + jitter) / 1000
        if u < faults.rate_429 + faults.rate_500:
            log_entry(request_id, key, parsed.question, "server_error", parsed.mode)
            await asyncio.sleep(deadline - time.monotonic())
            return _error(500, "The server had an error while processing your request "
                          "(injected). Sorry about that!", type="server_error")
        # Content faults are drawn per request (the seed and the request's key), not from the
        # arrival-order stream: whatever the client's concurrency, the same tasks get the same
        # faults, so a run's traces, and the datasets built from them, repeat.
        content_rng = random.Random(f"{faults.seed}\x00{key}")
        v = content_rng.random()
        fault = None
        for name, rate in (("refusal", faults.rate_refusal), ("malformed", faults.rate_malformed),
                           ("wrong_answer", faults.rate_wrong_answer)):
            if v < rate:
                fault = name
                break
            v -= rate
        fault_rng = random.Random(content_rng.random())
        try:
            # ~2 ms of CPU (decode, scene recovery, solve): in a worker thread, so the loop keeps
            # accepting requests and each one's latency counts from its arrival
            result = await asyncio.to_thread(
                complete_request, body, url, parsed, seed=seed, fault=fault,
                fault_rng=fault_rng,
                request_id=request_id)
        except RequestError as err:
            return _error(err.status, str(err), param=err.param, code=err.code)
        except Exception:  # a bug: answer like a real API, keep serving
            log.exception("local teacher failed on request %s", request_id)
            return _error(500, "The local teacher failed on this request; see the server log.",
                          type="server_error")
        info = result.pop("_cotlib")
        if info["note"]:
            log_entry(request_id, key, parsed.question, info["note"], parsed.mode)
        if fault:
            log_entry(request_id, key, parsed.question, fault, parsed.mode, info["detail"])
        await asyncio.sleep(deadline - time.monotonic())
        return JSONResponse(result)

    return app

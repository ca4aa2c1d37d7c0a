"""A local OpenAI-compatible teacher: it reads the image in the request and writes a trace.

It speaks the ``/v1/chat/completions`` protocol, so the same ``openai`` client code talks to it,
to OpenAI and to a vLLM server. It sees ONLY the request: it decodes the image data URL, recovers
the exact scene from the pixels (:func:`cotlib.synth.scene_from_image`), parses the question (and
the standard answer, in conditioned mode) with :func:`cotlib.teacher.parse_request_text`, solves
it with :func:`cotlib.synth.solve`, and writes the four stages:

- SUMMARY: a plan for this kind of question;
- CAPTION: :func:`cotlib.synth.listing` of the scene (cell by cell, or bar by bar: compact, and the
  form the shipped base learned to caption in);
- REASONING: the solver's steps;
- CONCLUSION: the answer (the option letter for multiple choice). In conditioned mode it is the
  given standard answer; if that disagrees with the solver, the trace still concludes with it,
  as GPT-4o was instructed to (the disagreement goes to the injection log as ``answer_disagrees``).

An image that is not a course scene (a photo) or a question that is not a course template still
gets a well-formed trace that says it can only read course scenes (conclusion: the standard
answer when given, else "I cannot tell from this image."), logged as ``not_a_scene`` /
``unknown_question``. Wording varies among a few phrasings, chosen deterministically from a hash
of the request and the server seed, so identical requests get identical traces.

Faults (:class:`Faults`) are drawn per request: transport faults (429 with ``Retry-After``, 500)
first, from one seeded RNG in arrival order (so a retry can succeed); then content faults
(refusal, malformed format, wrong answer), from the seed and the request's key (so the same
tasks get the same faults whatever the client's concurrency, and runs repeat). Every fault is
appended to ``app.state.injections`` (served at ``GET /v1/cotlib/injections``) with the request's
:func:`cotlib.teacher.request_key`; nothing in the response itself marks it.

It also answers the filter's LLM judge (:func:`cotlib.filtering.judge_with_teacher`): a text-only
request whose system message is :data:`cotlib.filtering.JUDGE_INSTRUCTION` gets "valid" or
"invalid" from :func:`cotlib.filtering.local_judge_reply` (after the latency; never a fault).

Token counts are rough: ``len(text) // 4`` for text plus 85 per image (GPT-4o's low-detail image
cost), at least 1.

>>> from cotlib import synth, teacher
>>> task = synth.make_task(0, "count_color")
>>> body = {"model": "m", "messages": teacher.build_messages(task)}
>>> text = complete(body)["choices"][0]["message"]["content"]
>>> from cotlib import stages
>>> stages.parse(text).ok, stages.final_answer(text) == task.answer
(True, True)
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import hashlib
import http.client
import io
import json
import logging
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cotlib import images, stages, synth, teacher

log = logging.getLogger(__name__)

MODEL_ID = teacher.LOCAL_MODEL
MAX_BODY_BYTES = 8 * 1024 * 1024
#: Images with more pixels than this are never decoded (a course scene has 192 x 192 = 36,864):
#: decoding one costs 3 bytes a pixel, and the server may hold several at once.
MAX_DECODE_PIXELS = 1024 * 1024
#: Models the local teacher answers to; any other name gets OpenAI's 404 ``model_not_found``.
MODELS = (MODEL_ID,)
IMAGE_TOKENS = 85
#: Seconds an idle keep-alive connection stays open. Longer than the openai client's 5 s, so the
#: client always closes first: a server closing a connection just as the client reuses it would
#: fail that request with a connection error.
KEEP_ALIVE_S = 30

#: Fault kinds that the server injects on purpose.
INJECTED = ("rate_limit", "server_error", "refusal", "malformed", "wrong_answer")
#: Notes about requests the teacher could not answer faithfully (also in the injection log).
NOTES = ("answer_disagrees", "not_a_scene", "unknown_question")


@dataclass
class Faults:
    """What can go wrong, per request. Rates are probabilities in [0, 1].

    Latency is the time from a request's arrival to its response (processing included, like a
    real API), uniform in ``[latency_ms - latency_jitter_ms, latency_ms + latency_jitter_ms]``
    (clipped at 0). It applies to answers and 500s; injected 429s come back at once.
    ``rate_429 + rate_500 <= 1`` and ``rate_refusal + rate_malformed + rate_wrong_answer <= 1``.

    >>> Faults(rate_429=0.2, retry_after_s=0.05).rate_429
    0.2
    """

    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    rate_429: float = 0.0
    retry_after_s: float = 0.1  # sent as Retry-After (seconds) and retry-after-ms
    rate_500: float = 0.0
    rate_malformed: float = 0.0  # a stage missing, an unclosed tag, or stages out of order
    rate_wrong_answer: float = 0.0  # CONCLUSION contradicts the solution
    rate_refusal: float = 0.0  # "I'm sorry, I can't help with that."
    seed: int = 0

    def __post_init__(self) -> None:
        rates = {k: v for k, v in asdict(self).items() if k.startswith("rate_")}
        for name, value in rates.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.rate_429 + self.rate_500 > 1.0:
            raise ValueError("rate_429 + rate_500 must be <= 1")
        if self.rate_refusal + self.rate_malformed + self.rate_wrong_answer > 1.0:
            raise ValueError("rate_refusal + rate_malformed + rate_wrong_answer must be <= 1")
        if self.latency_ms < 0 or self.latency_jitter_ms < 0 or self.retry_after_s < 0:
            raise ValueError("latencies and retry_after_s must be >= 0")


# -----------------------------------------------------------------------------
# writing a trace (pure functions: no server needed)

#: The local teacher's wording varies like a real teacher's (three plans per question kind, three
#: caption leads, three closers) but keeps to words of the course's scenes and questions: the
#: shipped base's 695-token vocabulary spells other words letter by letter, and the tiny model's
#: format broke in such words: with an earlier wording (32 tokens per plan, 24 now), 10 of a
#: demo's 12 badly formatted answers garbled the SUMMARY and lost its closing tag.
_PLANS: dict[str, tuple[str, ...]] = {
    "count": (
        "I will look at the grid and count the {target}s.",
        "The question is how many {target}s there are, so I will look at the grid and count them.",
        "To answer, I will look at the grid cell by cell and count the {target}s.",
    ),
    "compare_counts": (
        "I will count the two sets of objects and compare the counts.",
        "To answer, I will count the objects of the two sets, then see which has more.",
        "I will count the objects the question is about and find which set has more.",
    ),
    "count_sum": (
        "I will count the two sets of objects and add the counts.",
        "The question asks for a total, so I will count the two sets and add them.",
        "I will count the objects of the two sets, then add the two counts for the total.",
    ),
    "spatial": (
        "I will find the objects in the question and look at their cells in the grid.",
        "To answer, I will find the relevant objects and look at where they are in the grid.",
        "I will find the cells of the relevant objects and compare their positions.",
    ),
    "color_of_shape": (
        "I will find the shape the question is about and look at its color.",
        "To answer, I will find the shape of that size and give its color.",
        "I will look at the shapes of that kind, find the one of that size and give its color.",
    ),
    "bars": (
        "I will read the height of every bar from the gridlines, then answer.",
        "The image is a bar chart, so I will read the value of every bar from the gridlines.",
        "To answer, I will read the bars on the gridlines and compare their values.",
    ),
}
_CAPTION_LEADS = ("", "The image shows: ", "In the image: ")
_CLOSERS = ("So the answer is {answer}.", "The final answer is {answer}.",
            "That makes the answer {answer}.")
_REFUSALS = (
    "I'm sorry, I can't help with that.",
    "I'm sorry, but I can't assist with this request.",
    "Sorry, I can't help with analysing this image.",
)


def _plan_kind(task_type: str) -> str:
    if task_type.startswith("count_") and task_type != "count_sum":
        return "count"
    if task_type.startswith("bar_"):
        return "bars"
    return task_type


def _target(params: dict) -> str:
    parts = [params[k] for k in ("size", "color", "shape") if k in params]
    return " ".join(parts) if "shape" in params else " ".join(parts + ["object"])


def _norm(answer: str) -> str:
    return " ".join(str(answer).lower().strip().rstrip(".").split())


@dataclass
class Draft:
    """A trace before faults: stage texts plus what the teacher believes."""

    stages: dict[str, str]
    answer: str  # the CONCLUSION as written
    solution: str | None  # what the solver found (None when it could not solve)
    note: str | None = None  # one of NOTES, if any


def draft_trace(
    image_url: str, question: str, standard: str | None, rng: random.Random
) -> Draft:
    """The stage texts for one request (``standard`` is None in blind mode). Raises
    :class:`cotlib.images.ImageError` for an undecodable data URL.

    The image's size is read from its header first: one larger than :data:`MAX_DECODE_PIXELS`
    cannot be a course scene (192x192), so its pixels are never decoded (eight concurrent
    6300x6300 PNGs would otherwise take gigabytes) and the trace says it is not a scene."""
    size = image_size(image_url)
    if size is not None and size[0] * size[1] > images.DEFAULT_MAX_PIXELS:  # the bomb guard
        raise images._bomb_error("data URL", size[0] * size[1], images.DEFAULT_MAX_PIXELS)
    if size is not None and size[0] * size[1] > MAX_DECODE_PIXELS:
        s = synth.DEFAULT_CONFIG.image_size
        return _cannot_read(standard, rng, "not_a_scene",
                            f"The image ({size[0]}x{size[1]} pixels) is not one of the course's "
                            f"{s}x{s} synthetic scenes, so I cannot describe its contents.")
    image = images.data_url_to_image(image_url)
    try:
        scene = synth.scene_from_image(image)
    except ValueError:
        return _cannot_read(standard, rng, "not_a_scene",
                            f"The image ({image.width}x{image.height} pixels) is not one of the "
                            "course's synthetic scenes, so I cannot describe its contents.")
    try:
        parsed = synth.parse_question(question)
        solution, steps = synth.solve(question, scene)
    except ValueError:
        return _cannot_read(standard, rng, "unknown_question",
                            synth.describe(scene) + " The question is not one I can answer "
                            "from this scene.")
    shown = solution  # for multiple choice too: the option's text, the course's one answer form
    answer, note = shown, None
    if standard is not None:
        agrees = _norm(standard) in {_norm(shown), _norm(solution), _norm(f"{shown}. {solution}")}
        answer = standard
        if not agrees:
            note = "answer_disagrees"
            steps = [*steps, f"Taking another look, the answer is {standard}."]
    plan = rng.choice(_PLANS.get(_plan_kind(parsed.task_type), _PLANS["spatial"]))
    closer = rng.choice(_CLOSERS).format(answer=answer)
    sep = rng.choice((" ", "\n"))
    return Draft(
        stages={
            "SUMMARY": plan.format(target=_target(parsed.params)),
            "CAPTION": rng.choice(_CAPTION_LEADS) + synth.listing(scene),
            "REASONING": sep.join([*steps, closer]),
            "CONCLUSION": answer,
        },
        answer=answer,
        solution=shown,
        note=note,
    )


def image_size(image_url: str) -> tuple[int, int] | None:
    """(width, height) of a data-URL image from its header alone (no pixels decoded); None when
    the header cannot be read (the full decode then says why).

    >>> from PIL import Image
    >>> image_size(images.image_to_data_url(Image.new("RGB", (300, 20))))
    (300, 20)
    """
    from PIL import Image

    try:
        data = images._decode_data_url(image_url)
        with Image.open(io.BytesIO(data)) as probe:  # lazy: reads the header only
            return probe.size
    except Exception:  # not base64, not an image, a bomb...: data_url_to_image explains
        return None


def _cannot_read(standard: str | None, rng: random.Random, note: str, caption: str) -> Draft:
    answer = standard if standard is not None else "I cannot tell from this image."
    return Draft(
        stages={
            "SUMMARY": rng.choice((
                "I can only read the course's synthetic shape grids and bar charts.",
                "This local teacher understands only the course's synthetic scenes and questions.",
            )),
            "CAPTION": caption,
            "REASONING": "Without a scene and question I can read, I cannot check the answer "
                         "step by step.",
            "CONCLUSION": answer,
        },
        answer=answer,
        solution=None,
        note=note,
    )


def _wrong(answer: str, question: str, rng: random.Random) -> str:
    """A plausible answer that differs from ``answer``."""
    try:
        choices = synth.parse_question(question).choices
    except ValueError:
        choices = None
    if choices:  # another option, in the form the answer was given (its letter or its text)
        given = answer.strip()
        letter = len(given) == 1 and given.upper() in synth.LETTERS[: len(choices)]
        right = synth.LETTERS.index(given.upper()) if letter else next(
            (i for i, c in enumerate(choices) if _norm(c) == _norm(given)), None)
        others = [i for i in range(len(choices)) if i != right]
        pick = rng.choice(others)
        return synth.LETTERS[pick] if letter else choices[pick]
    a = _norm(answer)
    if a in ("yes", "no"):
        return "no" if a == "yes" else "yes"
    if a.isdigit():
        n = int(a)
        return str(n + 1 if n == 0 or rng.random() < 0.5 else n - 1)
    for vocab in (synth.COLORS, synth.SHAPES):
        if a in vocab:
            return rng.choice([v for v in vocab if v != a])
    return "none"


def _malformed(parts: dict[str, str], rng: random.Random) -> tuple[str, str]:
    """Break the format one of three ways; returns (text, how)."""
    how = rng.choice(("missing_stage", "unclosed_tag", "out_of_order"))
    if how == "missing_stage":
        gone = rng.choice(stages.STAGES)
        text = "\n\n".join(f"<{s}> {t} </{s}>" for s, t in parts.items() if s != gone)
    elif how == "unclosed_tag":
        cut = rng.choice(stages.STAGES)
        text = stages.render_dict(parts).replace(stages.close_tag(cut), "", 1)
    else:
        order = ["CAPTION", "SUMMARY", "REASONING", "CONCLUSION"]
        text = "\n\n".join(f"<{s}> {parts[s]} </{s}>" for s in order)
    return text, how


def count_tokens(text: str) -> int:
    """Rough token count: one token per 4 characters, at least 1.

    >>> count_tokens("abcdefgh")
    2
    """
    return max(1, len(text) // 4)


def _wording_rng(body: Mapping[str, Any], seed: int) -> random.Random:
    digest = hashlib.sha256(f"{seed}\x00".encode())
    digest.update(json.dumps(body.get("messages"), sort_keys=True).encode("utf-8", "replace"))
    return random.Random(digest.digest())


class RequestError(ValueError):
    """A bad request: becomes an OpenAI-shaped 4xx response."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 status: int = 400) -> None:
        super().__init__(message)
        self.param, self.code, self.status = param, code, status


def _check_body(body: Any) -> None:
    """The checks every chat request gets (trace or judge)."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"].strip():
        raise RequestError("you must provide a model parameter", param="model",
                           code="missing_required_parameter")
    if body.get("stream"):
        raise RequestError("streaming not supported by the local teacher", param="stream",
                           code="unsupported_parameter")
    if body.get("n") not in (None, 1):
        raise RequestError("the local teacher returns one choice: n must be 1", param="n",
                           code="unsupported_value")
    if "messages" not in body:
        raise RequestError("you must provide a messages parameter", param="messages",
                           code="missing_required_parameter")


def _check_model(body: Mapping[str, Any], models: tuple[str, ...]) -> None:
    """OpenAI's answer to a model it does not serve: 404 ``model_not_found``."""
    if body["model"] not in models:
        raise RequestError(f"The model `{body['model'][:100]}` does not exist or you do not have "
                           f"access to it. This server has: {', '.join(models)}.",
                           param="model", code="model_not_found", status=404)


def _validate(body: Any) -> tuple[str, str, teacher.RequestText]:
    _check_body(body)
    try:
        url, text = teacher.request_parts(body["messages"])
        request = teacher.parse_request_text(text)
    except ValueError as err:
        raise RequestError(str(err), param="messages", code="invalid_value") from None
    if not url.startswith("data:"):
        raise RequestError("the local teacher cannot fetch image URLs: send the image as a "
                           "base64 data URL (data:image/png;base64,...)", param="messages",
                           code="invalid_image_url")
    return url, text, request


def _text_of(content: Any) -> str | None:
    """A message's text: the string itself, or its text parts joined; None for anything else."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p["text"] for p in content if isinstance(p, dict)
                 and p.get("type") == "text" and isinstance(p.get("text"), str)]
        return "\n".join(texts) if texts else None
    return None


def judge_text(body: Any) -> str | None:
    """The user text of an LLM-judge request -- one whose system message is
    :data:`cotlib.filtering.JUDGE_INSTRUCTION` -- ("" if it has none), or None for any other
    request.

    >>> from cotlib import filtering
    >>> judge_text({"messages": filtering.judge_messages("Three.", "3")})
    'Response: Three.\\nStandard answer: 3'
    """
    # imported here, not at the top: cotlib.filtering may come to import this module
    from cotlib.filtering import JUDGE_INSTRUCTION

    messages = body.get("messages") if isinstance(body, Mapping) else None
    if not isinstance(messages, list):
        return None
    if not any(isinstance(m, dict) and m.get("role") == "system"
               and (_text_of(m.get("content")) or "").strip() == JUDGE_INSTRUCTION
               for m in messages):
        return None
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return (_text_of(users[-1].get("content")) if users else None) or ""


def judge_completion(body: Mapping[str, Any], text: str, *,
                     request_id: str = "chatcmpl-cotlib-judge") -> dict:
    """The ``chat.completion`` answering a judge request whose user text is ``text``: "valid" or
    "invalid" from :func:`cotlib.filtering.local_judge_reply` (rule-based, like the trace).
    Raises :class:`RequestError` when ``text`` is empty."""
    from cotlib.filtering import local_judge_reply

    if not text.strip():
        raise RequestError("a judge request needs a user message 'Response: ...\\nStandard "
                           "answer: ...' (filtering.judge_request_text)", param="messages",
                           code="invalid_value")
    return _completion(body, local_judge_reply(text), request_id=request_id)


def _completion(body: Mapping[str, Any], text: str, *, request_id: str) -> dict:
    """A ``chat.completion`` object for ``text`` (cut to ``max_tokens``) with rough usage."""
    finish = "stop"
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(max_tokens, int) and max_tokens > 0 and count_tokens(text) > max_tokens:
        text, finish = text[: max_tokens * 4], "length"
    prompt_tokens = _prompt_tokens(body.get("messages"))
    completion_tokens = count_tokens(text)
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "system_fingerprint": "cotlib-local",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": None},
            "logprobs": None,
            "finish_reason": finish,
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def complete(
    body: Mapping[str, Any],
    *,
    seed: int = 0,
    fault: str | None = None,
    fault_rng: random.Random | None = None,
    request_id: str = "chatcmpl-cotlib-local",
) -> dict:
    """The ``chat.completion`` object for a request body, with an optional content ``fault``
    ("refusal", "malformed", "wrong_answer"). Raises :class:`RequestError` for a bad request.
    Returns the completion with a private ``"_cotlib"`` entry (popped by the server) describing
    the request, the note and the fault detail. A judge request (:func:`judge_text`) gets the
    judge's one-word reply, never a fault.
    """
    _check_body(body)
    judged = judge_text(body)
    if judged is not None:
        return {**judge_completion(body, judged, request_id=request_id), "_cotlib": {
            "request_key": None, "question": judged, "mode": "judge", "note": None,
            "detail": None}}
    url, _, request = _validate(body)
    return _complete(body, url, request, seed=seed, fault=fault, fault_rng=fault_rng,
                     request_id=request_id)


def _complete(body: Mapping[str, Any], url: str, request: teacher.RequestText, *, seed: int,
              fault: str | None, fault_rng: random.Random | None, request_id: str) -> dict:
    rng = _wording_rng(body, seed)
    fault_rng = fault_rng or random.Random(seed)
    try:
        draft = draft_trace(url, request.question, request.answer, rng)
    except images.ImageError as err:
        raise RequestError(f"invalid image: {err}", param="messages",
                           code="invalid_image") from None
    detail = None
    try:
        text = stages.render_dict(draft.stages)  # raises if the standard answer holds a tag
    except ValueError as err:
        raise RequestError(f"cannot write a trace: {err}", param="messages",
                           code="invalid_value") from None
    if fault == "refusal":
        text = fault_rng.choice(_REFUSALS)
    elif fault == "malformed":
        text, detail = _malformed(draft.stages, fault_rng)
    elif fault == "wrong_answer":
        detail = _wrong(draft.answer, request.question, fault_rng)
        text = stages.render_dict({**draft.stages, "CONCLUSION": detail})
    return {
        **_completion(body, text, request_id=request_id),
        "_cotlib": {
            "request_key": teacher.request_key(request.question, url),
            "question": request.question,
            "mode": request.mode,
            "note": draft.note,
            "detail": detail,
        },
    }


def _prompt_tokens(messages: Any) -> int:
    total = 0
    for m in messages if isinstance(messages, list) else []:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            total += len(content) // 4
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    continue
                if part.get("type") == "image_url":
                    total += IMAGE_TOKENS
                elif isinstance(part.get("text"), str):
                    total += len(part["text"]) // 4
    return max(1, total)


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
            _check_body(body)
            _check_model(body, models)
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
            url, _, parsed = _validate(body)
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
                _complete, body, url, parsed, seed=seed, fault=fault, fault_rng=fault_rng,
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


# -----------------------------------------------------------------------------
# running it: in a background thread (notebooks, tests) or in the foreground (CLI)


class LocalTeacher:
    """Run the local teacher on 127.0.0.1 in a background thread (own event loop, so it works
    inside Jupyter too), or with ``process=True`` in a child process, which keeps the server's
    CPU work off your Python process (use it for throughput measurements).

    >>> with LocalTeacher() as t:  # doctest: +ELLIPSIS
    ...     t.base_url
    'http://127.0.0.1:.../v1'
    """

    def __init__(self, faults: Faults | None = None, *, port: int = 0, host: str = "127.0.0.1",
                 seed: int = 0, app: Any = None, process: bool = False,
                 startup_timeout_s: float = 15.0) -> None:
        if process and app is not None:
            raise ValueError("process=True runs the standard app: pass faults, not app")
        self.faults = faults or Faults()
        self.host, self.port, self.seed = host, port, seed
        self.process = process
        self.app = None if process else (app if app is not None else create_app(self.faults, seed))
        self.startup_timeout_s = startup_timeout_s
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def injections(self) -> list[dict]:
        """A copy of the injection log."""
        if self.app is None:
            return self._get("/v1/cotlib/injections")["data"]
        return list(self.app.state.injections)

    @property
    def requests(self) -> int:
        """How many trace requests arrived so far (judge requests not included)."""
        if self.app is None:
            return int(self._get("/v1/cotlib/injections")["requests"])
        return int(self.app.state.requests)

    @property
    def judge_requests(self) -> int:
        """How many judge requests arrived so far."""
        if self.app is None:
            return int(self._get("/v1/cotlib/injections")["judge_requests"])
        return int(self.app.state.judge_requests)

    def _get(self, path: str) -> Any:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request("GET", path)
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def start(self) -> LocalTeacher:
        if self.process:
            return self._start_process()
        import uvicorn

        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off",
                                backlog=2048, timeout_keep_alive=KEEP_ALIVE_S,
                                timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"cotlib-teacher-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if not self._thread.is_alive():
                raise RuntimeError(f"the local teacher on port {self.port} failed to start")
            if self._server.started and _healthy(self.host, self.port):
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"the local teacher did not answer /health within "
                           f"{self.startup_timeout_s} s")

    def _start_process(self) -> LocalTeacher:
        cmd = [sys.executable, "-m", "cotlib.teacher_server", "--host", self.host,
               "--port", str(self.port), "--seed", str(self.seed), *_fault_args(self.faults)]
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr,
                                      text=True)
        line = self._proc.stdout.readline() if self._proc.stdout else ""  # the URL line
        match = re.search(r"http://\S+:(\d+)/v1", line)
        if match:
            self.port = int(match.group(1))
            deadline = time.monotonic() + self.startup_timeout_s
            while time.monotonic() < deadline and self._proc.poll() is None:
                if _healthy(self.host, self.port):
                    return self
                time.sleep(0.05)
        self.stop()
        self._stderr.seek(0)
        detail = self._stderr.read().decode(errors="replace")[-2000:]
        raise RuntimeError(f"the local teacher process did not start: {detail or line!r}")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
            if self._proc.stdout:
                self._proc.stdout.close()
            self._proc = None
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=5)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> LocalTeacher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _fault_args(faults: Faults) -> list[str]:
    """Command-line flags of :func:`main` that recreate ``faults``."""
    args = []
    for name, value in asdict(faults).items():
        flag = {"seed": "fault-seed", "retry_after_s": "retry-after"}.get(name, name)
        args += [f"--{flag.replace('_', '-')}", repr(value)]
    return args


def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket with TCP_NODELAY, which accepted connections inherit.

    Without it, keep-alive requests wait ~40 ms each: the response goes out in two writes and
    Nagle's algorithm holds the second until the client's delayed ACK arrives.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        if err.errno != errno.EADDRINUSE:
            raise
        raise OSError(err.errno, f"port {port} on {host} is already in use (another teacher "
                      "running?): choose another with --port, or stop the other process") from None
    return sock


def _healthy(host: str, port: int) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=2)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def serve(host: str = "127.0.0.1", port: int = 8765, faults: Faults | None = None,
          seed: int = 0) -> None:
    """Run the local teacher in the foreground until Ctrl-C."""
    import uvicorn

    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: anyone who can reach this address can use the teacher", host)
    sock = _bind(host, port)  # port 0 picks a free port; the line below names it
    print(f"cotlib local teacher on http://{host}:{sock.getsockname()[1]}/v1 "
          f"(model {MODEL_ID!r}); Ctrl-C to stop", flush=True)
    config = uvicorn.Config(create_app(faults, seed=seed), log_level="warning",
                            access_log=False, lifespan="off", backlog=2048,
                            timeout_keep_alive=KEEP_ALIVE_S)
    uvicorn.Server(config).run(sockets=[sock])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cotlib teacher serve",
                                description="Run the local OpenAI-compatible teacher.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--seed", type=int, default=0, help="wording seed")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--latency-jitter-ms", type=float, default=0.0)
    p.add_argument("--rate-429", type=float, default=0.0)
    p.add_argument("--retry-after", type=float, default=0.1, help="seconds, sent with 429s")
    p.add_argument("--rate-500", type=float, default=0.0)
    p.add_argument("--rate-malformed", type=float, default=0.0)
    p.add_argument("--rate-wrong-answer", type=float, default=0.0)
    p.add_argument("--rate-refusal", type=float, default=0.0)
    p.add_argument("--fault-seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    """``cotlib teacher serve --port 8765 --rate-429 0.2 ...``"""
    args = build_parser().parse_args(argv)
    faults = Faults(
        latency_ms=args.latency_ms, latency_jitter_ms=args.latency_jitter_ms,
        rate_429=args.rate_429, retry_after_s=args.retry_after, rate_500=args.rate_500,
        rate_malformed=args.rate_malformed, rate_wrong_answer=args.rate_wrong_answer,
        rate_refusal=args.rate_refusal, seed=args.fault_seed,
    )
    try:
        serve(args.host, args.port, faults, seed=args.seed)
    except OSError as err:
        print(f"cotlib teacher serve ({args.host}:{args.port}): {err.strerror or err}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

"""Writing a trace from a request (pure functions: no server needed): read the scene from the
image, solve the question, word the four stages, inject a content fault; the completion body."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cotlib import images, stages, synth, teacher
from cotlib.teacher_server.settings import (
    IMAGE_TOKENS,
    MAX_DECODE_PIXELS,
)

log = logging.getLogger(__name__)


# -----------------------------------------------------------------------------
# writing a trace (pure functions: no server needed)

#: The local teacher's wording varies like a real teacher's (three plans per question kind, held by
#: each task type: ``synth.task_type(name).plans``; three caption leads, three closers) but keeps
#: to words of the course's scenes and questions (see :data:`cotlib.synth.shapes.COUNT_PLANS`).
_CAPTION_LEADS = ("", "The image shows: ", "In the image: ")
_CLOSERS = ("So the answer is {answer}.", "The final answer is {answer}.",
            "That makes the answer {answer}.")
_REFUSALS = (
    "I'm sorry, I can't help with that.",
    "I'm sorry, but I can't assist with this request.",
    "Sorry, I can't help with analysing this image.",
)


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
    plan = rng.choice(synth.task_type(parsed.task_type).plans)
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


def check_body(body: Any) -> None:
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


def check_model(body: Mapping[str, Any], models: tuple[str, ...]) -> None:
    """OpenAI's answer to a model it does not serve: 404 ``model_not_found``."""
    if body["model"] not in models:
        raise RequestError(f"The model `{body['model'][:100]}` does not exist or you do not have "
                           f"access to it. This server has: {', '.join(models)}.",
                           param="model", code="model_not_found", status=404)


def validate_request(body: Any) -> tuple[str, str, teacher.RequestText]:
    check_body(body)
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
    check_body(body)
    judged = judge_text(body)
    if judged is not None:
        return {**judge_completion(body, judged, request_id=request_id), "_cotlib": {
            "request_key": None, "question": judged, "mode": "judge", "note": None,
            "detail": None}}
    url, _, request = validate_request(body)
    return complete_request(body, url, request, seed=seed, fault=fault, fault_rng=fault_rng,
                     request_id=request_id)


def complete_request(body: Mapping[str, Any], url: str, request: teacher.RequestText, *, seed: int,
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

"""What comes back: which errors are worth retrying, how long to wait, and reading a response
(anything that is not a usable completion is a :class:`BadResponse`)."""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cotlib import images
from cotlib.teacher.client import TeacherConfig, redact

# -----------------------------------------------------------------------------
# errors: which are worth retrying


class BadResponse(ValueError):
    """A 200 response that is not a usable chat completion. ``kind`` names what was wrong
    (the failure reason is ``bad_response:<kind>``); ``cost_usd`` is what it is counted as."""

    def __init__(self, kind: str, message: str, cost_usd: float = 0.0) -> None:
        super().__init__(message)
        self.kind = kind
        self.cost_usd = cost_usd


class TeacherTimeout(TimeoutError):
    """No answer within ``timeout_s``; the message names the time limit and the URL."""


#: Usage above this many tokens in one response is not believed (no model's context is that big).
MAX_BELIEVABLE_TOKENS = 10_000_000


def classify_error(err: BaseException) -> tuple[str, bool]:
    """(failure reason, retryable?) for an exception raised by a teacher call. A malformed 200
    response (:class:`BadResponse`) is retried like a 500.

    >>> classify_error(TimeoutError())
    ('timeout', True)
    >>> classify_error(BadResponse("empty_content", "content is empty"))
    ('bad_response:empty_content', True)
    """
    import openai

    if isinstance(err, BadResponse):
        return f"bad_response:{err.kind}", True
    if isinstance(err, (openai.APITimeoutError, TimeoutError, asyncio.TimeoutError)):
        return "timeout", True
    if isinstance(err, openai.APIConnectionError):
        return "connection", True
    if isinstance(err, openai.APIStatusError):
        status = err.status_code
        if status == 429:
            if getattr(err, "code", None) == "insufficient_quota":
                return "quota", False  # out of credit: waiting won't help
            return "rate_limit", True
        if status >= 500:
            return "server_error", True
        if status in (408, 409):
            return f"http_{status}", True
        names = {400: "bad_request", 401: "auth", 403: "permission", 404: "not_found",
                 413: "too_large", 422: "unprocessable"}
        return names.get(status, f"http_{status}"), False
    if isinstance(err, (images.ImageError, OSError)):
        return "image_error", False
    if isinstance(err, ValueError):
        return "bad_task", False
    return "error", False


def retry_after_s(err: BaseException) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms`` or ``retry-after`` header)."""
    response = getattr(err, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    try:
        if headers.get("retry-after-ms"):
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


def backoff_s(
    retry: int, config: TeacherConfig, rng: random.Random, after: float | None = None
) -> float:
    """Delay before retry number ``retry`` (1, 2, ...): the server's Retry-After when given, else
    "full jitter" ``uniform(0, min(max, base * 2**(retry-1)))``; both capped at ``backoff_max_s``.

    >>> backoff_s(3, TeacherConfig(), random.Random(0), after=0.25)
    0.25
    """
    if after is not None:
        return min(after, config.backoff_max_s)
    return rng.uniform(0, min(config.backoff_max_s, config.backoff_base_s * 2 ** (retry - 1)))


# -----------------------------------------------------------------------------
# reading a response: anything that is not a usable completion is a BadResponse


@dataclass
class Reply:
    """What a usable chat completion holds."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None
    model: str | None
    has_usage: bool = True


def field_of(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def read_usage(usage: Any, max_tokens: int | None = None) -> tuple[int, int] | None:
    """(prompt_tokens, completion_tokens) from a response's ``usage``; None when there is none.
    Raises :class:`BadResponse` (kind ``usage``) for negative, non-integer or absurd counts
    (more than :data:`MAX_BELIEVABLE_TOKENS`, or more completion tokens than ``max_tokens``).

    >>> read_usage({"prompt_tokens": 10, "completion_tokens": 5})
    (10, 5)
    >>> read_usage({"prompt_tokens": -300, "completion_tokens": 5})
    Traceback (most recent call last):
    ...
    cotlib.teacher.replies.BadResponse: usage.prompt_tokens is -300: not a token count
    """
    if usage is None:
        return None
    counts = []
    for name in ("prompt_tokens", "completion_tokens"):
        value = field_of(usage, name)
        if value is None:
            value = 0
        if isinstance(value, bool) or not isinstance(value, int) or not (
                0 <= value <= MAX_BELIEVABLE_TOKENS):
            raise BadResponse("usage", f"usage.{name} is {str(value)[:40]}: not a token count")
        counts.append(value)
    if max_tokens is not None and counts[1] > max_tokens:
        raise BadResponse("usage", f"usage.completion_tokens is {counts[1]}, more than "
                          f"max_tokens={max_tokens}")
    return counts[0], counts[1]


def read_reply(response: Any, max_tokens: int | None = None) -> Reply:
    """The text, usage and finish reason of a chat completion, checked: a body that is not a
    completion (an HTML page), no choices, no message, empty or non-string content, text that
    cannot be written as UTF-8 (a lone surrogate) or impossible usage raise :class:`BadResponse`
    with a kind (``not_a_completion``, ``no_choices``, ``no_message``, ``empty_content``,
    ``content_not_a_string``, ``invalid_unicode``, ``usage``). A refusal (``message.refusal``)
    is a reply: the filter names it.

    >>> read_reply({"choices": [{"message": {"content": "<SUMMARY>x</SUMMARY>"}}]}).text
    '<SUMMARY>x</SUMMARY>'
    >>> read_reply({"choices": []})
    Traceback (most recent call last):
    ...
    cotlib.teacher.replies.BadResponse: the response has no choices (choices: [])
    """
    if isinstance(response, (str, bytes)) or not (
            isinstance(response, Mapping) or hasattr(response, "choices")):
        head = response[:60] if isinstance(response, (str, bytes)) else type(response).__name__
        raise BadResponse("not_a_completion",
                          f"the server answered 200 with something that is not a chat "
                          f"completion: {redact(repr(head))}")
    choices = field_of(response, "choices")
    if not isinstance(choices, (list, tuple)) or not choices:
        raise BadResponse("no_choices", f"the response has no choices (choices: "
                          f"{json.dumps(choices) if choices is None or choices == [] else '...'})")
    choice = choices[0]
    message = field_of(choice, "message")
    if message is None:
        raise BadResponse("no_message", "the first choice has no message")
    content = field_of(message, "content")
    refusal = field_of(message, "refusal")
    text = content if content not in (None, "") else refusal
    if text is None or text == "":
        raise BadResponse("empty_content", "the message content is empty")
    if not isinstance(text, str):
        raise BadResponse("content_not_a_string",
                          f"the message content is a {type(text).__name__}, not a string")
    if not text.strip():
        raise BadResponse("empty_content", "the message content is only whitespace")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise BadResponse("invalid_unicode", f"the message content is not valid Unicode "
                          f"({err.reason} at character {err.start})") from None
    usage = read_usage(field_of(response, "usage"), max_tokens)
    finish = field_of(choice, "finish_reason")
    model = field_of(response, "model")
    return Reply(text, *(usage or (0, 0)), finish if isinstance(finish, str) else None,
                 model if isinstance(model, str) else None, usage is not None)


def complete_with_retries(
    call: Callable[[], Any],
    config: TeacherConfig,
    *,
    max_tokens: int | None = None,
    rng: random.Random | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Reply:
    """One blocking chat completion under the teacher run's retry policy (the filter's LLM judge
    uses it): ``call()`` returns a completion, checked by :func:`read_reply`; what
    :func:`classify_error` calls retryable (429, 5xx, timeouts, connection errors, a malformed
    200) is retried up to ``config.max_retries`` times after :func:`backoff_s` (the server's
    ``Retry-After``, capped); anything else, or the last failure, is raised. The client's own
    retries must be off (``max_retries=0``): one policy, this one (why not the SDK's:
    :func:`cotlib.teacher.run.call_with_retries`).

    >>> replies = iter([BadResponse("no_choices", "no choices"), {"choices": [
    ...     {"message": {"content": "valid"}}]}])
    >>> def call():
    ...     reply = next(replies)
    ...     if isinstance(reply, Exception):
    ...         raise reply
    ...     return reply
    >>> complete_with_retries(call, TeacherConfig(max_retries=1), sleep=lambda s: None).text
    'valid'
    """
    rng = rng or random.Random()
    attempt = 0
    while True:
        attempt += 1
        try:
            return read_reply(call(), max_tokens)
        except Exception as err:
            _, retryable = classify_error(err)
            if not retryable or attempt > config.max_retries:
                raise
            sleep(backoff_s(attempt, config, rng, retry_after_s(err)))

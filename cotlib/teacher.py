"""Generate four-stage traces with a teacher model through the official ``openai`` client.

A teacher (GPT-4o in LLaVA-CoT; here any OpenAI-compatible server, including the local one in
:mod:`cotlib.teacher_server`) receives the image, a fixed instruction and the question -- plus the
standard answer in *answer-conditioned* mode -- and writes
``<SUMMARY>…</SUMMARY> <CAPTION>…</CAPTION> <REASONING>…</REASONING> <CONCLUSION>…</CONCLUSION>``.

This module holds, in one place:

- the prompt (``TEACHER_INSTRUCTION``, :func:`build_messages`, :func:`request_text`) and its
  inverse (:func:`parse_request_text`), shared with the local teacher and the tests;
- prices and cost estimates (``PRICES``, :func:`estimate_cost`, :func:`estimate_run_cost`);
- key handling that never shows the key and sends OpenAI's key to OpenAI only
  (:func:`resolve_api_key`, :func:`openai_client`, :class:`Secret`, :func:`redact`);
- :func:`generate_traces` (async) and :func:`run_generation` (sync, works inside Jupyter):
  bounded concurrency, retries with backoff, a budget cap, crash-safe resumable JSONL output;
- the OpenAI Batch API path (:func:`write_batch_file`, :func:`read_batch_output`).

>>> from cotlib import synth
>>> task = synth.make_task(0, "count_color")
>>> messages = build_messages(task)
>>> print(messages[1]["content"][1]["text"])
Question: How many purple objects are there?
Standard answer: 1
>>> parse_request_text(messages[1]["content"][1]["text"]).mode
'conditioned'

Going big
---------
The same code drives three scales; only :class:`TeacherConfig` changes.

1. **Local teacher** (offline, free): ``with LocalTeacher() as t:
   TeacherConfig(model="cotlib-local-teacher", base_url=t.base_url)``.
2. **Your own open model with vLLM** (one GPU, no per-token cost)::

       pip install vllm
       vllm serve Qwen/Qwen2.5-VL-7B-Instruct --max-model-len 8192 \\
           --limit-mm-per-prompt '{"image": 1}'

   then ``TeacherConfig(model="Qwen/Qwen2.5-VL-7B-Instruct", base_url="http://HOST:8000/v1",
   concurrency=64)``. vLLM batches concurrent requests on the GPU, so raise ``concurrency``
   (32-256) until throughput stops growing. No key is needed (a dummy one is sent: never your
   ``OPENAI_API_KEY``) unless you started vLLM with ``--api-key``; then export that key as
   ``COTLIB_TEACHER_API_KEY`` (or name your own variable in ``api_key_env``). Add a price to
   ``prices`` if you want a budget cap to mean GPU-hours.
3. **OpenAI** (``base_url=None``, key in ``OPENAI_API_KEY``): live requests with
   :func:`run_generation`, or, for thousands of tasks, the **Batch API** at half the price with a
   24 h turnaround and its own, much higher rate limits::

       write_batch_file(tasks, "runs/x/batch.jsonl", config)      # one request per line
       from openai import OpenAI
       client = OpenAI()
       f = client.files.create(file=open("runs/x/batch.jsonl", "rb"), purpose="batch")
       batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                     completion_window="24h")
       # ... later (poll client.batches.retrieve(batch.id).status until "completed")
       batch = client.batches.retrieve(batch.id)
       client.files.content(batch.output_file_id).write_to_file("runs/x/batch_out.jsonl")
       read_batch_output("runs/x/batch_out.jsonl", "runs/x/traces.jsonl")

   A batch file holds at most 50,000 requests and 200 MB; split bigger runs. Failed requests
   appear in the output (or in ``batch.error_file_id``) and become ``"failed"`` records, which a
   later :func:`run_generation` on the same ``traces.jsonl`` retries live.
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import functools
import getpass
import hashlib
import json
import logging
import math
import os
import random
import re
import sys
import threading
import time
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from cotlib import images, stages, synth

log = logging.getLogger(__name__)

MODES = ("conditioned", "blind")
LOCAL_MODEL = "cotlib-local-teacher"

# -----------------------------------------------------------------------------
# the prompt (the one place where its wording lives)

_FORMAT_RULES = """\
You write careful step-by-step answers to questions about an image. Your answers are used to \
teach a smaller model to reason in stages.

Answer in exactly four sections, in this order, each wrapped in its tags, with nothing before, \
between or after them except whitespace:
<SUMMARY>...</SUMMARY> One or two sentences: how you will solve the question.
<CAPTION>...</CAPTION> The parts of the image that matter for the question, described exactly.
<REASONING>...</REASONING> Step-by-step logic from those facts to the answer.
<CONCLUSION>...</CONCLUSION> The final answer only, as short as the question allows (for a \
multiple-choice question, the option's text).

Write as someone who worked the answer out from the image: do not mention these instructions, \
a standard answer or a hint."""

_CONDITIONED_RULE = """

You are also given the standard answer. Your CONCLUSION must state exactly that answer, in the \
same form. If your first reading of the image disagrees with it, look again: the standard answer \
is correct."""

#: Instruction for answer-conditioned generation (LLaVA-CoT's recipe): the system message.
TEACHER_INSTRUCTION = _FORMAT_RULES + _CONDITIONED_RULE
#: Instruction for blind generation: the teacher gets the question only.
BLIND_INSTRUCTION = _FORMAT_RULES


def instruction(mode: str = "conditioned") -> str:
    """The system instruction for ``mode`` ("conditioned" or "blind").

    >>> instruction("blind") in TEACHER_INSTRUCTION
    True
    """
    return TEACHER_INSTRUCTION if _check_mode(mode) == "conditioned" else BLIND_INSTRUCTION


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode


def standard_answer(task: synth.Task) -> str:
    """The answer a teacher is conditioned on: the answer text, for multiple choice too (the
    option's text: one answer form across the base's pretraining, the direct targets, the
    CONCLUSION and scoring, which accepts the text or the letter).

    >>> t = synth.make_task(7, "bar_value", multiple_choice=True)
    >>> standard_answer(t) == t.answer == t.choices["ABCDEF".index(t.answer_letter)]
    True
    """
    return task.answer


def request_text(
    question: str, answer: str | None = None, hint: str | None = None, mode: str = "conditioned"
) -> str:
    """The user text after the image: ``"Question: …\\nStandard answer: …"`` (conditioned) or just
    the question (blind); an optional ``"\\nHint: …"`` line comes last.

    >>> request_text("How many red objects are there?", "2")
    'Question: How many red objects are there?\\nStandard answer: 2'
    >>> request_text("How many red objects are there?", mode="blind")
    'How many red objects are there?'
    """
    question = question.strip()
    if not question:
        raise ValueError("the question is empty")
    if _check_mode(mode) == "conditioned":
        if answer is None or not str(answer).strip():
            raise ValueError("conditioned mode needs the standard answer (or use mode='blind')")
        text = f"Question: {question}\nStandard answer: {str(answer).strip()}"
    else:
        text = question
    if hint:
        text += f"\nHint: {hint.strip()}"
    return text


@dataclass(frozen=True)
class RequestText:
    """What :func:`parse_request_text` recovers from the user text."""

    question: str
    answer: str | None
    mode: str
    hint: str | None = None


_REQUEST_RE = re.compile(
    r"^(?:Question:[ \t]*)?(?P<question>.*?)"
    r"(?:\nStandard answer:[ \t]*(?P<answer>.*?))?"
    r"(?:\nHint:[ \t]*(?P<hint>.*))?$",
    re.DOTALL,
)


def parse_request_text(text: str) -> RequestText:
    """Inverse of :func:`request_text`: question, standard answer (or None), mode and hint.

    >>> r = parse_request_text(request_text("Is it red?\\nOptions: A. yes B. no", "A", "Look."))
    >>> r.question, r.answer, r.mode, r.hint
    ('Is it red?\\nOptions: A. yes B. no', 'A', 'conditioned', 'Look.')
    """
    m = _REQUEST_RE.match(text.strip())
    assert m is not None  # every string matches (all parts are optional)
    answer = m["answer"].strip() if m["answer"] is not None else None
    hint = m["hint"].strip() if m["hint"] is not None else None
    question = m["question"].strip()
    if not question:
        raise ValueError("the request has no question text")
    return RequestText(question, answer or None, "conditioned" if answer else "blind", hint)


def build_messages(
    task_or_image: Any,
    question: str | None = None,
    *,
    answer: str | None = None,
    hint: str | None = None,
    mode: str = "conditioned",
) -> list[dict]:
    """OpenAI chat messages for one request: the system instruction, then one user message with
    the image (a base64 PNG data URL) followed by :func:`request_text`.

    ``task_or_image`` is a :class:`cotlib.synth.Task` (question and standard answer default to
    the task's; its image is encoded once, see :func:`task_data_url`) or any image
    :func:`cotlib.images.load_image` accepts, or a ``data:`` URL.

    >>> from PIL import Image
    >>> m = build_messages(Image.new("RGB", (8, 8)), "What is shown?", mode="blind")
    >>> [part["type"] for part in m[1]["content"]], m[1]["content"][1]["text"]
    (['image_url', 'text'], 'What is shown?')
    """
    _check_mode(mode)
    if isinstance(task_or_image, synth.Task):
        task = task_or_image
        question = question if question is not None else task.prompt_question()
        if answer is None and mode == "conditioned":
            answer = standard_answer(task)
        url = task_data_url(task)
    else:
        if question is None:
            raise ValueError("pass the question (only a Task carries its own)")
        url = _to_data_url(task_or_image)
    text = request_text(question, answer if mode == "conditioned" else None, hint, mode)
    return [
        {"role": "system", "content": instruction(mode)},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": text},
            ],
        },
    ]


_DATA_URLS: dict[int, tuple[weakref.ref, str]] = {}  # id(image) -> (weak ref, data URL)


def task_data_url(task: synth.Task) -> str:
    """The task's image as a PNG data URL, encoded once per image: a :class:`cotlib.synth.Task`
    keeps its image, and the URL is remembered for as long as that image object lives (so a
    rerun, a retry or a second mode does not encode it again). Don't draw on a task's image
    in place after sending it; give the task a new image instead.

    >>> t = synth.make_task(3, "count_shape")
    >>> task_data_url(t) is task_data_url(t)
    True
    """
    image = task.get_image()
    key = id(image)
    entry = _DATA_URLS.get(key)
    if entry is not None and entry[0]() is image:
        return entry[1]
    url = images.image_to_data_url(image)
    # PIL images are unhashable: key by id, and drop the entry when the image is freed
    _DATA_URLS[key] = (weakref.ref(image, lambda _: _DATA_URLS.pop(key, None)), url)
    return url


def _to_data_url(image: Any) -> str:
    if isinstance(image, str) and image.startswith("data:"):
        images.data_url_to_image(image)  # validate early, with a clear ImageError
        return image
    return images.image_to_data_url(image if _is_pil(image) else images.load_image(image))


def _is_pil(obj: Any) -> bool:
    from PIL import Image

    return isinstance(obj, Image.Image)


def request_parts(messages: list[dict]) -> tuple[str, str]:
    """(image URL, user text) from the last user message of an OpenAI chat request.

    Raises ValueError with a message fit for a 400 response when there is no user message,
    no image or no text.

    >>> url, text = request_parts(build_messages(synth.make_task(1, "bar_max", False)))
    >>> url[:22], text.splitlines()[0]
    ('data:image/png;base64,', 'Question: Which color bar is the tallest?')
    """
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise ValueError("no message with role 'user'")
    content = users[-1].get("content")
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
    if not isinstance(parts, list):
        raise ValueError("the user message 'content' must be a string or a list of parts")
    urls, texts = [], []
    for part in parts:
        if not isinstance(part, dict):
            raise ValueError("each content part must be an object with a 'type'")
        if part.get("type") == "image_url":
            image_url = part.get("image_url")
            url = image_url.get("url") if isinstance(image_url, dict) else image_url
            if not isinstance(url, str):
                raise ValueError("an image_url part has no 'url' string")
            urls.append(url)
        elif part.get("type") == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
    if not urls:
        raise ValueError("the last user message has no image (an image_url part is required)")
    text = "\n".join(t for t in texts if t.strip())
    if not text.strip():
        raise ValueError("the last user message has no question text")
    return urls[-1], text


def request_key(question: str, image_data_url: str) -> str:
    """A stable 16-hex-digit key for (question, image): the local teacher logs it with every
    injected fault, and results records carry it, so the two can be joined.

    >>> len(request_key("How many?", "data:image/png;base64,AAAA"))
    16
    """
    digest = hashlib.sha256(question.strip().encode("utf-8"))
    digest.update(b"\x00")
    digest.update(image_data_url.strip().encode("ascii", errors="replace"))
    return digest.hexdigest()[:16]


def messages_key(messages: list[dict]) -> str:
    """:func:`request_key` of a chat request built by :func:`build_messages`."""
    url, text = request_parts(messages)
    return request_key(parse_request_text(text).question, url)


# -----------------------------------------------------------------------------
# prices and cost

#: USD per 1M (input, output) tokens, OpenAI list prices for standard (non-batch) requests.
#: Check https://openai.com/api/pricing before a big run: prices change. The local teacher is free.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    LOCAL_MODEL: (0.0, 0.0),
}
#: The Batch API costs half the live price.
BATCH_DISCOUNT = 0.5


def price_for(
    model: str, prices: Mapping[str, tuple[float, float]] | None = None
) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens for ``model``: exact name, else the longest known prefix
    (so dated snapshots like ``gpt-4o-2024-08-06`` match ``gpt-4o``); None when unknown.
    ``prices`` entries override and extend ``PRICES``.

    >>> price_for("gpt-4o-mini-2024-07-18"), price_for("my-model")
    ((0.15, 0.6), None)
    """
    table = {**PRICES, **(prices or {})}
    if model in table:
        return tuple(table[model])  # type: ignore[return-value]
    matches = [name for name in table if model.startswith(name)]
    return tuple(table[max(matches, key=len)]) if matches else None  # type: ignore[return-value]


def _usage_tokens(usage: Any) -> tuple[int, int]:
    if usage is None:
        return 0, 0
    if isinstance(usage, Mapping):
        return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return int(getattr(usage, "prompt_tokens", 0) or 0), int(
        getattr(usage, "completion_tokens", 0) or 0
    )


def estimate_cost(
    usage: Any, model: str, prices: Mapping[str, tuple[float, float]] | None = None
) -> float:
    """USD cost of one response's ``usage`` (a dict or the openai ``CompletionUsage``);
    0.0 for a model with no known price.

    >>> estimate_cost({"prompt_tokens": 1_000_000, "completion_tokens": 100_000}, "gpt-4o")
    3.5
    """
    price = price_for(model, prices)
    if price is None:
        return 0.0
    tokens_in, tokens_out = _usage_tokens(usage)
    return (tokens_in * price[0] + tokens_out * price[1]) / 1e6


#: How OpenAI bills an image, per model (https://platform.openai.com/docs/guides/images-vision,
#: "Calculating costs"; checked 2026-12). Tile models: ``detail="low"`` costs ``base`` tokens;
#: ``"high"`` scales the image to fit 2048x2048, then its shortest side down to 768 px, and costs
#: ``base + tile * (512-px tiles)``. gpt-4o-mini bills ~33x more tokens per image than gpt-4o
#: (2833/5667 vs 85/170) at 1/16.7 the price: at list prices one course scene costs $0.00128
#: on gpt-4o-mini and $0.00064 on gpt-4o, so the mini is cheaper only for the text.
#: Patch models: ``ceil(w/32) * ceil(h/32)`` patches (at most 1536, the image scaled down to fit)
#: times a multiplier, whatever the detail.
IMAGE_TOKEN_RULES: dict[str, tuple] = {
    "gpt-4o": ("tile", 85, 170),
    "gpt-4o-mini": ("tile", 2833, 5667),
    "gpt-4.1": ("tile", 85, 170),
    "gpt-4.1-mini": ("patch", 1.62),
    "gpt-4.1-nano": ("patch", 2.46),
}
#: Text tokens of one course request (instruction, question, answer, message framing): about
#: 1,050 characters at ~4 per token, rounded up; the image comes on top (:func:`image_tokens`).
TEXT_TOKENS_PER_TASK = 295
#: The course's scenes are 192x192 pixels.
COURSE_IMAGE_SIZE = (192, 192)


def _rule_for(model: str) -> tuple | None:
    if model in IMAGE_TOKEN_RULES:
        return IMAGE_TOKEN_RULES[model]
    matches = [name for name in IMAGE_TOKEN_RULES if model.startswith(name)]
    return IMAGE_TOKEN_RULES[max(matches, key=len)] if matches else None


def image_tokens(model: str, width: int = 192, height: int = 192, detail: str = "high") -> int:
    """Input tokens OpenAI bills for one image on ``model`` (:data:`IMAGE_TOKEN_RULES`).
    ``detail="auto"`` counts as ``"high"``. A model with no known rule (a vLLM model, the local
    teacher) is counted like gpt-4o, or as one token per 14x14-pixel patch when that is more
    (the densest common vision encoders), so it is not underestimated.

    >>> image_tokens("gpt-4o"), image_tokens("gpt-4o", detail="low"), image_tokens("gpt-4o-mini")
    (255, 85, 8500)
    >>> image_tokens("gpt-4o", 1024, 1024), image_tokens("gpt-4.1-mini")
    (765, 58)
    >>> image_tokens("gpt-4.1-nano")
    88
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if detail not in ("high", "low", "auto"):
        raise ValueError(f"detail must be 'high', 'low' or 'auto', got {detail!r}")
    rule = _rule_for(model)
    if rule is None:
        return max(_tile_tokens(85, 170, width, height, detail),
                   math.ceil(width / 14) * math.ceil(height / 14))
    if rule[0] == "patch":
        patches = math.ceil(width / 32) * math.ceil(height / 32)
        if patches > 1536:  # scaled down to fit 1536 patches
            scale = math.sqrt(1536 * 32 * 32 / (width * height))
            w, h = width * scale, height * scale
            scale *= min(math.floor(w / 32) / (w / 32), math.floor(h / 32) / (h / 32))
            patches = math.ceil(width * scale / 32) * math.ceil(height * scale / 32)
        return int(patches * rule[1])
    return _tile_tokens(rule[1], rule[2], width, height, detail)


def _tile_tokens(base: int, tile: int, width: int, height: int, detail: str) -> int:
    if detail == "low":
        return base
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        w, h = w * 2048 / max(w, h), h * 2048 / max(w, h)
    if min(w, h) > 768:
        w, h = w * 768 / min(w, h), h * 768 / min(w, h)
    return base + tile * math.ceil(w / 512) * math.ceil(h / 512)


def estimate_run_cost(
    n_tasks: int,
    model: str = "gpt-4o",
    tokens_in_per_task: int | None = None,
    tokens_out_per_task: int = 250,
    *,
    batch: bool = False,
    prices: Mapping[str, tuple[float, float]] | None = None,
    image_size: tuple[int, int] = COURSE_IMAGE_SIZE,
    detail: str = "high",
) -> float:
    """What ``n_tasks`` requests would cost on ``model`` (USD). Input per task, unless you pass
    ``tokens_in_per_task`` (e.g. the ``usage`` your own run recorded): ~295 text tokens plus
    the image as ``model`` bills it (:func:`image_tokens`: 255 tokens on gpt-4o, 8,500 on
    gpt-4o-mini for one 192-px scene); ~250 tokens of trace out.

    >>> round(estimate_run_cost(1000, "gpt-4o"), 2), round(estimate_run_cost(1000, batch=True), 2)
    (3.88, 1.94)
    >>> round(estimate_run_cost(1000, "gpt-4o-mini"), 2)  # not 16x cheaper: the image is not
    1.47
    """
    price = price_for(model, prices)
    if price is None:
        raise ValueError(f"no price for model {model!r}: pass prices={{{model!r}: (in, out)}}")
    if tokens_in_per_task is None:
        tokens_in_per_task = TEXT_TOKENS_PER_TASK + image_tokens(model, *image_size, detail)
    per_task = (tokens_in_per_task * price[0] + tokens_out_per_task * price[1]) / 1e6
    return n_tasks * per_task * (BATCH_DISCOUNT if batch else 1.0)


def prompt_tokens_bound(messages: list[dict], model: str) -> int:
    """An upper bound on a request's prompt tokens, for the budget's reservation: one token per
    UTF-8 byte of text (no tokenizer makes more), 8 per message for framing, and each image as
    :func:`image_tokens` counts it at ``"high"`` detail (its size read from the header only).

    >>> prompt_tokens_bound([{"role": "user", "content": "abc"}], "gpt-4o")
    11
    """
    total = 0
    for message in messages:
        total += 8
        content = message.get("content") if isinstance(message, dict) else None
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for part in parts if isinstance(parts, list) else []:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "image_url":
                image_url = part.get("image_url")
                url = image_url.get("url", "") if isinstance(image_url, dict) else image_url
                size = _image_size_of(url) or (2048, 2048)  # unknown: count the largest
                total += image_tokens(model, *size)
            elif isinstance(part.get("text"), str):
                total += len(part["text"].encode("utf-8", "replace"))
    return total


def _image_size_of(url: str) -> tuple[int, int] | None:
    """(width, height) of a data-URL image from its header (no pixels decoded), else None."""
    import base64
    import io

    from PIL import Image

    if not isinstance(url, str) or ";base64," not in url[:100]:
        return None
    try:
        data = base64.b64decode(url.split(",", 1)[1], validate=False)
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:  # an unreadable image: the caller counts the largest size
        return None


def worst_case_cost(
    messages: list[dict], config: TeacherConfig
) -> float:
    """The most one request can cost: :func:`prompt_tokens_bound` in plus ``max_tokens`` out, at
    the model's price (0.0 for a model with no price)."""
    price = price_for(config.model, config.prices)
    if price is None:
        return 0.0
    tokens_out = config.max_tokens if config.max_tokens is not None else 0
    return (prompt_tokens_bound(messages, config.model) * price[0] + tokens_out * price[1]) / 1e6


# -----------------------------------------------------------------------------
# the API key: never printed, logged or stored


class Secret:
    """A string that hides itself: ``repr`` and ``str`` are masked; ``reveal()`` gives the value.

    >>> s = Secret("sk-" + "test-123456789")
    >>> s, f"{s}", s.reveal()[:3]
    (Secret('********'), '********', 'sk-')
    """

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str = "") -> None:
        self._value = value
        self.source = source  # where the key came from (a variable's name, "dummy"...), never it

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    def __str__(self) -> str:
        return "********"

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self):  # pickling would write the key to disk
        raise TypeError("a Secret cannot be pickled")

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict) -> Secret:  # dataclasses.asdict deep-copies fields
        return self


_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}")


def redact(text: str, secret: str | Secret | None = None) -> str:
    """``text`` with every occurrence of ``secret`` -- and anything shaped like an OpenAI key
    (``sk-`` followed by 16+ key characters) -- replaced by ``[REDACTED]``.

    >>> redact("bad key sk-" + "abc123def456ghi789 (x)", None)
    'bad key [REDACTED] (x)'
    >>> redact("token=hunter2hunter2", Secret("hunter2hunter2"))
    'token=[REDACTED]'
    """
    text = str(text)
    value = secret.reveal() if isinstance(secret, Secret) else secret
    if value and len(value) >= 4:
        text = text.replace(value, "[REDACTED]")
    return _KEY_LIKE.sub("[REDACTED]", text)


#: Sent to servers that need no key (the local teacher, a vLLM started without --api-key).
DUMMY_KEY = "EMPTY"
#: Where OpenAI's key lives. It is sent to OpenAI's own API host only (see :func:`resolve_api_key`).
OPENAI_KEY_ENV = "OPENAI_API_KEY"
#: The course's variable for a key to any other server (a vLLM started with ``--api-key``, a
#: proxy). Never sent to OpenAI unless named explicitly.
SERVER_KEY_ENV = "COTLIB_TEACHER_API_KEY"
#: OpenAI's own API host: the only host that ever gets the key from ``OPENAI_API_KEY`` by default.
OPENAI_API_HOST = "api.openai.com"
OPENAI_DEFAULT_URL = f"https://{OPENAI_API_HOST}/v1"


def effective_base_url(base_url: str | None) -> str:
    """The URL a client really talks to: ``base_url``, else ``OPENAI_BASE_URL`` (the openai
    client reads it too), else OpenAI's API.

    >>> effective_base_url("http://127.0.0.1:8765/v1")
    'http://127.0.0.1:8765/v1'
    """
    return base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_DEFAULT_URL


def is_openai_url(base_url: str | None) -> bool:
    """True only for OpenAI's own API host over https (``base_url=None`` means OpenAI, unless
    ``OPENAI_BASE_URL`` points elsewhere).

    >>> is_openai_url(None), is_openai_url("http://127.0.0.1:8000/v1")
    (True, False)
    >>> is_openai_url("http://api.openai.com/v1"), is_openai_url("https://api.openai.com.evil.io")
    (False, False)
    """
    url = urlparse(effective_base_url(base_url))
    return url.scheme == "https" and (url.hostname or "").lower() == OPENAI_API_HOST


def _env_or_typed(name: str, prompt: bool) -> Secret | None:
    """The key in environment variable ``name``, else (``prompt``) one typed in, else None."""
    value = os.environ.get(name, "").strip()
    if value:
        return Secret(value, name)
    if prompt:
        value = getpass.getpass(f"{name} (input hidden, not saved): ").strip()
        if value:
            return Secret(value, "typed in")
    return None


def resolve_api_key(
    base_url: str | None = None,
    *,
    api_key: str | Secret | None = None,
    api_key_env: str | None = None,
    prompt: bool = False,
) -> Secret:
    """THE rule for which key goes to which server (the teacher, the filter's LLM judge and
    search's OpenAI judge all use it). In order:

    1. ``api_key`` given explicitly (a string or :class:`Secret`): that key, to any server;
    2. ``api_key_env`` named explicitly (``--api-key-env NAME``): that variable, to any server
       (RuntimeError naming it when it is unset, unless ``prompt`` types it in);
    3. OpenAI's own API host (https://api.openai.com): ``OPENAI_API_KEY``, else typed in with
       ``getpass`` when ``prompt``, else RuntimeError;
    4. any other server (local teacher, vLLM, a classmate's server, a proxy):
       ``COTLIB_TEACHER_API_KEY`` when set, else the dummy key ``"EMPTY"``.
       ``OPENAI_API_KEY`` is never sent there: a server that is not OpenAI must not see it.

    ``Secret.source`` says where the key came from (never the key itself).

    >>> import os; os.environ["OPENAI_API_KEY"] = "not-a-key"
    >>> key = resolve_api_key("http://10.0.0.7:8000/v1")
    >>> key.reveal(), key.source
    ('EMPTY', 'dummy')
    >>> resolve_api_key(None).source
    'OPENAI_API_KEY'
    >>> del os.environ["OPENAI_API_KEY"]
    """
    if api_key is not None:
        secret = api_key if isinstance(api_key, Secret) else Secret(str(api_key))
        if not secret:
            raise RuntimeError("api_key is empty: pass the key, or leave api_key=None")
        return Secret(secret.reveal(), "api_key")
    if api_key_env:
        found = _env_or_typed(api_key_env, prompt)
        if found is not None:
            return found
        raise RuntimeError(
            f"no API key: api_key_env={api_key_env!r} is named but that environment variable "
            "is not set: export it (or a Colab secret), or pass prompt_for_key=True"
        )
    if is_openai_url(base_url):
        found = _env_or_typed(OPENAI_KEY_ENV, prompt)
        if found is not None:
            return found
        raise RuntimeError(
            f"no API key: set the environment variable {OPENAI_KEY_ENV} (e.g. in a Colab "
            "secret), pass prompt_for_key=True to type it in, or use the local teacher "
            "(base_url=...)"
        )
    value = os.environ.get(SERVER_KEY_ENV, "").strip()
    if value:
        return Secret(value, SERVER_KEY_ENV)
    return Secret(DUMMY_KEY, "dummy")


def get_api_key(
    env_var: str | None = None, *, prompt: bool = False, base_url: str | None = None
) -> Secret:
    """The API key for ``base_url`` as a :class:`Secret` (:func:`resolve_api_key` with
    ``api_key_env=env_var``): OpenAI's key for OpenAI only, a dummy key for a server that
    needs none. Raises RuntimeError (without any key in it) when a needed key is missing.

    >>> get_api_key(base_url="http://127.0.0.1:8765/v1").reveal()
    'EMPTY'
    """
    return resolve_api_key(base_url, api_key_env=env_var, prompt=prompt)


def key_for(config: TeacherConfig) -> Secret:
    """The key :func:`resolve_api_key` picks for ``config``."""
    return resolve_api_key(config.base_url, api_key=config.api_key,
                           api_key_env=config.api_key_env, prompt=config.prompt_for_key)


def openai_client(
    config: TeacherConfig | str | None = None,
    *,
    async_client: bool = False,
    key: Secret | None = None,
    **kwargs: Any,
) -> Any:
    """An ``openai.OpenAI`` (or ``AsyncOpenAI``) client for a :class:`TeacherConfig` or a
    ``base_url`` string (None = OpenAI), with the key :func:`resolve_api_key` picks, so that
    OpenAI's key reaches OpenAI only. ``kwargs`` go to the client (``max_retries``,
    ``timeout``, ``http_client``...).

    >>> c = openai_client("http://127.0.0.1:8765/v1"); c.api_key, str(c.base_url)
    ('EMPTY', 'http://127.0.0.1:8765/v1/')
    >>> c.close()
    """
    import openai

    if not isinstance(config, TeacherConfig):
        config = TeacherConfig(base_url=config)
    key = key if key is not None else key_for(config)
    cls = openai.AsyncOpenAI if async_client else openai.OpenAI
    kwargs.setdefault("max_retries", config.max_retries)
    kwargs.setdefault("timeout", config.timeout_s)
    return cls(base_url=effective_base_url(config.base_url), api_key=key.reveal(), **kwargs)


class TeacherError(RuntimeError):
    """A teacher call failed; the message is redacted and safe to show."""


def check_teacher(config: TeacherConfig, timeout_s: float | None = None) -> list[str]:
    """Ask the teacher which models it serves (a cheap connection and key check).

    Raises :class:`TeacherError` with a redacted message that names the URL, and no chained
    exception.
    """
    import openai

    key = key_for(config)
    url = effective_base_url(config.base_url)
    message = None
    try:
        with openai_client(config, key=key, max_retries=0,
                           timeout=timeout_s or config.timeout_s) as client:
            return [m.id for m in client.models.list()]
    except openai.OpenAIError as err:
        message = redact(f"{type(err).__name__}: {err}", key)
    raise TeacherError(f"teacher at {url} failed: {message}")


# -----------------------------------------------------------------------------
# configuration, results records and the run summary


@dataclass
class TeacherConfig:
    """How to call the teacher. Normally holds no key, only the *name* of a variable; an explicit
    ``api_key`` is kept as a :class:`Secret` (masked in ``repr``, never pickled). Which key goes
    to which server: :func:`resolve_api_key`.

    >>> TeacherConfig(model="cotlib-local-teacher", base_url="http://127.0.0.1:8765/v1").mode
    'conditioned'
    """

    model: str = "gpt-4o"
    base_url: str | None = None  # None = OpenAI; e.g. "http://127.0.0.1:8765/v1" or a vLLM server
    # Which key goes where: resolve_api_key. None/None = OPENAI_API_KEY for OpenAI only;
    # COTLIB_TEACHER_API_KEY or a dummy key for any other server.
    api_key_env: str | None = None  # name an environment variable to send its key anywhere
    prompt_for_key: bool = False  # getpass when the variable is not set
    api_key: Secret | str | None = field(default=None, repr=False)  # explicit; kept as Secret
    mode: str = "conditioned"  # or "blind"
    concurrency: int = 8  # requests in flight at once
    max_retries: int = 4  # retries after the first attempt (429, 5xx, timeouts, connection)
    timeout_s: float = 60.0  # per attempt, whole request
    backoff_base_s: float = 0.5  # full jitter: sleep uniform(0, min(max, base * 2**retry))
    backoff_max_s: float = 30.0  # also caps a server's Retry-After
    temperature: float | None = None  # None = the server's default
    max_tokens: int | None = 1024
    budget_usd: float | None = None  # ceiling on the total cost recorded in the output file
    prices: dict[str, tuple[float, float]] | None = None  # overrides/extends PRICES
    fsync_interval_s: float = 1.0  # 0 = fsync after every line (see ResultsWriter)
    fail_fast_after: int = 5  # stop after this many connection failures/timeouts in a row
    connect_check_s: float = 8.0  # limit of the reachability check (before a run, after a timeout)

    def __post_init__(self) -> None:
        _check_mode(self.mode)
        if self.api_key is not None and not isinstance(self.api_key, Secret):
            self.api_key = Secret(str(self.api_key), "api_key")
        if self.fail_fast_after < 1:
            raise ValueError("fail_fast_after must be at least 1")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")


@dataclass
class RunSummary:
    """What one :func:`generate_traces` run did. ``done + failed + skipped + not_started`` equals
    the number of tasks given; tokens and cost count this run only."""

    out_path: str = ""
    total: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0  # already "done" in the file before this run
    not_started: int = 0  # left for a later run (budget reached or stopped)
    failures: dict[str, int] = field(default_factory=dict)  # reason -> count
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    attempts: int = 0
    seconds: float = 0.0
    stopped_by_budget: bool = False
    budget_note: str = ""  # why the next request did not fit under the cap

    def __str__(self) -> str:
        text = (
            f"{self.done} done, {self.failed} failed, {self.skipped} skipped, "
            f"{self.not_started} not started of {self.total} tasks in {self.seconds:.1f} s; "
            f"{self.prompt_tokens + self.completion_tokens:,} tokens, ${self.cost_usd:.4f}"
        )
        if self.failures:
            text += "; failures: " + ", ".join(f"{k} {v}" for k, v in self.failures.items())
        if self.stopped_by_budget:
            text += ("; stopped by the budget cap (rerun with a bigger budget_usd, or a smaller "
                     "max_tokens, to continue)")
            if self.budget_note:
                text += f": {self.budget_note}"
        return text


def make_record(
    task_id: str,
    text: str = "",
    *,
    model: str,
    mode: str,
    status: str = "done",
    usage: Any = None,
    cost_usd: float = 0.0,
    attempts: int = 1,
    failure: str | None = None,
    seconds: float = 0.0,
    request_key: str | None = None,
    finish_reason: str | None = None,
) -> dict:
    """One results line. ``stages``/``problems``/``final_answer`` come from :mod:`cotlib.stages`.

    >>> r = make_record("t1", stages.render("s", "c", "r", "4"), model="m", mode="blind")
    >>> r["final_answer"], r["problems"], r["status"]
    ('4', [], 'done')
    """
    parsed = stages.parse(text)
    tokens_in, tokens_out = _usage_tokens(usage)
    return {
        "task_id": task_id,
        "status": status,
        "model": model,
        "mode": mode,
        "text": text,
        "stages": parsed.stages if text else {},
        "problems": [p.kind for p in parsed.problems] if text else [],
        "final_answer": stages.final_answer(text) if text else "",
        "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out},
        "cost_usd": round(cost_usd, 8),
        "attempts": attempts,
        "failure": failure,
        "seconds": round(seconds, 3),
        "created": int(time.time()),
        "request_key": request_key,
        "finish_reason": finish_reason,
    }


# -----------------------------------------------------------------------------
# crash-safe JSONL results


def repair_results(path: str | Path) -> int:
    """Cut a torn last line (no trailing newline: a write interrupted by a crash) off the file.
    Returns the number of bytes removed.

    >>> import tempfile; p = Path(tempfile.mkdtemp()) / "r.jsonl"
    >>> _ = p.write_text('{"task_id": "a"}\\n{"task_id": "b", "te')
    >>> repair_results(p), p.read_text()
    (20, '{"task_id": "a"}\\n')
    """
    path = Path(path)
    if not path.exists():
        return 0
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        end = size
        while end > 0:  # scan backwards for the last newline, 64 KiB at a time
            start = max(0, end - 65536)
            f.seek(start)
            block = f.read(end - start)
            if start + len(block) == size and block.endswith(b"\n"):
                return 0
            i = block.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            end = start
        else:
            keep = 0
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    log.warning("%s: removed a torn last line (%d bytes)", path, size - keep)
    return size - keep


def load_results(path: str | Path) -> dict[str, dict]:
    """``{task_id: record}`` from a results file, keeping the LAST record of each task (a retried
    task's new record supersedes the old one). A torn final line (no newline, e.g. after a crash)
    and unreadable lines are ignored.

    >>> load_results("no/such/file.jsonl")
    {}
    """
    path = Path(path)
    if not path.exists():
        return {}
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1].strip():
        log.warning("%s: ignoring a torn last line (%d bytes)", path, len(lines[-1]))
    records: dict[str, dict] = {}
    bad = 0
    for line in lines[:-1]:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            records[str(record["task_id"])] = record
        except (ValueError, KeyError, TypeError):
            bad += 1
    if bad:
        log.warning("%s: skipped %d unreadable lines", path, bad)
    return records


def compact_results(path: str | Path) -> int:
    """Rewrite the file with exactly one line per task (the last record of each), atomically:
    a temporary file in the same folder, fsync, ``os.replace``. Returns the number of lines.
    """
    path = Path(path)
    records = load_results(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        for record in records.values():
            f.write(_encode(record))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return len(records)


def _encode(record: dict) -> bytes:
    return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class ResultsWriter:
    """Append-only JSONL writer, safe against crashes.

    Each record is encoded first and written with ONE ``os.write`` on a file opened with
    ``O_APPEND``, so a killed process leaves whole lines plus at most one torn last line, which
    :func:`repair_results` cuts off when the file is opened again. Once ``os.write`` returns, the
    line survives the process being killed (the kernel holds it). ``fsync`` -- needed only to
    survive a power cut or OS crash -- costs milliseconds, so it runs at most every
    ``fsync_interval_s`` seconds (0 = after every line) and on close: a power cut loses at most
    that last interval of lines, which a rerun regenerates. An exclusive ``flock`` stops two runs
    from writing the same file.
    """

    def __init__(self, path: str | Path, fsync_interval_s: float = 1.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync_interval_s = fsync_interval_s
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            _lock(self._fd, self.path)
            repair_results(self.path)
        except BaseException:
            os.close(self._fd)
            raise
        self._last_sync = time.monotonic()
        self._dirty = False

    def write(self, record: dict) -> None:
        data = _encode(record)
        view = memoryview(data)
        while view:  # a regular file takes it all in one call; loop only for robustness
            n = os.write(self._fd, view)
            view = view[n:]
        self._dirty = True
        if time.monotonic() - self._last_sync >= self.fsync_interval_s:
            self.sync()

    def sync(self) -> None:
        if self._dirty:
            os.fsync(self._fd)
            self._dirty = False
        self._last_sync = time.monotonic()

    def close(self) -> None:
        if self._fd >= 0:
            try:
                self.sync()
            finally:
                os.close(self._fd)  # also releases the lock
                self._fd = -1

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _lock(fd: int, path: Path) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory lock
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RuntimeError(f"{path} is being written by another generation run") from None


# -----------------------------------------------------------------------------
# tasks in, requests out


@dataclass
class _Job:
    task_id: str
    task: Any  # a synth.Task, or a dict with id / image / question / answer

    def messages(self, mode: str, image_root: str | Path | None) -> list[dict]:
        if isinstance(self.task, synth.Task):
            return build_messages(self.task, mode=mode)
        rec = self.task
        image = rec["image"]
        if isinstance(image, (str, Path)) and not str(image).startswith("data:"):
            image = Path(image_root) / image if image_root is not None else Path(image)
        question = rec.get("prompt") or rec["question"]
        answer = rec.get("answer") or rec.get("answer_letter")  # the text first, as standard_answer
        return build_messages(image, question, answer=answer, mode=mode)


def _jobs(tasks: Iterable[Any], image_root: str | Path | None) -> list[_Job]:
    """Accept synth.Task objects, task records (with a scene) or plain dicts
    ``{"id", "image", "question", "answer"}`` (e.g. your own data)."""
    jobs, seen = [], set()
    for task in tasks:
        if isinstance(task, Mapping) and "scene" in task:
            task = synth.Task.from_record(dict(task), image_root)
        if isinstance(task, synth.Task):
            task_id = task.id
        elif isinstance(task, Mapping) and {"id", "image", "question"} <= set(task):
            task_id = str(task["id"])
        else:
            raise TypeError(
                "tasks must be synth.Task objects or dicts with 'id', 'image' and 'question', "
                f"got {type(task).__name__}"
            )
        if task_id in seen:
            raise ValueError(f"duplicate task id {task_id!r}: ids must be unique")
        seen.add(task_id)
        jobs.append(_Job(task_id, task))
    return jobs


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


def _field(obj: Any, name: str) -> Any:
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
    cotlib.teacher.BadResponse: usage.prompt_tokens is -300: not a token count
    """
    if usage is None:
        return None
    counts = []
    for name in ("prompt_tokens", "completion_tokens"):
        value = _field(usage, name)
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
    cotlib.teacher.BadResponse: the response has no choices (choices: [])
    """
    if isinstance(response, (str, bytes)) or not (
            isinstance(response, Mapping) or hasattr(response, "choices")):
        head = response[:60] if isinstance(response, (str, bytes)) else type(response).__name__
        raise BadResponse("not_a_completion",
                          f"the server answered 200 with something that is not a chat "
                          f"completion: {redact(repr(head))}")
    choices = _field(response, "choices")
    if not isinstance(choices, (list, tuple)) or not choices:
        raise BadResponse("no_choices", f"the response has no choices (choices: "
                          f"{json.dumps(choices) if choices is None or choices == [] else '...'})")
    choice = choices[0]
    message = _field(choice, "message")
    if message is None:
        raise BadResponse("no_message", "the first choice has no message")
    content = _field(message, "content")
    refusal = _field(message, "refusal")
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
    usage = read_usage(_field(response, "usage"), max_tokens)
    finish = _field(choice, "finish_reason")
    model = _field(response, "model")
    return Reply(text, *(usage or (0, 0)), finish if isinstance(finish, str) else None,
                 model if isinstance(model, str) else None, usage is not None)


# -----------------------------------------------------------------------------
# generation


def connection_limits(concurrency: int) -> Any:
    """openai's default HTTP connection limits, with room to keep ``concurrency`` connections
    alive. The default keeps 100: at 256 requests in flight (a vLLM server) it would close the
    surplus after every burst of answers and reconnect for the next requests.

    >>> connection_limits(256).max_keepalive_connections, connection_limits(8).max_connections
    (256, 1000)
    """
    import openai

    default = openai.DEFAULT_CONNECTION_LIMITS  # an httpx Limits object
    return type(default)(
        max_connections=max(default.max_connections or 0, concurrency),
        max_keepalive_connections=max(default.max_keepalive_connections or 0, concurrency),
        keepalive_expiry=default.keepalive_expiry,
    )


async def _with_deadline(make_call: Callable[[], Awaitable[Any]], seconds: float) -> Any:
    """Await ``make_call()`` with a whole-request time limit. ``asyncio.timeout`` (3.11+) runs
    in the same task; ``wait_for`` (3.10) adds a task per request."""
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(seconds):
            return await make_call()
    return await asyncio.wait_for(make_call(), seconds)


class RunState:
    """What the requests of one run share: the budget (a ceiling: each attempt reserves its
    worst-case cost before it is sent; the difference is released when the usage comes back)
    and the fail-fast counter (connection failures and timeouts in a row, nothing succeeding).

    >>> async def demo():
    ...     s = RunState(budget_usd=1.0, url="http://x/v1", fail_fast_after=3)
    ...     ok = await s.reserve(0.6); s.settle(0.6, 0.2)   # reserved 0.6, it cost 0.2
    ...     ok2 = await s.reserve(0.7); s.settle(0.7, 0.7)  # 0.2 + 0.7 fits under 1.0
    ...     return ok, ok2, await s.reserve(0.2), round(s.spent, 6), s.exhausted
    >>> asyncio.run(demo())  # 0.9 + 0.2 could cross the cap: not sent
    (True, True, False, 0.9, True)
    """

    def __init__(self, budget_usd: float | None = None, spent: float = 0.0, *, url: str = "",
                 fail_fast_after: int = 5, model: str = "") -> None:
        self.budget_usd, self.spent, self.url, self.model = budget_usd, spent, url, model
        self.fail_fast_after = fail_fast_after
        self.reserved = 0.0
        self.open_reservations = 0
        self.exhausted = False  # a request could not be reserved: stop launching
        self.budget_note = ""
        self.in_a_row = 0  # connection failures / timeouts since the last answer
        self.streak: Counter[str] = Counter()
        self.answered = False
        self.abort_message: str | None = None
        self.models: list[str] | None = None  # what the server listed, if it did
        self.on_abort: Callable[[], None] | None = None
        #: ``GET /models`` within ``connect_check_s``: True when the server answered
        self.probe: Callable[[], Awaitable[bool]] | None = None
        self._probing = False
        self._changed: asyncio.Condition | None = None

    async def reserve(self, amount: float) -> bool:
        """Reserve ``amount`` USD for one attempt; wait while requests in flight may free some;
        False (and :attr:`exhausted`) when it cannot fit under the cap."""
        if self.budget_usd is None:
            return True
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            while True:
                if self.exhausted or self.abort_message:
                    return False
                if self.spent + self.reserved + amount <= self.budget_usd:
                    self.reserved += amount
                    self.open_reservations += 1
                    return True
                if self.open_reservations == 0:  # nothing in flight will free anything
                    self.exhausted = True
                    self._changed.notify_all()
                    return False
                await self._changed.wait()

    def settle(self, reserved: float, actual: float) -> None:
        """An attempt is over: release its reservation, count what it cost."""
        self.spent += actual
        if self.budget_usd is None:
            return
        self.reserved = max(0.0, self.reserved - reserved)
        self.open_reservations -= 1
        if self.open_reservations == 0:
            self.reserved = 0.0  # no float drift
        if self._changed is not None:
            changed = self._changed

            async def notify() -> None:
                async with changed:
                    changed.notify_all()

            asyncio.get_running_loop().create_task(notify())

    def answered_once(self) -> None:
        self.answered = True
        self.in_a_row = 0
        self.streak.clear()

    def failed_to_reach(self, reason: str) -> None:
        """Count a connection failure or timeout; abort the run after ``fail_fast_after`` in a
        row with nothing answering in between."""
        self.in_a_row += 1
        self.streak[reason] += 1
        if self.in_a_row >= self.fail_fast_after and self.abort_message is None:
            what = ", ".join(f"{n} {r}" for r, n in self.streak.most_common())
            self.abort(unreachable_message(self.url, f"{self.in_a_row} requests in a row failed "
                                           f"({what}) and none was answered"))

    async def after_timeout(self, url: str, timeout_s: float) -> None:
        """A request timed out: ask the server a cheap question at once. If that goes
        unanswered too, the server is hung or gone: stop now (within ``connect_check_s`` of the
        first timeout) instead of waiting out ``fail_fast_after`` full timeouts."""
        if self.probe is None or self._probing or self.abort_message is not None:
            return
        self._probing = True
        try:
            if not await self.probe():
                self.in_a_row += 1
                self.streak["timeout"] += 1
                self.abort(unreachable_message(
                    url, f"a request got no answer within the {timeout_s:g} s timeout and "
                    f"GET {url}/models got none either"))
        finally:
            self._probing = False

    def abort(self, message: str) -> None:
        self.abort_message = message
        if self.on_abort is not None:
            self.on_abort()


def unreachable_message(url: str, what: str) -> str:
    """The one message a run stops with when the teacher cannot be reached."""
    return (f"stopped: cannot reach the teacher at {url}: {what}. Check that the server is "
            f"running and answering (e.g. `curl {url}/models`), that base_url has the right "
            "host, port and /v1 path, and that no firewall or proxy is in the way; a slow "
            "server needs a bigger timeout_s (--timeout). Finished tasks are kept: rerun to "
            "continue.")


def describe_failure(err: BaseException, url: str, config: TeacherConfig) -> str:
    """A failure's detail for the record: timeouts name the time limit and the URL, connection
    errors the URL and the cause."""
    import openai

    if isinstance(err, TeacherTimeout):
        return str(err)
    if isinstance(err, (openai.APITimeoutError, TimeoutError, asyncio.TimeoutError)):
        return _timeout_text(url, config.timeout_s)
    if isinstance(err, openai.APIConnectionError):
        cause = err.__cause__ or err.__context__
        why = f"{type(cause).__name__}: {cause}" if cause is not None else str(err)
        return f"cannot connect to {url} ({why})"
    if isinstance(err, BadResponse):
        return str(err)
    return f"{type(err).__name__}: {err}"


def _timeout_text(url: str, seconds: float) -> str:
    return (f"no answer from {url} within the {seconds:g} s timeout (timeout_s / --timeout; "
            "raise it for a slow server)")


async def call_with_retries(
    client: Any,
    request: dict,
    config: TeacherConfig,
    rng: random.Random,
    state: RunState | None = None,
    worst_case_usd: float = 0.0,
) -> tuple[Reply | None, int, tuple[str, BaseException] | None, float]:
    """One chat completion with our own retries (the client's are off, so attempts can be
    counted): ``(reply, attempts, None, cost)`` or ``(None, attempts, (reason, error), cost)``.
    Each attempt first reserves ``worst_case_usd`` in ``state``'s budget; none is sent when it
    does not fit (reason ``budget``). A malformed 200 (:class:`BadResponse`) is retried like a
    500. ``cost`` sums what every attempt cost."""
    import openai

    state = state or RunState(url=effective_base_url(config.base_url),
                              fail_fast_after=config.fail_fast_after)
    url = state.url or effective_base_url(config.base_url)
    price = price_for(config.model, config.prices)
    attempts, cost = 0, 0.0
    while True:
        if state.abort_message is not None:
            return None, attempts, ("aborted", RuntimeError(state.abort_message)), cost
        if not await state.reserve(worst_case_usd):
            why = state.abort_message or (
                f"the next request could cost up to ${worst_case_usd:.6f} (prompt + max_tokens "
                f"at the model's price) and ${state.spent:.6f} of budget_usd=${state.budget_usd:g}"
                " is spent")
            if state.abort_message is None:
                state.budget_note = state.budget_note or why
            return None, attempts, ("budget", RuntimeError(why)), cost
        attempts += 1
        spent, settled = 0.0, False
        try:
            call = functools.partial(client.chat.completions.create, **request)
            try:
                response = await _with_deadline(call, config.timeout_s)
            except (TimeoutError, asyncio.TimeoutError):
                raise TeacherTimeout(_timeout_text(url, config.timeout_s)) from None
            state.answered_once()
            try:
                reply = read_reply(response, config.max_tokens)
            except BadResponse as bad:
                if bad.kind == "usage":  # not believed: count the most it could have cost
                    bad.cost_usd = worst_case_usd
                else:
                    try:
                        usage = read_usage(_field(response, "usage"), config.max_tokens)
                    except BadResponse:
                        usage = None
                    bad.cost_usd = _cost(usage, price)
                spent = bad.cost_usd
                raise
            spent = _cost((reply.prompt_tokens, reply.completion_tokens), price)
            if not reply.has_usage and price is not None:
                spent = worst_case_usd  # no usage reported: count the ceiling
            state.settle(worst_case_usd, spent)
            settled = True
            return reply, attempts, None, cost + spent
        except Exception as err:
            state.settle(worst_case_usd, spent)
            settled = True
            cost += spent
            reason, retryable = classify_error(err)
            if reason in ("connection", "timeout"):
                state.failed_to_reach(reason)
                if reason == "timeout":
                    await state.after_timeout(url, config.timeout_s)
            elif isinstance(err, openai.APIStatusError):
                state.answered_once()  # the server is there, whatever it said
            if state.abort_message is not None or not retryable or attempts > config.max_retries:
                return None, attempts, (reason, err), cost
            delay = backoff_s(attempts, config, rng, retry_after_s(err))
            log.debug("%s (attempt %d): retrying in %.2f s", reason, attempts, delay)
        finally:
            if not settled:  # cancelled mid-attempt: free the reservation for the others
                state.settle(worst_case_usd, worst_case_usd)
        await asyncio.sleep(delay)


def _cost(usage: tuple[int, int] | None, price: tuple[float, float] | None) -> float:
    if usage is None or price is None:
        return 0.0
    return (usage[0] * price[0] + usage[1] * price[1]) / 1e6


def _request(messages: list[dict], config: TeacherConfig) -> dict:
    """The chat.completions.create arguments (also the Batch API request body)."""
    request: dict[str, Any] = {"model": config.model, "messages": messages}
    if config.temperature is not None:
        request["temperature"] = config.temperature
    if config.max_tokens is not None:
        request["max_tokens"] = config.max_tokens
    return request


async def _preflight(client: Any, state: RunState, config: TeacherConfig) -> None:
    """Before a run: can the server be reached at all (``GET /models``, ``connect_check_s``)?
    Raises :class:`TeacherError` when it cannot; remembers the models it lists. Any HTTP answer
    (even 401 or 404) counts as reachable: the requests themselves say what is wrong."""
    import openai

    limit = min(config.connect_check_s, config.timeout_s)
    try:
        page = await _with_deadline(
            lambda: client.with_options(timeout=limit, max_retries=0).models.list(), limit)
        state.models = [m.id for m in getattr(page, "data", None) or [] if hasattr(m, "id")]
    except (TimeoutError, asyncio.TimeoutError, openai.APITimeoutError):
        raise TeacherError(unreachable_message(
            state.url, f"GET {state.url}/models got no answer within {limit:g} s")) from None
    except openai.APIConnectionError as err:
        raise TeacherError(unreachable_message(
            state.url, describe_failure(err, state.url, config))) from None
    except Exception:  # an HTTP error or an odd body: the server is there
        state.models = None


def _model_missing_message(state: RunState, config: TeacherConfig) -> str:
    if state.models:
        served = ", ".join(repr(m) for m in sorted(state.models)[:20])
        more = f" (and {len(state.models) - 20} more)" if len(state.models) > 20 else ""
        listing = f"it serves {served}{more}"
    else:
        listing = f"it did not list its models (GET {state.url}/models)"
    return (f"stopped: the teacher at {state.url} has no model {config.model!r}; {listing}. "
            "Set TeacherConfig(model=...) or --model to one of them.")


async def generate_traces(
    tasks: Iterable[Any],
    out_path: str | Path,
    config: TeacherConfig | None = None,
    *,
    image_root: str | Path | None = None,
    progress: bool = True,
    stop: threading.Event | None = None,
) -> RunSummary:
    """Ask the teacher for a trace per task and append one JSON line per task to ``out_path``.

    Resumable: tasks with a ``"done"`` record in ``out_path`` are skipped; ``"failed"`` ones are
    tried again and their new record supersedes the old. At most ``config.concurrency`` requests
    are in flight. 429s, 5xx, timeouts, connection errors and malformed 200 responses
    (``bad_response:<kind>``, see :func:`read_reply`) are retried up to ``config.max_retries``
    times with exponential backoff and full jitter (a ``Retry-After`` is honoured); other errors
    fail the task at once with a reason. Every failed task is written with its reason and tried
    again by the next run.

    ``budget_usd`` is a ceiling on the cost recorded in the file: each attempt reserves its
    worst-case cost (:func:`worst_case_cost`: prompt bound + ``max_tokens`` at the model's price)
    before it is sent, and the difference is released when the usage comes back; a request that
    could cross the cap is never sent, and the tasks left are ``not_started`` (rerun with a
    bigger budget). Setting ``stop`` (a ``threading.Event``) stops launching the same way. At
    the end the file is compacted to exactly one line per task.

    Fail-fast: the server is checked first (``GET /models`` within ``connect_check_s``), and
    ``fail_fast_after`` connection failures or timeouts in a row with nothing answered stop the
    run; so does a 404 ``model_not_found`` (the message lists the models the server has). Both
    raise :class:`TeacherError` with one message naming the URL and what to check, after
    writing what finished (``err.summary`` holds the run's summary).

    Records: ``task_id, status ("done"|"failed"), model, mode, text, stages, problems (kinds),
    final_answer, usage, cost_usd, attempts, failure, seconds, created, request_key,
    finish_reason``. ``tasks`` are :class:`cotlib.synth.Task` objects, task records, or dicts
    ``{"id", "image", "question", "answer"}`` (image paths relative to ``image_root``).
    """
    import openai
    from tqdm.auto import tqdm

    config = config or TeacherConfig()
    started = time.perf_counter()
    jobs = _jobs(tasks, image_root)
    if config.budget_usd is not None and price_for(config.model, config.prices) is None:
        raise ValueError(
            f"budget_usd is set but model {config.model!r} has no price: "
            f"pass prices={{{config.model!r}: (usd_per_1M_in, usd_per_1M_out)}}"
        )
    if config.budget_usd is not None and config.max_tokens is None:
        raise ValueError("budget_usd needs max_tokens: without it a request's cost has no "
                         "ceiling (set TeacherConfig(max_tokens=...))")
    key = key_for(config)
    url = effective_base_url(config.base_url)
    summary = RunSummary(out_path=str(out_path), total=len(jobs))
    failures: Counter[str] = Counter()
    rng = random.Random()

    with ResultsWriter(out_path, config.fsync_interval_s) as writer:
        existing = load_results(out_path)
        spent_before = sum(float(r.get("cost_usd") or 0.0) for r in existing.values())
        pending = [j for j in jobs if existing.get(j.task_id, {}).get("status") != "done"]
        summary.skipped = len(jobs) - len(pending)
        state = RunState(config.budget_usd, spent_before, url=url, model=config.model,
                         fail_fast_after=config.fail_fast_after)
        client = openai_client(
            config, key=key, async_client=True, max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(limits=connection_limits(config.concurrency)),
        )
        bar = tqdm(total=len(pending), desc="teacher", unit="task", disable=not progress)
        in_flight: set[asyncio.Task] = set()

        def cancel_others() -> None:
            me = asyncio.current_task()
            for task in list(in_flight):
                if task is not me:
                    task.cancel()

        state.on_abort = cancel_others

        async def probe() -> bool:
            limit = min(config.connect_check_s, config.timeout_s)
            try:
                await _with_deadline(lambda: client.with_options(
                    timeout=limit, max_retries=0).models.list(), limit)
            except (TimeoutError, asyncio.TimeoutError, openai.APIConnectionError):
                return False
            except Exception:  # any HTTP answer: the server is there
                return True
            return True

        state.probe = probe

        def finish(record: dict, reason: str | None) -> None:
            writer.write(record)
            summary.attempts += record["attempts"]
            summary.cost_usd += record["cost_usd"]
            if reason is None:
                summary.done += 1
                summary.prompt_tokens += record["usage"]["prompt_tokens"]
                summary.completion_tokens += record["usage"]["completion_tokens"]
            else:
                summary.failed += 1
                failures[reason] += 1
            bar.update(1)
            bar.set_postfix(done=summary.done, failed=summary.failed,
                            cost=f"${summary.cost_usd:.4f}", refresh=False)

        async def run_one(job: _Job) -> None:
            t0 = time.perf_counter()
            common = {"model": config.model, "mode": config.mode}
            try:  # loading and PNG-encoding an image can take a while: keep it off the loop
                messages = await asyncio.to_thread(job.messages, config.mode, image_root)
            except Exception as err:  # an unreadable image fails this task only
                reason, _ = classify_error(err)
                return finish(make_record(
                    job.task_id, status="failed", attempts=0, **common,
                    failure=f"{reason}: {redact(err, key)}"[:500],
                    seconds=time.perf_counter() - t0), reason)
            rkey = messages_key(messages)
            worst = worst_case_cost(messages, config) if config.budget_usd is not None else 0.0
            reply, attempts, error, cost = await call_with_retries(
                client, _request(messages, config), config, rng, state, worst)
            seconds = time.perf_counter() - t0
            if error is not None:
                reason, err = error
                if reason in ("budget", "aborted") and cost == 0.0 and attempts == 0:
                    return None  # never sent: left for a rerun (not_started)
                if reason == "not_found" and (getattr(err, "code", None) == "model_not_found"
                                              or "model" in str(err).lower()):
                    state.abort(_model_missing_message(state, config))
                detail = redact(describe_failure(err, url, config), key)
                note = f" after {attempts} attempts" if attempts > 1 else ""
                return finish(make_record(
                    job.task_id, status="failed", attempts=attempts, seconds=seconds,
                    cost_usd=cost, failure=f"{reason}{note}: {detail}"[:500], request_key=rkey,
                    **common), reason)
            finish(make_record(
                job.task_id, reply.text, model=reply.model or config.model, mode=config.mode,
                usage={"prompt_tokens": reply.prompt_tokens,
                       "completion_tokens": reply.completion_tokens},
                cost_usd=cost, attempts=attempts, seconds=seconds, request_key=rkey,
                finish_reason=reply.finish_reason), None)

        semaphore = asyncio.Semaphore(config.concurrency)
        try:
            if pending:
                await _preflight(client, state, config)
            for job in pending:
                await semaphore.acquire()  # wait for a free slot
                if state.exhausted or state.abort_message or (stop is not None
                                                              and stop.is_set()):
                    semaphore.release()
                    break
                task = asyncio.create_task(run_one(job))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                task.add_done_callback(lambda _: semaphore.release())
            while in_flight:  # a task cancelled by an abort is not an error; a bug is
                for result in await asyncio.gather(*in_flight, return_exceptions=True):
                    if isinstance(result, Exception):
                        raise result
        except TeacherError as err:
            state.abort_message = str(err)
        finally:  # on an error or cancellation: stop what is in flight, keep what was written
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            bar.close()
            await client.close()
        summary.stopped_by_budget = state.exhausted
        summary.budget_note = state.budget_note if state.exhausted else ""
        summary.not_started = len(pending) - summary.done - summary.failed
        writer.sync()
        compact_results(out_path)

    summary.failures = dict(failures.most_common())
    summary.cost_usd = round(summary.cost_usd, 8)
    summary.seconds = round(time.perf_counter() - started, 3)
    log.info("%s: %s", out_path, summary)
    if state.abort_message is not None:
        error = TeacherError(redact(state.abort_message, key))
        error.summary = summary  # type: ignore[attr-defined]
        raise error
    return summary


def run_generation(
    tasks: Iterable[Any],
    out_path: str | Path,
    config: TeacherConfig | None = None,
    **kwargs: Any,
) -> RunSummary:
    """Blocking :func:`generate_traces`, for scripts AND notebooks.

    In a plain script it uses ``asyncio.run``. Inside Jupyter (where an event loop is already
    running and ``asyncio.run`` refuses to start) it runs the coroutine on its own loop in a
    worker thread and waits. Interrupting the kernel stops launching requests, lets the ones in
    flight finish and be written, then re-raises ``KeyboardInterrupt``; rerun to resume.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(generate_traces(tasks, out_path, config, **kwargs))
    stop = kwargs.pop("stop", None) or threading.Event()
    with ThreadPoolExecutor(1, thread_name_prefix="cotlib-teacher") as pool:
        future = pool.submit(
            asyncio.run, generate_traces(tasks, out_path, config, stop=stop, **kwargs)
        )
        try:
            return future.result()
        except KeyboardInterrupt:
            stop.set()
            future.result()
            raise


# -----------------------------------------------------------------------------
# OpenAI Batch API


BATCH_URL = "/v1/chat/completions"
BATCH_MAX_REQUESTS = 50_000
BATCH_MAX_BYTES = 200 * 1024 * 1024


def batch_request(task: Any, config: TeacherConfig, image_root: str | Path | None = None) -> dict:
    """One Batch API request line (as a dict) for ``task``."""
    (job,) = _jobs([task], image_root)
    body = _request(job.messages(config.mode, image_root), config)
    return {"custom_id": job.task_id, "method": "POST", "url": BATCH_URL, "body": body}


def write_batch_file(
    tasks: Iterable[Any],
    path: str | Path,
    config: TeacherConfig | None = None,
    *,
    image_root: str | Path | None = None,
) -> int:
    """Write an OpenAI Batch API input file: one ``{"custom_id": task id, "method": "POST",
    "url": "/v1/chat/completions", "body": {...}}`` per line. Returns the number of requests.

    Raises ValueError beyond the Batch API limits (50,000 requests, 200 MB): split the tasks.
    See the module docstring for uploading it and :func:`read_batch_output` for the result.
    """
    config = config or TeacherConfig()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = size = 0
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        for task in tasks:
            line = _encode(batch_request(task, config, image_root))
            n += 1
            size += len(line)
            if n > BATCH_MAX_REQUESTS or size > BATCH_MAX_BYTES:
                f.close()
                tmp.unlink()
                raise ValueError("a batch file holds at most 50,000 requests and 200 MB: "
                                 "split the tasks into several batches")
            f.write(line)
    os.replace(tmp, path)
    return n


def read_batch_output(
    path: str | Path,
    out_path: str | Path,
    *,
    mode: str = "conditioned",
    prices: Mapping[str, tuple[float, float]] | None = None,
) -> RunSummary:
    """Convert a downloaded Batch API output file into results records appended to ``out_path``
    (then compacted: one line per task). Cost uses the batch discount.

    Each output line is ``{"id", "custom_id", "response": {"status_code", "request_id",
    "body": <chat.completion>} | null, "error": {"code", "message"} | null}``. A non-200
    status or an ``error`` becomes a ``"failed"`` record with the reason, which a live
    :func:`run_generation` over the same file retries.
    """
    _check_mode(mode)
    started = time.perf_counter()
    summary = RunSummary(out_path=str(out_path))
    failures: Counter[str] = Counter()
    with ResultsWriter(out_path, fsync_interval_s=1.0) as writer, open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            item = json.loads(line)
            summary.total += 1
            summary.attempts += 1
            task_id = str(item["custom_id"])
            response = item.get("response") or {}
            body = response.get("body") or {}
            model = body.get("model") or "unknown"
            status = response.get("status_code")
            error = item.get("error") or (body.get("error") if status != 200 else None)
            if error or status != 200:
                err = error or {}
                reason = "batch_error" if item.get("error") else _http_reason(status)
                message = err.get("message") or f"status {status}"
                failure = f"{reason}: {err.get('code') or status}: {redact(message)}"[:500]
                writer.write(make_record(task_id, model=model, mode=mode, status="failed",
                                         failure=failure))
                summary.failed += 1
                failures[reason] += 1
                continue
            try:
                reply = read_reply(body)
            except BadResponse as bad:
                reason = f"bad_response:{bad.kind}"
                writer.write(make_record(task_id, model=model, mode=mode, status="failed",
                                         failure=f"{reason}: {redact(bad)}"[:500]))
                summary.failed += 1
                failures[reason] += 1
                continue
            usage = {"prompt_tokens": reply.prompt_tokens,
                     "completion_tokens": reply.completion_tokens}
            cost = estimate_cost(usage, model, prices) * BATCH_DISCOUNT
            record = make_record(task_id, reply.text, model=model, mode=mode, usage=usage,
                                 cost_usd=cost, finish_reason=reply.finish_reason)
            writer.write(record)
            summary.done += 1
            summary.prompt_tokens += record["usage"]["prompt_tokens"]
            summary.completion_tokens += record["usage"]["completion_tokens"]
            summary.cost_usd += cost
        writer.sync()
        compact_results(out_path)
    summary.failures = dict(failures.most_common())
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


def _http_reason(status: Any) -> str:
    names = {400: "bad_request", 401: "auth", 429: "rate_limit"}
    if isinstance(status, int) and status >= 500:
        return "server_error"
    return names.get(status, f"http_{status}")


# -----------------------------------------------------------------------------
# command line: cotlib generate ...


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cotlib generate", description="Generate four-stage traces with a teacher."
    )
    p.add_argument("--split", required=True, help="task folder, e.g. data/tasks/train")
    p.add_argument("--out", required=True, help="results JSONL, e.g. runs/x/traces.jsonl")
    p.add_argument("--base-url", default=None, help="OpenAI-compatible server (default: OpenAI)")
    p.add_argument("--model", default="gpt-4o")
    p.add_argument("--mode", default="conditioned", choices=MODES)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--max-retries", type=int, default=4)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per attempt")
    p.add_argument("--budget", type=float, default=None,
                   help="USD ceiling on the file's total cost: a request that could cross it "
                        "(prompt + max tokens at the model's price) is not sent")
    p.add_argument("--max-tokens", type=int, default=1024, help="completion tokens per request")
    p.add_argument("--limit", type=int, default=None, help="only the first N tasks")
    p.add_argument("--api-key-env", default=None, metavar="NAME",
                   help="send the key in this environment variable (to any server). Default: "
                        "OPENAI_API_KEY to api.openai.com only; COTLIB_TEACHER_API_KEY or a "
                        "dummy key to any other --base-url")
    p.add_argument("--prompt-key", action="store_true", help="type the key in if not set")
    p.add_argument("--no-progress", action="store_true")
    return p


def generate_main(argv: list[str] | None = None) -> int:
    """``cotlib generate --split data/tasks/train --out runs/x/traces.jsonl [--base-url ...]``.
    Exit status 0 when every task is done, 1 otherwise (rerun to retry / continue)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    tasks = synth.load_split(args.split)[: args.limit]
    config = TeacherConfig(
        model=args.model, base_url=args.base_url, api_key_env=args.api_key_env,
        prompt_for_key=args.prompt_key, mode=args.mode, concurrency=args.concurrency,
        max_retries=args.max_retries, timeout_s=args.timeout, budget_usd=args.budget,
        max_tokens=args.max_tokens,
    )
    try:
        summary = run_generation(tasks, args.out, config, progress=not args.no_progress)
    except (TeacherError, RuntimeError, ValueError) as err:  # one message, no traceback
        print(f"cotlib generate: {redact(err)}", file=sys.stderr)
        summary = getattr(err, "summary", None)
        if summary is not None:
            print(json.dumps(asdict(summary)))
        return 1
    print(summary)
    print(json.dumps(asdict(summary)))
    return 0 if summary.done + summary.skipped == summary.total else 1


if __name__ == "__main__":
    sys.exit(generate_main())

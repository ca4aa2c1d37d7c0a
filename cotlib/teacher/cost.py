"""Prices and cost estimates: list prices per model, how each model bills an image, what a run
would cost, and the worst case one request can cost (the budget's reservation)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cotlib.teacher.prompt import LOCAL_MODEL

if TYPE_CHECKING:
    from cotlib.teacher.client import TeacherConfig


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


def usage_tokens(usage: Any) -> tuple[int, int]:
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
    tokens_in, tokens_out = usage_tokens(usage)
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

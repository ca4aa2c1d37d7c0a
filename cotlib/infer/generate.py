"""Free text (:func:`generate_ids`, :func:`generate_text`: ``model.generate``, greedy or
sampled; the judge in :mod:`cotlib.search`, the free answers in :mod:`cotlib.experiment`), the
one-pass reference (:func:`generate_one_pass`: ``model.generate``), and :func:`memorise`, which
overfits a tiny model on one answer for demos and tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cotlib import models
from cotlib.infer.answers import answer_lead
from cotlib.infer.plumbing import (
    decode_ids,
    device_of,
    encode_text,
    eos_ids,
    extend_token_inputs,
    pad_id,
    rope_owner,
    tokenizer_of,
)
from cotlib.infer.sampling import Sampling


def generate_ids(
    model,
    processor,
    images: Sequence[Any],
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    sampling: Sampling | None = None,
) -> list[list[int]]:
    """The new token ids for ready-made chat prompts (one image each), decoded as one batch by
    transformers' ``model.generate`` on the left-padded batch; each row is cut at its first
    end-of-answer token (not included) and carries no padding.

    Greedy when ``sampling`` is None; else a temperature / top-p sample (``top_k`` off), drawn
    from torch's random generator re-seeded with ``sampling.seed`` inside
    ``torch.random.fork_rng`` (so a seed gives the same rows, and the caller's random state is
    left alone). This replaced a hand-written batched loop on the staged decoder's cache: on the
    experiment's free generation (data/tasks/heldout's 330 tasks, batch 40, CPU, 1 thread) both
    gave the same text and token count on 330 of 330 rows for the demo run's merged CoT adapter at
    320 new tokens (51,226 tokens), its direct adapter and the bare base, and the loop's tokens/s
    was 0.91x to 1.15x ``model.generate``'s on a shared machine: no measured reason to keep it
    (``benchmarks/README.md``).

    >>> model, processor = models.load(models.tiny("idefics3"))
    >>> from PIL import Image
    >>> prompt = models.chat_prompt(processor, "How many?")
    >>> ids = generate_ids(model, processor, [Image.new("RGB", (64, 64))] * 2, [prompt] * 2,
    ...                    max_new_tokens=4)
    >>> len(ids), ids[0] == ids[1]
    (2, True)
    """
    import contextlib

    import torch
    from transformers import GenerationConfig

    eos = eos_ids(model, processor)
    device = device_of(model)
    batch = models.encode(processor, list(images), list(prompts), device=device)
    drawn = dict(do_sample=False) if sampling is None else dict(
        do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
    config = GenerationConfig(max_new_tokens=max_new_tokens, eos_token_id=sorted(eos),
                              pad_token_id=pad_id(processor), **drawn)
    seeded = sampling is not None and sampling.seed is not None
    rng = (torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])
           if seeded else contextlib.nullcontext())
    owner = rope_owner(model)
    saved = owner.rope_deltas if owner is not None else None
    try:
        with rng, torch.inference_mode():
            if seeded:
                torch.manual_seed(sampling.seed)
            out = model.generate(**batch, generation_config=config)
    finally:
        if owner is not None:
            owner.rope_deltas = saved
    rows = []
    for ids in out[:, batch["input_ids"].shape[1]:].tolist():
        cut = next((i for i, t in enumerate(ids) if t in eos), len(ids))
        rows.append(ids[:cut])
    return rows


def generate_text(
    model,
    processor,
    images: Sequence[Any],
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    sampling: Sampling | None = None,
) -> list[str]:
    """Free-text answers to ready-made chat prompts (one image each), batched; stops at the
    end-of-answer token. Used by the model-as-judge in :mod:`cotlib.search`.

    >>> model, processor = models.load(models.tiny("idefics3"))
    >>> from PIL import Image
    >>> prompt = models.chat_prompt(processor, "Which is better?")
    >>> texts = generate_text(model, processor, [Image.new("RGB", (64, 64))], [prompt],
    ...                       max_new_tokens=4)
    >>> len(texts)
    1
    """
    rows = generate_ids(model, processor, images, prompts, max_new_tokens=max_new_tokens,
                        sampling=sampling)
    return [decode_ids(processor, ids) for ids in rows]


def generate_one_pass(
    model, processor, image: Any, question: str, *, max_new_tokens: int = 512,
    min_new_tokens: int | None = None,
) -> tuple[list[int], str]:
    """The reference: one uninterrupted greedy ``model.generate`` (no stage control at all).
    Returns the new token ids and their text.

    >>> model, processor = models.load(models.tiny("idefics3"))
    >>> from PIL import Image
    >>> ids, text = generate_one_pass(model, processor, Image.new("RGB", (64, 64)), "Hi?",
    ...                               max_new_tokens=3, min_new_tokens=3)
    >>> len(ids)
    3
    """
    import torch

    batch = models.encode(processor, [image], [models.chat_prompt(processor, question)],
                          device=device_of(model))
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id(processor))
    if min_new_tokens:
        kwargs["min_new_tokens"] = min_new_tokens
    owner = rope_owner(model)
    saved = owner.rope_deltas if owner is not None else None
    try:
        with torch.inference_mode():
            out = model.generate(**batch, **kwargs)
    finally:
        if owner is not None:
            owner.rope_deltas = saved
    new = out[0, batch["input_ids"].shape[1]:].tolist()
    return new, decode_ids(processor, new)


def memorise(
    model, processor, image: Any, question: str, answer_text: str, *, steps: int = 300,
    lr: float = 1e-2, target_loss: float = 0.02,
) -> list[float]:
    """Overfit ``model`` (in place) on one answer until it writes it back — seconds for a tiny
    model. A stand-in for a fine-tuned model in demos and tests: afterwards the model writes the
    stage tags itself, so staged decoding stops at real closing tags. Returns the losses.

    The answer is appended to the prompt as in training data: the chat template's lead, the text,
    the end-of-answer token; only the answer's tokens are trained.
    """
    import torch

    device = device_of(model)
    batch = models.encode(processor, [image], [models.chat_prompt(processor, question)],
                          device=device)
    tok = tokenizer_of(processor)
    answer = encode_text(processor, answer_lead(processor) + answer_text) + [tok.eos_token_id]
    extra = torch.tensor([answer], device=device)
    ids = torch.cat([batch["input_ids"], extra], dim=1)
    kwargs = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
    extend_token_inputs(model, kwargs, extra)
    labels = ids.clone()
    labels[:, : batch["input_ids"].shape[1]] = -100
    owner = rope_owner(model)
    saved = owner.rope_deltas if owner is not None else None
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses: list[float] = []
    model.train()
    try:
        for _ in range(steps):
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels,
                         **kwargs).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if losses[-1] < target_loss:
                break
    finally:
        model.eval()
        if owner is not None:
            owner.rope_deltas = saved
    return losses

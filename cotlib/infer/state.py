"""The decoding state of a batch (:class:`DecodeState`: cache, attention mask, positions, each
row's pending tokens) and the two forward passes over it: the prefill, which encodes image and
prompt into a fresh cache, and feeding tokens through the cached model.

Why a cache kept from stage to stage rather than ``model.generate`` restarted for every stage on
image + prompt + answer so far (LLaVA-CoT's demo; ``reuse_cache=False`` here): measured with
``benchmarks/bench_infer.py`` (4 stages of 16 forced tokens, 98 answer tokens), re-encoding costs
4.40x the cached time at SmolVLM-256M's real size on the 2-core development CPU (2 threads,
random weights, a 512 px image = 17 tiles, 1,088 image tokens: 147 s against 33 s; 6.26x in a
run with other work on the machine), because every stage runs the vision tower again. It costs
nothing measurable on an H100 (0.98x) or with a tiny model on the CPU (1.04x). The same cache
lets a search decode N candidates from one copy of the prefix (:meth:`DecodeState.repeat`),
and decoding stage by stage this way is as fast as one uninterrupted ``model.generate`` (0.98x
on that CPU, 0.75x on the H100)."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cotlib import stages
from cotlib.infer.answers import StageResult
from cotlib.infer.plumbing import (
    cache_kwarg,
    device_of,
    extend_token_inputs,
    left_pad,
    out_cache,
    pad_id,
    rope_owner,
)


@dataclass
class Row:
    question: str
    prompt_tokens: int
    pending: list[int]  # tokens to feed before the next stage is decoded
    completion_ids: list[int] = field(default_factory=list)  # everything fed after the prompt
    results: dict[str, StageResult] = field(default_factory=dict)


@dataclass
class DecodeState:
    """Everything needed to continue decoding a batch: the cache, the attention mask, each row's
    next position and pending tokens. Make copies with :meth:`repeat` and :meth:`select`.

    ``next_pos`` holds absolute text positions; for Qwen-VL they include the row's
    ``rope_deltas``, so other calls that overwrite the model's own ``rope_deltas`` cannot shift
    them.
    """

    model: Any = field(repr=False)
    processor: Any = field(repr=False)
    rows: list[Row]
    stage_index: int  # index in stages.STAGES of the next stage to decode
    batch: Any = field(repr=False)  # the encoded prompt (ids, mask, pixels), for the naive path
    reuse_cache: bool = True
    cache: Any = field(default=None, repr=False)
    mask: Any = field(default=None, repr=False)  # (B, T): 1 = a token in the cache, 0 = padding
    next_pos: Any = field(default=None, repr=False)  # (B,)
    logits: Any = field(default=None, repr=False)  # (B, V): logits for the next token
    prefill_seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    mrope: bool = False  # Qwen-VL: 3-D positions (set by the prefill)
    cache_kw: str = "cache"  # the forward argument that takes the cache (set by the prefill)

    @property
    def size(self) -> int:
        return len(self.rows)

    @property
    def next_stage(self) -> str | None:
        return stages.STAGES[self.stage_index] if self.stage_index < len(stages.STAGES) else None

    def repeat(self, n: int) -> DecodeState:
        """A copy with every row repeated ``n`` times (row i becomes rows i*n … i*n+n-1); the
        prefix cache is computed once and copied, as in ``cache.batch_repeat_interleave``."""
        if n < 1:
            raise ValueError(f"repeat needs n >= 1, got {n}")
        return self._copy(lambda t: t.repeat_interleave(n, dim=0),
                          lambda c: c.batch_repeat_interleave(n),
                          [r for r in self.rows for _ in range(n)])

    def select(self, indices: Sequence[int]) -> DecodeState:
        """A copy keeping only the rows at ``indices`` (e.g. the winning candidate)."""
        import torch

        indices = list(indices)
        if not indices or any(not 0 <= i < self.size for i in indices):
            raise ValueError(f"select needs row indices in 0..{self.size - 1}, got {indices}")
        idx = torch.tensor(indices, device=self.mask.device if self.mask is not None else None)
        return self._copy(lambda t: t.index_select(0, idx.to(t.device)),
                          lambda c: c.batch_select_indices(idx),
                          [self.rows[i] for i in indices])

    def _copy(self, on_tensor, on_cache, rows) -> DecodeState:
        if not self.reuse_cache:
            raise ValueError("repeat/select need reuse_cache=True (the naive path keeps no cache)")
        if self.cache is None:
            raise ValueError("nothing to copy yet: call start() first")
        cache = copy.deepcopy(self.cache)
        on_cache(cache)
        return DecodeState(
            self.model, self.processor, [copy.deepcopy(r) for r in rows], self.stage_index,
            None, True, cache, on_tensor(self.mask), on_tensor(self.next_pos),
            on_tensor(self.logits), self.prefill_seconds, self.started, self.mrope,
            self.cache_kw,
        )


def prefill(state: DecodeState, chunks: Sequence[Sequence[int]]):
    """Encode prompt + image (+ per-row extra tokens) from scratch into a fresh cache."""
    import torch
    from transformers import DynamicCache

    model, batch = state.model, state.batch
    device = device_of(model)
    if any(chunks) and not all(chunks):
        raise ValueError("prefill needs extra tokens for every row or for none")
    extra_ids, extra_mask = left_pad(chunks, pad_id(state.processor), device)
    ids = torch.cat([batch["input_ids"], extra_ids], dim=1)
    mask = torch.cat([batch["attention_mask"], extra_mask], dim=1)
    kwargs = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
    owner, state.cache_kw = rope_owner(model), cache_kwarg(model)
    t0 = time.perf_counter()
    cache = DynamicCache()
    if owner is not None:  # Qwen-VL: the model computes 3-D positions and its rope_deltas
        extend_token_inputs(model, kwargs, extra_ids)
        saved, owner.rope_deltas = owner.rope_deltas, None
        try:
            out = model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1,
                        **{state.cache_kw: cache}, **kwargs)
            deltas = owner.rope_deltas
        finally:
            owner.rope_deltas = saved
        next_pos = mask.sum(dim=-1) + (deltas.view(-1).to(device) if deltas is not None else 0)
    else:
        pos = (mask.cumsum(dim=-1) - 1).clamp(min=0)
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                    logits_to_keep=1, **{state.cache_kw: cache}, **kwargs)
        next_pos = mask.sum(dim=-1)
    state.cache, state.mask, state.next_pos = out_cache(out), mask, next_pos
    state.mrope = owner is not None
    state.logits = out.logits[:, -1].float()
    _sync(device)
    state.prefill_seconds += time.perf_counter() - t0


def feed_chunks(state: DecodeState, chunks: Sequence[Sequence[int]]) -> None:
    """Feed per-row token lists (possibly empty) through the cached model; update logits."""
    import torch

    device = device_of(state.model)
    ids, chunk_mask = left_pad(chunks, pad_id(state.processor), device)
    if ids.shape[1] == 0:
        return
    mask = torch.cat([state.mask, chunk_mask], dim=1)
    pos = state.next_pos[:, None] + chunk_mask.cumsum(dim=-1) - 1
    pos = torch.maximum(pos, state.next_pos[:, None] - 1).clamp(min=0)  # padding: any valid value
    if state.mrope:
        pos = pos[None].expand(3, -1, -1)  # text tokens: the same position on all three axes
    out = state.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True,
                      logits_to_keep=1, **{state.cache_kw: state.cache})
    has = chunk_mask.any(dim=-1, keepdim=True)
    new = out.logits[:, -1].float()
    state.logits = new if state.logits is None else torch.where(has, new, state.logits)
    state.cache, state.mask = out_cache(out), mask
    state.next_pos = state.next_pos + chunk_mask.sum(dim=-1)


def _sync(device) -> None:
    if getattr(device, "type", "") == "cuda":
        import torch

        torch.cuda.synchronize(device)

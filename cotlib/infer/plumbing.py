"""Details the decoders share: the tokenizer behind a processor, token ids that end an answer or
may close a tag, padding, the device, the forward argument that takes the cache, and Qwen-VL's
multimodal rotary positions (``rope_deltas``) and per-token inputs.

>>> from cotlib import models
>>> _, processor = models.load(models.tiny("idefics3"))
>>> decode_ids(processor, encode_text(processor, "<SUMMARY> a plan"))
'<SUMMARY> a plan'
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from cotlib import families


def tokenizer_of(processor):
    """The tokenizer behind a processor (or the tokenizer itself)."""
    return getattr(processor, "tokenizer", processor)


def encode_text(processor, text: str) -> list[int]:
    """Token ids of ``text``, without special tokens."""
    return tokenizer_of(processor).encode(text, add_special_tokens=False) if text else []


def decode_ids(processor, ids: Sequence[int]) -> str:
    """The text of token ids, special tokens dropped, spaces exactly as tokenized."""
    return tokenizer_of(processor).decode(list(ids), skip_special_tokens=True,
                                        clean_up_tokenization_spaces=False)


_GT_CACHE: dict[tuple, frozenset[int]] = {}


def ids_with_gt(processor) -> frozenset[int]:
    """Ids of tokens whose text contains ``>``: only these can complete a closing tag, so the
    loop decodes text only after one of them (cheap stop check)."""
    tok = tokenizer_of(processor)
    key = (id(tok), len(tok), getattr(tok, "name_or_path", ""))
    if key not in _GT_CACHE:
        pieces = tok.convert_ids_to_tokens(list(range(len(tok))))
        _GT_CACHE[key] = frozenset(i for i, p in enumerate(pieces) if p and ">" in p)
    return _GT_CACHE[key]


def eos_ids(model, processor) -> set[int]:
    """Token ids that end an answer: the generation config's and the tokenizer's eos."""
    ids: set[int] = set()
    for value in (getattr(getattr(model, "generation_config", None), "eos_token_id", None),
                  tokenizer_of(processor).eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int))
    return ids


def pad_id(processor) -> int:
    """The id to pad with: the pad token, else the eos token, else 0."""
    tok = tokenizer_of(processor)
    for value in (tok.pad_token_id, tok.eos_token_id):
        if isinstance(value, int):
            return value
    return 0


def rope_owner(model):
    """The submodule that keeps Qwen-VL's ``rope_deltas`` (None for 1-D rotary models: a
    registered family without ``rope_deltas``, or a model with no such submodule)."""
    family = families.find(model)
    if family is not None and not family.rope_deltas:
        return None
    for module in model.modules():
        if hasattr(module, "rope_deltas") and hasattr(module, "get_rope_index"):
            return module
    return None


def extend_token_inputs(model, kwargs: dict, extra) -> None:
    """Extend the per-token inputs of ``model``'s family (Qwen-VL's ``mm_token_type_ids``) in
    ``kwargs`` with zeros for the appended tokens ``extra`` (a (B, n) tensor), in place."""
    import torch

    for key in families.token_inputs(model):
        if key in kwargs:
            kwargs[key] = torch.cat([kwargs[key], torch.zeros_like(extra)], dim=1)


def cache_kwarg(model) -> str:
    """The forward argument that takes the cache: ``cache`` in transformers 5.2x, formerly
    ``past_key_values``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        params = inspect.signature(base.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return "cache"
    return "cache" if "cache" in params else "past_key_values"


def out_cache(out):
    """The cache a forward pass returned (``cache`` or, formerly, ``past_key_values``)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def device_of(model):
    """The device of the model's first parameter."""
    return next(model.parameters()).device


def left_pad(seqs: Sequence[Sequence[int]], pad: int, device):
    """Right-align token lists in one (B, L) tensor; mask 0 on the padding."""
    import torch

    width = max((len(s) for s in seqs), default=0)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s):] = torch.tensor(list(s), dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids.to(device), mask.to(device)

"""Stage-by-stage decoding: one stage at a time, reusing the cache, with live streaming.

A LLaVA-CoT model writes ``<SUMMARY> … </SUMMARY>``, then ``<CAPTION> … </CAPTION>`` and so on, in
one pass. Decoding it *one stage at a time* lets us stream each stage, time it, stop it, edit it,
or (``cotlib.search``) sample several candidates for it and keep the best. The loop here:

1. encode the image and the prompt **once** (the "prefill"), keeping the key/value cache;
2. for each stage: feed the opening tag (``<SUMMARY>``; for later stages the separator and the
   tag, ``"\\n\\n<CAPTION>"``), then pick tokens one by one until the decoded stage text contains
   its closing tag (or a token limit, or the end-of-answer token);
3. the stop token is not fed yet: it becomes part of the next stage's opening chunk, re-tokenized
   together with the separator so the model sees exactly the tokens of the rendered trace
   (what training data looks like, see :func:`cotlib.stages.render`).

With greedy decoding this gives the same tokens as one uninterrupted ``model.generate`` whenever the
model writes the tags itself (tested), while the image is encoded once instead of once per stage as
in LLaVA-CoT's demo script (``reuse_cache=False`` reproduces that naive way, for comparison).

Batches of questions are left-padded; each row stops on its own (finished rows are fed masked
padding). Positions are computed from the attention mask, so padding and stopped rows never
shift a row's positions. Qwen-VL's multimodal rotary positions (``rope_deltas``, which the model
keeps on itself and overwrites whenever it encodes another image) are saved per row in the
:class:`DecodeState` and the model's own value is restored after each prefill.

>>> from cotlib import models, synth
>>> model, processor = models.load(models.tiny("idefics3"))
>>> task = synth.make_tasks(1, seed=0)[0]
>>> answer = generate_stages(model, processor, task.get_image(), task.prompt_question(),
...                          force_tokens_per_stage=3)
>>> list(answer.stages), [r.tokens for r in answer.stages.values()]
(['SUMMARY', 'CAPTION', 'REASONING', 'CONCLUSION'], [3, 3, 3, 3])
"""

from __future__ import annotations

import copy
import inspect
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from cotlib import families, models, stages

# -----------------------------------------------------------------------------
# the text format, taken from cotlib.stages so training data and decoding agree

#: Separator between stages, as training traces are rendered.
SEP: str = stages.SEP

#: Default token budget per stage (LLaVA-CoT's stages: short plan, longer caption and reasoning).
DEFAULT_MAX_TOKENS: dict[str, int] = {
    "SUMMARY": 128, "CAPTION": 256, "REASONING": 384, "CONCLUSION": 96,
}

# why a stage stopped
TAG, LENGTH, EOS, GIVEN = "tag", "length", "eos", "given"


#: One rendered stage, exactly as training traces write it.
stage_block = stages.render_stage


def answer_lead(processor) -> str:
    """The text the chat template puts between the generation prompt and the answer.

    SmolVLM's template writes ``"Assistant:" + " " + answer``, Qwen's ``"assistant\\n" + answer``,
    so the first stage starts with ``" <SUMMARY>"`` for one and ``"<SUMMARY>"`` for the other —
    as in the training data that TRL renders with the same template.

    >>> _, processor = models.load(models.tiny("idefics3"))
    >>> answer_lead(processor)
    ' '
    """
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q"}]}
    marker = "\u2063ANSWER\u2063"
    try:
        prompt = processor.apply_chat_template([user], add_generation_prompt=True)
        full = processor.apply_chat_template(
            [user, {"role": "assistant", "content": [{"type": "text", "text": marker}]}]
        )
    except Exception:  # no or unusual chat template: assume the answer follows directly
        return ""
    if not full.startswith(prompt) or marker not in full[len(prompt):]:
        return ""
    return full[len(prompt): full.index(marker, len(prompt))]


# -----------------------------------------------------------------------------
# results


@dataclass
class StageResult:
    """One decoded stage: its text, the tokens the model chose, their log-probabilities, timing.

    ``stop`` says why it ended: ``"tag"`` (the model wrote the closing tag), ``"length"`` (token
    limit; the closing tag was then added), ``"eos"`` (the model ended its answer early; the tag
    was added) or ``"given"`` (written by a person, see :func:`continue_from`).
    """

    stage: str
    text: str
    token_ids: list[int] = field(default_factory=list)
    token_logprobs: list[float] = field(default_factory=list)
    seconds: float = 0.0
    stop: str = TAG

    @property
    def tokens(self) -> int:
        return len(self.token_ids)

    @property
    def logprob(self) -> float:
        """Sum of the chosen tokens' log-probabilities (under the model, temperature 1)."""
        return float(sum(self.token_logprobs))

    @property
    def mean_logprob(self) -> float:
        return self.logprob / len(self.token_logprobs) if self.token_logprobs else 0.0

    @property
    def problem(self) -> str | None:
        close = stages.close_tag(self.stage)
        if self.stop == LENGTH:
            return f"{self.stage}: cut at {self.tokens} tokens before {close} (tag added)"
        if self.stop == EOS:
            return f"{self.stage}: the model ended its answer before {close} (tag added)"
        return None


@dataclass
class StagedAnswer:
    """A whole staged answer: per-stage results, the full text as fed to the model, timings.

    ``text`` is the completion exactly as the model saw it (decoded from ``completion_ids``).
    ``problems`` lists format problems (from :func:`cotlib.stages.parse`) and stages that did not
    end with their own closing tag.
    """

    question: str
    stages: dict[str, StageResult]
    text: str
    completion_ids: list[int]
    prompt_tokens: int
    prefill_seconds: float
    seconds: float

    @property
    def final_answer(self) -> str:
        return stages.final_answer(self.text)

    @property
    def problems(self) -> list[str]:
        found = [str(p) for p in stages.parse(self.text).problems]
        return found + [r.problem for r in self.stages.values() if r.problem]

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def tokens(self) -> int:
        """Tokens the model chose itself (all stages)."""
        return sum(r.tokens for r in self.stages.values())

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(final_answer=self.final_answer, problems=self.problems)
        return d

    def __str__(self) -> str:
        return self.text


# -----------------------------------------------------------------------------
# sampling


@dataclass(frozen=True)
class Sampling:
    """Sampling settings; ``None`` where a function takes ``sampling`` means greedy.

    LLaVA-CoT's stage-level search samples with temperature 0.6 and top-p 0.9.
    """

    temperature: float = 0.6
    top_p: float = 0.9
    seed: int | None = None

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError("temperature must be > 0; pass sampling=None for greedy decoding")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def _choose(logits, sampling: Sampling | None, generator):
    """Pick one token per row: argmax, or a temperature / top-p sample. Returns ids and the
    chosen tokens' log-probabilities under the unmodified model distribution."""
    import torch

    logits = logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    if sampling is None:
        ids = logits.argmax(dim=-1)
    else:
        probs = torch.softmax(logits / sampling.temperature, dim=-1)
        if sampling.top_p < 1:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            drop = sorted_p.cumsum(dim=-1) - sorted_p > sampling.top_p  # keep the first always
            sorted_p = sorted_p.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
        ids = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    chosen = logp.gather(-1, ids[:, None]).squeeze(-1)
    return ids.tolist(), chosen.tolist()


# -----------------------------------------------------------------------------
# the decoding state


@dataclass
class _Row:
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
    rows: list[_Row]
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


def _tokenizer(processor):
    return getattr(processor, "tokenizer", processor)


def _encode_text(processor, text: str) -> list[int]:
    return _tokenizer(processor).encode(text, add_special_tokens=False) if text else []


def _decode(processor, ids: Sequence[int]) -> str:
    return _tokenizer(processor).decode(list(ids), skip_special_tokens=True,
                                        clean_up_tokenization_spaces=False)


_GT_CACHE: dict[tuple, frozenset[int]] = {}


def _ids_with_gt(processor) -> frozenset[int]:
    """Ids of tokens whose text contains ``>``: only these can complete a closing tag, so the
    loop decodes text only after one of them (cheap stop check)."""
    tok = _tokenizer(processor)
    key = (id(tok), len(tok), getattr(tok, "name_or_path", ""))
    if key not in _GT_CACHE:
        pieces = tok.convert_ids_to_tokens(list(range(len(tok))))
        _GT_CACHE[key] = frozenset(i for i, p in enumerate(pieces) if p and ">" in p)
    return _GT_CACHE[key]


def _eos_ids(model, processor) -> set[int]:
    ids: set[int] = set()
    for value in (getattr(getattr(model, "generation_config", None), "eos_token_id", None),
                  _tokenizer(processor).eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int))
    return ids


def _pad_id(processor) -> int:
    tok = _tokenizer(processor)
    for value in (tok.pad_token_id, tok.eos_token_id):
        if isinstance(value, int):
            return value
    return 0


def _rope_owner(model):
    """The submodule that keeps Qwen-VL's ``rope_deltas`` (None for 1-D rotary models: a
    registered family without ``rope_deltas``, or a model with no such submodule)."""
    family = families.find(model)
    if family is not None and not family.rope_deltas:
        return None
    for module in model.modules():
        if hasattr(module, "rope_deltas") and hasattr(module, "get_rope_index"):
            return module
    return None


def _extend_token_inputs(model, kwargs: dict, extra) -> None:
    """Extend the per-token inputs of ``model``'s family (Qwen-VL's ``mm_token_type_ids``) in
    ``kwargs`` with zeros for the appended tokens ``extra`` (a (B, n) tensor), in place."""
    import torch

    for key in families.token_inputs(model):
        if key in kwargs:
            kwargs[key] = torch.cat([kwargs[key], torch.zeros_like(extra)], dim=1)


def _cache_kwarg(model) -> str:
    """The forward argument that takes the cache: ``cache`` in transformers 5.2x, formerly
    ``past_key_values``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        params = inspect.signature(base.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return "cache"
    return "cache" if "cache" in params else "past_key_values"


def _out_cache(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def _device(model):
    return next(model.parameters()).device


def _left_pad(seqs: Sequence[Sequence[int]], pad: int, device):
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


# -----------------------------------------------------------------------------
# forward passes


def _prefill(state: DecodeState, chunks: Sequence[Sequence[int]]):
    """Encode prompt + image (+ per-row extra tokens) from scratch into a fresh cache."""
    import torch
    from transformers import DynamicCache

    model, batch = state.model, state.batch
    device = _device(model)
    if any(chunks) and not all(chunks):
        raise ValueError("_prefill needs extra tokens for every row or for none")
    extra_ids, extra_mask = _left_pad(chunks, _pad_id(state.processor), device)
    ids = torch.cat([batch["input_ids"], extra_ids], dim=1)
    mask = torch.cat([batch["attention_mask"], extra_mask], dim=1)
    kwargs = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
    owner, state.cache_kw = _rope_owner(model), _cache_kwarg(model)
    t0 = time.perf_counter()
    cache = DynamicCache()
    if owner is not None:  # Qwen-VL: the model computes 3-D positions and its rope_deltas
        _extend_token_inputs(model, kwargs, extra_ids)
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
    state.cache, state.mask, state.next_pos = _out_cache(out), mask, next_pos
    state.mrope = owner is not None
    state.logits = out.logits[:, -1].float()
    _sync(device)
    state.prefill_seconds += time.perf_counter() - t0


def _feed(state: DecodeState, chunks: Sequence[Sequence[int]]) -> None:
    """Feed per-row token lists (possibly empty) through the cached model; update logits."""
    import torch

    device = _device(state.model)
    ids, chunk_mask = _left_pad(chunks, _pad_id(state.processor), device)
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
    state.cache, state.mask = _out_cache(out), mask
    state.next_pos = state.next_pos + chunk_mask.sum(dim=-1)


def feed(state: DecodeState, chunks: Sequence[Sequence[int]]) -> None:
    """Feed token ids through the cached model, one list per row (an empty list leaves that row
    alone); afterwards ``state.logits[i]`` scores row ``i``'s next token. The building block of
    :func:`decode_stage`, public for notebook 06's exercise.

    >>> model, processor = models.load(models.tiny("idefics3"))
    >>> from PIL import Image
    >>> state = start(model, processor, [Image.new("RGB", (64, 64))], ["How many?"])
    >>> before = state.logits.clone()
    >>> feed(state, [state.rows[0].pending])
    >>> bool((state.logits != before).any())
    True
    """
    import torch

    if len(chunks) != state.size:
        raise ValueError(f"feed needs one token list per row ({state.size}), got {len(chunks)}")
    if not state.reuse_cache or state.cache is None:
        raise ValueError("feed needs a state with a cache: start(..., reuse_cache=True)")
    with torch.inference_mode():
        _feed(state, [list(c) for c in chunks])


def _sync(device) -> None:
    if getattr(device, "type", "") == "cuda":
        import torch

        torch.cuda.synchronize(device)


# -----------------------------------------------------------------------------
# the staged decoder


def start(
    model,
    processor,
    images: Sequence[Any],
    questions: Sequence[str],
    *,
    given: Mapping[str, str] | None = None,
    reuse_cache: bool = True,
    prompts: Sequence[str] | None = None,
) -> DecodeState:
    """Encode a batch of (image, question) pairs and, with ``reuse_cache``, run the prefill.

    ``given`` holds stages written by a person, e.g. ``{"SUMMARY": "..."}``: they are fed as if
    the model had written them and decoding continues with the next stage. ``prompts`` replaces
    the chat prompt built from each question (for free-text uses such as a judge).

    >>> model, processor = models.load(models.tiny("idefics3"))
    >>> from PIL import Image
    >>> state = start(model, processor, [Image.new("RGB", (64, 64))], ["How many?"])
    >>> state.size, state.next_stage
    (1, 'SUMMARY')
    """
    import torch

    from cotlib import images as cimages

    if isinstance(questions, str) or len(images) != len(questions):
        raise ValueError("pass lists: one image per question (for one question use "
                         "generate_stages(model, processor, image, question))")
    if not questions:
        raise ValueError("no questions to answer")
    pil = [im if hasattr(im, "convert") else cimages.load_image(im) for im in images]
    texts = list(prompts) if prompts is not None else [models.chat_prompt(processor, q)
                                                       for q in questions]
    batch = models.encode(processor, pil, texts, device=_device(model))
    lead = answer_lead(processor)
    stage_index, head = 0, lead
    if given:
        unknown = [k for k in given if k not in stages.STAGES]
        if unknown:
            raise ValueError(f"unknown stages {unknown}; use names from {stages.STAGES}")
        names = [s for s in stages.STAGES if s in given]
        if names != list(stages.STAGES[: len(names)]):
            raise ValueError(f"given stages must be the first ones in order {stages.STAGES}, "
                             f"got {list(given)}: give SUMMARY, then CAPTION, …")
        head += SEP.join(stage_block(s, given[s]) for s in names)
        stage_index = len(names)
        if stage_index < len(stages.STAGES):
            head += SEP
    if stage_index < len(stages.STAGES) and prompts is None:
        head += stages.open_tag(stages.STAGES[stage_index])
    first = _encode_text(processor, head) if prompts is None else []
    rows = [_Row(q, int(n), list(first))
            for q, n in zip(questions, batch["attention_mask"].sum(dim=-1).tolist())]
    for row in rows:
        for s in stages.STAGES[:stage_index]:
            row.results[s] = StageResult(s, given[s].strip(), stop=GIVEN)
    state = DecodeState(model, processor, rows, stage_index, batch, reuse_cache)
    if reuse_cache:
        with torch.inference_mode():
            _prefill(state, [[] for _ in rows])
    return state


def _stage_budget(stage: str, max_new_tokens: int | Mapping[str, int] | None) -> int:
    if max_new_tokens is None:
        return DEFAULT_MAX_TOKENS[stage]
    if isinstance(max_new_tokens, Mapping):
        return int(max_new_tokens.get(stage, DEFAULT_MAX_TOKENS[stage]))
    return int(max_new_tokens)


def _close_stage(state: DecodeState, row: _Row, stage: str, tokens: list[int],
                 logprobs: list[float], stop: str, seconds: float) -> StageResult:
    """Record a finished stage and set the row's pending tokens (stop token, closing tag,
    separator, next opening tag), re-tokenized as the rendered trace would be."""
    proc = state.processor
    close, nxt = stages.close_tag(stage), stages.next_stage(stage)
    cont = SEP + stages.open_tag(nxt) if nxt else ""
    text = _decode(proc, tokens)
    if stop == TAG:
        end = text.find(close) + len(close)
        body = text[: end - len(close)]
        kept_text = _decode(proc, tokens[:-1])
        if text.startswith(kept_text) and len(kept_text) <= end:
            # the last token (not fed yet) is replaced by the canonical tokens of its text up to
            # the end of the tag plus the continuation; anything it held after the tag is dropped
            pending = _encode_text(proc, text[len(kept_text): end] + cont)
        else:  # pragma: no cover - odd byte-level splits: keep the token as is
            pending = [tokens[-1]] + _encode_text(proc, cont)
    else:
        body = text
        closing = close if text.endswith((" ", "\n")) or not text else " " + close
        pending = ([tokens[-1]] if stop == LENGTH and tokens else []) + _encode_text(
            proc, closing + cont)
    row.pending = pending
    result = StageResult(stage, body.strip(), tokens, logprobs, seconds, stop)
    row.results[stage] = result
    return result


def _visible(text: str, close: str) -> str:
    """The stage text to show while streaming: up to the closing tag, holding back a trailing
    piece that may be its start (so ``" </SUM"`` never flashes up and disappears again) and
    trailing whitespace, so the shown text only ever grows.

    >>> _visible(" a plan </SUMM", "</SUMMARY>"), _visible(" a plan </SUMMARY>", "</SUMMARY>")
    (' a plan', ' a plan')
    """
    text = text.split(close)[0].rstrip()
    for k in range(min(len(close), len(text)), 0, -1):
        if close.startswith(text[-k:].lstrip()) and text[-k:].strip():
            return text[:-k].rstrip()
    return text


def decode_stage(
    state: DecodeState,
    *,
    max_new_tokens: int | Mapping[str, int] | None = None,
    force_tokens: int | None = None,
    sampling: Sampling | None = None,
    generator=None,
    on_token: Callable[[int, str, str], Any] | None = None,
    on_stage_end: Callable[[int, str, StageResult], Any] | None = None,
) -> list[StageResult]:
    """Decode the next stage for every row of ``state``; returns one result per row.

    Each row stops at its own closing tag, at the end-of-answer token, or after
    ``max_new_tokens`` (an int or a per-stage dict). ``force_tokens`` makes every row write
    exactly that many tokens and ignores tags and end tokens — for random-weight models, which
    never write the tags. ``on_token(row, stage, text_so_far)`` and
    ``on_stage_end(row, stage, result)`` report progress.
    """
    import torch

    stage = state.next_stage
    if stage is None:
        raise ValueError("all four stages are decoded already; call finish(state)")
    budget = force_tokens if force_tokens is not None else _stage_budget(stage, max_new_tokens)
    if budget < 1:
        raise ValueError(f"need at least 1 token per stage, got {budget}")
    proc, close = state.processor, stages.close_tag(stage)
    gt, eos = _ids_with_gt(proc), _eos_ids(state.model, proc)
    if sampling is not None and generator is None and sampling.seed is not None:
        generator = torch.Generator(device=_device(state.model)).manual_seed(sampling.seed)
    t0 = time.perf_counter()
    n = state.size
    tokens: list[list[int]] = [[] for _ in range(n)]
    logprobs: list[list[float]] = [[] for _ in range(n)]
    stops: list[str | None] = [None] * n
    results: list[StageResult | None] = [None] * n
    with torch.inference_mode():
        chunks = [row.pending for row in state.rows]
        if state.reuse_cache:
            _feed(state, chunks)
        else:  # naive: re-encode image + prompt + everything so far, as LLaVA-CoT's demo does
            _prefill(state, [row.completion_ids + row.pending for row in state.rows])
        for row in state.rows:
            row.completion_ids += row.pending
            row.pending = []
        while True:
            ids, lps = _choose(state.logits, sampling, generator)
            feed: list[list[int]] = [[] for _ in range(n)]
            for i in range(n):
                if stops[i] is not None:
                    continue
                tok_id = ids[i]
                if force_tokens is None and tok_id in eos:
                    stops[i] = EOS
                else:
                    tokens[i].append(tok_id)
                    logprobs[i].append(lps[i])
                    if len(tokens[i]) >= budget:
                        stops[i] = LENGTH
                    if force_tokens is None and tok_id in gt:
                        window = _decode(proc, tokens[i][-(len(close) + 1):])
                        if close in window:
                            stops[i] = TAG
                if on_token is not None:
                    on_token(i, stage, _visible(_decode(proc, tokens[i]), close))
                if stops[i] is None:
                    feed[i] = [tok_id]
                else:
                    row = state.rows[i]
                    row.completion_ids += tokens[i][:-1] if stops[i] != EOS else tokens[i]
                    results[i] = _close_stage(state, row, stage, tokens[i], logprobs[i],
                                              stops[i], time.perf_counter() - t0)
                    if on_stage_end is not None:
                        on_stage_end(i, stage, results[i])
            if all(s is not None for s in stops):
                break
            _feed(state, feed)
    elapsed = time.perf_counter() - t0
    for r in results:
        r.seconds = elapsed  # rows share the batched calls: report the stage's wall time
    state.stage_index += 1
    return results


def finish(state: DecodeState) -> list[StagedAnswer]:
    """Turn a fully decoded state into one :class:`StagedAnswer` per row."""
    if state.next_stage is not None:
        raise ValueError(f"stage {state.next_stage} is not decoded yet; call decode_stage first")
    answers = []
    total = time.perf_counter() - state.started
    for row in state.rows:
        ids = row.completion_ids + row.pending  # the last stage's closing tag
        answers.append(StagedAnswer(
            row.question, dict(row.results), _decode(state.processor, ids), ids, row.prompt_tokens,
            state.prefill_seconds, total,
        ))
    return answers


# -----------------------------------------------------------------------------
# the everyday functions


def generate_stages_batch(
    model,
    processor,
    images: Sequence[Any],
    questions: Sequence[str],
    *,
    batch_size: int = 8,
    max_new_tokens_per_stage: int | Mapping[str, int] | None = None,
    force_tokens_per_stage: int | None = None,
    sampling: Sampling | None = None,
    reuse_cache: bool = True,
    on_token: Callable[[int, str, str], Any] | None = None,
    on_stage_end: Callable[[int, str, StageResult], Any] | None = None,
) -> list[StagedAnswer]:
    """Answer many questions stage by stage, ``batch_size`` at a time (left-padded; each row
    stops on its own). Callbacks receive the question's index first.

    >>> model, processor = models.load(models.tiny("qwen2_vl"))
    >>> from PIL import Image
    >>> answers = generate_stages_batch(model, processor, [Image.new("RGB", (64, 64))] * 2,
    ...                                 ["How many?", "Which colour is the circle?"],
    ...                                 force_tokens_per_stage=2)
    >>> [a.tokens for a in answers]
    [8, 8]
    """
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    generator = None
    if sampling is not None and sampling.seed is not None:
        generator = torch.Generator(device=_device(model)).manual_seed(sampling.seed)
    answers: list[StagedAnswer] = []
    for lo in range(0, len(questions), batch_size):
        hi = min(lo + batch_size, len(questions))
        state = start(model, processor, images[lo:hi], questions[lo:hi], reuse_cache=reuse_cache)
        shifted_token = (lambda i, s, t, lo=lo: on_token(lo + i, s, t)) if on_token else None
        shifted_end = (lambda i, s, r, lo=lo: on_stage_end(lo + i, s, r)) if on_stage_end else None
        while state.next_stage is not None:
            decode_stage(state, max_new_tokens=max_new_tokens_per_stage,
                         force_tokens=force_tokens_per_stage, sampling=sampling,
                         generator=generator, on_token=shifted_token, on_stage_end=shifted_end)
        answers += finish(state)
    return answers


def generate_stages(
    model,
    processor,
    image: Any,
    question: str,
    *,
    max_new_tokens_per_stage: int | Mapping[str, int] | None = None,
    force_tokens_per_stage: int | None = None,
    sampling: Sampling | None = None,
    reuse_cache: bool = True,
    given: Mapping[str, str] | None = None,
    on_token: Callable[[str, str], Any] | None = None,
    on_stage_end: Callable[[str, StageResult], Any] | None = None,
) -> StagedAnswer:
    """Answer one question stage by stage (greedy unless ``sampling`` is given).

    ``on_token(stage, text_so_far)`` is called after every token and ``on_stage_end(stage,
    result)`` after every stage — see :func:`printer` for ready-made ones. ``reuse_cache=False``
    re-encodes image and prompt for every stage (the naive way, for comparison).

    >>> model, processor = models.load(models.tiny("idefics3"))
    >>> from PIL import Image
    >>> a = generate_stages(model, processor, Image.new("RGB", (64, 64)), "How many?",
    ...                     force_tokens_per_stage=2)
    >>> a.text.count("</"), a.stages["CONCLUSION"].stop
    (4, 'length')
    """
    import torch

    state = start(model, processor, [image], [question], given=given, reuse_cache=reuse_cache)
    generator = None
    if sampling is not None and sampling.seed is not None:
        generator = torch.Generator(device=_device(model)).manual_seed(sampling.seed)
    tok_cb = (lambda i, s, t: on_token(s, t)) if on_token else None
    end_cb = (lambda i, s, r: on_stage_end(s, r)) if on_stage_end else None
    while state.next_stage is not None:
        decode_stage(state, max_new_tokens=max_new_tokens_per_stage,
                     force_tokens=force_tokens_per_stage, sampling=sampling, generator=generator,
                     on_token=tok_cb, on_stage_end=end_cb)
    return finish(state)[0]


def continue_from(
    model, processor, image: Any, question: str, stages_so_far: Mapping[str, str], **kwargs
) -> StagedAnswer:
    """Let the model continue after stages a person wrote or edited (a teaching tool).

    ``stages_so_far`` holds the first stages in order, e.g. ``{"SUMMARY": ..., "CAPTION": ...}``;
    the model writes the rest. Keyword arguments are those of :func:`generate_stages`.

    >>> model, processor = models.load(models.tiny("idefics3"))
    >>> from PIL import Image
    >>> a = continue_from(model, processor, Image.new("RGB", (64, 64)), "How many?",
    ...                   {"SUMMARY": "I will count."}, force_tokens_per_stage=2)
    >>> a.stages["SUMMARY"].text, a.stages["SUMMARY"].stop, a.stages["CAPTION"].tokens
    ('I will count.', 'given', 2)
    """
    if not stages_so_far:
        raise ValueError("stages_so_far is empty: use generate_stages to write every stage")
    return generate_stages(model, processor, image, question, given=stages_so_far, **kwargs)


def generate_ids(
    model,
    processor,
    images: Sequence[Any],
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    sampling: Sampling | None = None,
) -> list[list[int]]:
    """The new token ids for ready-made chat prompts (one image each), decoded as one batch on
    a shared cache; each row stops at its end-of-answer token (not included). Greedy unless
    ``sampling`` is given: row ``i`` gets the same tokens as decoding prompt ``i`` alone.

    >>> model, processor = models.load(models.tiny("idefics3"))
    >>> from PIL import Image
    >>> prompt = models.chat_prompt(processor, "How many?")
    >>> ids = generate_ids(model, processor, [Image.new("RGB", (64, 64))] * 2, [prompt] * 2,
    ...                    max_new_tokens=4)
    >>> len(ids), ids[0] == ids[1]
    (2, True)
    """
    import torch

    state = start(model, processor, images, list(prompts), prompts=prompts)
    eos, n = _eos_ids(model, processor), state.size
    generator = None
    if sampling is not None and sampling.seed is not None:
        generator = torch.Generator(device=_device(model)).manual_seed(sampling.seed)
    out: list[list[int]] = [[] for _ in range(n)]
    done = [False] * n
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            ids, _ = _choose(state.logits, sampling, generator)
            feed: list[list[int]] = [[] for _ in range(n)]
            for i in range(n):
                if done[i]:
                    continue
                if ids[i] in eos:
                    done[i] = True
                else:
                    out[i].append(ids[i])
                    feed[i] = [ids[i]]
            if all(done):
                break
            _feed(state, feed)
    return out


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
    return [_decode(processor, ids) for ids in rows]


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
                          device=_device(model))
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=_pad_id(processor))
    if min_new_tokens:
        kwargs["min_new_tokens"] = min_new_tokens
    owner = _rope_owner(model)
    saved = owner.rope_deltas if owner is not None else None
    try:
        with torch.inference_mode():
            out = model.generate(**batch, **kwargs)
    finally:
        if owner is not None:
            owner.rope_deltas = saved
    new = out[0, batch["input_ids"].shape[1]:].tolist()
    return new, _decode(processor, new)


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

    device = _device(model)
    batch = models.encode(processor, [image], [models.chat_prompt(processor, question)],
                          device=device)
    tok = _tokenizer(processor)
    answer = _encode_text(processor, answer_lead(processor) + answer_text) + [tok.eos_token_id]
    extra = torch.tensor([answer], device=device)
    ids = torch.cat([batch["input_ids"], extra], dim=1)
    kwargs = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
    _extend_token_inputs(model, kwargs, extra)
    labels = ids.clone()
    labels[:, : batch["input_ids"].shape[1]] = -100
    owner = _rope_owner(model)
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


# -----------------------------------------------------------------------------
# streaming helpers


def printer(file=None, show_stats: bool = True) -> dict[str, Callable]:
    """Callbacks that print each stage as it is written. Use as
    ``generate_stages(model, processor, image, question, **printer())``.

    >>> cb = printer()
    >>> cb["on_token"]("SUMMARY", " I will"); cb["on_token"]("SUMMARY", " I will count")
    <SUMMARY> I will count
    """
    import sys

    shown = {"stage": None, "text": ""}

    def on_token(stage: str, text: str) -> None:
        out = file or sys.stdout
        if stage != shown["stage"]:
            if shown["stage"] is not None:
                print(file=out)
            print(stages.open_tag(stage), end="", file=out)
            shown.update(stage=stage, text="")
        if text.startswith(shown["text"]):
            print(text[len(shown["text"]):], end="", file=out, flush=True)
        else:  # the text changed (e.g. a multi-byte character completed): reprint it
            print("\r" + stages.open_tag(stage) + text, end="", file=out, flush=True)
        shown["text"] = text

    def on_stage_end(stage: str, result: StageResult) -> None:
        out = file or sys.stdout
        if shown["stage"] != stage:  # nothing streamed (e.g. no on_token): print it whole
            print(stages.open_tag(stage) + " " + result.text, end="", file=out)
        stats = f"   [{result.tokens} tokens, {result.seconds:.2f} s, stop: {result.stop}]"
        print(" " + stages.close_tag(stage) + (stats if show_stats else ""), file=out)
        shown.update(stage=None, text="")

    return {"on_token": on_token, "on_stage_end": on_stage_end}

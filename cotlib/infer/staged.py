"""The staged decoder: :func:`start` encodes a batch and runs the prefill, :func:`decode_stage`
writes the next stage for every row (each row stops at its own closing tag), :func:`finish` turns
the state into answers; :func:`generate_stages`, :func:`generate_stages_batch` and
:func:`continue_from` are the everyday functions on top."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cotlib import models, stages
from cotlib.infer.answers import (
    DEFAULT_MAX_TOKENS,
    EOS,
    GIVEN,
    LENGTH,
    SEP,
    TAG,
    StagedAnswer,
    StageResult,
    answer_lead,
    stage_block,
)
from cotlib.infer.plumbing import decode_ids, device_of, encode_text, eos_ids, ids_with_gt
from cotlib.infer.sampling import Sampling, choose_next, seeded_generator
from cotlib.infer.state import DecodeState, Row, feed_chunks, prefill


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
    batch = models.encode(processor, pil, texts, device=device_of(model))
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
    first = encode_text(processor, head) if prompts is None else []
    rows = [Row(q, int(n), list(first))
            for q, n in zip(questions, batch["attention_mask"].sum(dim=-1).tolist())]
    for row in rows:
        for s in stages.STAGES[:stage_index]:
            row.results[s] = StageResult(s, given[s].strip(), stop=GIVEN)
    state = DecodeState(model, processor, rows, stage_index, batch, reuse_cache)
    if reuse_cache:
        with torch.inference_mode():
            prefill(state, [[] for _ in rows])
    return state


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
        feed_chunks(state, [list(c) for c in chunks])


def _stage_budget(stage: str, max_new_tokens: int | Mapping[str, int] | None) -> int:
    if max_new_tokens is None:
        return DEFAULT_MAX_TOKENS[stage]
    if isinstance(max_new_tokens, Mapping):
        return int(max_new_tokens.get(stage, DEFAULT_MAX_TOKENS[stage]))
    return int(max_new_tokens)


def _close_stage(state: DecodeState, row: Row, stage: str, tokens: list[int],
                 logprobs: list[float], stop: str, seconds: float) -> StageResult:
    """Record a finished stage and set the row's pending tokens (stop token, closing tag,
    separator, next opening tag), re-tokenized as the rendered trace would be."""
    proc = state.processor
    close, nxt = stages.close_tag(stage), stages.next_stage(stage)
    cont = SEP + stages.open_tag(nxt) if nxt else ""
    text = decode_ids(proc, tokens)
    if stop == TAG:
        end = text.find(close) + len(close)
        body = text[: end - len(close)]
        kept_text = decode_ids(proc, tokens[:-1])
        if text.startswith(kept_text) and len(kept_text) <= end:
            # the last token (not fed yet) is replaced by the canonical tokens of its text up to
            # the end of the tag plus the continuation; anything it held after the tag is dropped
            pending = encode_text(proc, text[len(kept_text): end] + cont)
        else:  # pragma: no cover - odd byte-level splits: keep the token as is
            pending = [tokens[-1]] + encode_text(proc, cont)
    else:
        body = text
        closing = close if text.endswith((" ", "\n")) or not text else " " + close
        pending = ([tokens[-1]] if stop == LENGTH and tokens else []) + encode_text(
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
    gt, eos = ids_with_gt(proc), eos_ids(state.model, proc)
    if generator is None:
        generator = seeded_generator(state.model, sampling)
    t0 = time.perf_counter()
    n = state.size
    tokens: list[list[int]] = [[] for _ in range(n)]
    logprobs: list[list[float]] = [[] for _ in range(n)]
    stops: list[str | None] = [None] * n
    results: list[StageResult | None] = [None] * n
    with torch.inference_mode():
        chunks = [row.pending for row in state.rows]
        if state.reuse_cache:
            feed_chunks(state, chunks)
        else:  # naive: re-encode image + prompt + everything so far, as LLaVA-CoT's demo does
            prefill(state, [row.completion_ids + row.pending for row in state.rows])
        for row in state.rows:
            row.completion_ids += row.pending
            row.pending = []
        while True:
            ids, lps = choose_next(state.logits, sampling, generator)
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
                        window = decode_ids(proc, tokens[i][-(len(close) + 1):])
                        if close in window:
                            stops[i] = TAG
                if on_token is not None:
                    on_token(i, stage, _visible(decode_ids(proc, tokens[i]), close))
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
            feed_chunks(state, feed)
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
            row.question, dict(row.results), decode_ids(state.processor, ids), ids,
            row.prompt_tokens, state.prefill_seconds, total,
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

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    generator = seeded_generator(model, sampling)
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

    state = start(model, processor, [image], [question], given=given, reuse_cache=reuse_cache)
    generator = seeded_generator(model, sampling)
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

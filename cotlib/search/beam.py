"""The searches that keep one winner per step: LLaVA-CoT's stage-level beam search
(:func:`beam_search_stages`), :func:`best_of_n` whole answers, and :func:`greedy` staged decoding
shaped as a one-candidate tree for comparison."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from cotlib import infer
from cotlib.search.judges import judge_scorer
from cotlib.search.scorers import Scorer, knockout
from cotlib.search.tree import (
    ANSWER,
    LLAVA_COT_SAMPLING,
    Candidate,
    JudgeContext,
    SearchTree,
    StageSearch,
)


def answer_so_far(state: infer.DecodeState) -> str:
    row = state.rows[0]
    return infer.SEP.join(infer.stage_block(s, r.text) for s, r in row.results.items())


def beam_search_stages(
    model,
    processor,
    image: Any,
    question: str,
    *,
    n: int = 4,
    scorer: Scorer | None = None,
    sampling: infer.Sampling = LLAVA_COT_SAMPLING,
    max_new_tokens_per_stage: int | Mapping[str, int] | None = None,
    force_tokens_per_stage: int | None = None,
    on_stage_end: Callable[[StageSearch], Any] | None = None,
) -> SearchTree:
    """LLaVA-CoT's stage-level beam search: per stage, ``n`` sampled candidates (one batched
    call on a copy of the shared prefix cache), a pairwise knockout by ``scorer`` (default: the
    model's own judge), and the winner continues.

    ``on_stage_end(step)`` is called with each :class:`StageSearch` as soon as it is decided.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    scorer = scorer or judge_scorer(model, processor)
    generator = infer.seeded_generator(model, sampling)
    t0 = time.perf_counter()
    state = infer.start(model, processor, [image], [question])
    steps: list[StageSearch] = []
    while state.next_stage is not None:
        stage = state.next_stage
        ctx = JudgeContext(stage, question, answer_so_far(state), image)
        t1 = time.perf_counter()
        batch = state.repeat(n)
        results = infer.decode_stage(batch, max_new_tokens=max_new_tokens_per_stage,
                                     force_tokens=force_tokens_per_stage, sampling=sampling,
                                     generator=generator)
        t2 = time.perf_counter()
        candidates = [Candidate.from_result(i, r) for i, r in enumerate(results)]
        winner, comparisons = knockout(ctx, candidates, scorer)
        step = StageSearch(stage, candidates, comparisons, winner, t2 - t1,
                           time.perf_counter() - t2)
        steps.append(step)
        if on_stage_end is not None:
            on_stage_end(step)
        state = batch.select([winner])
    answer = infer.finish(state)[0]
    return SearchTree("beam", scorer.name, question, steps, answer, time.perf_counter() - t0)


def best_of_n(
    model,
    processor,
    image: Any,
    question: str,
    *,
    n: int = 4,
    scorer: Scorer | None = None,
    sampling: infer.Sampling = LLAVA_COT_SAMPLING,
    max_new_tokens_per_stage: int | Mapping[str, int] | None = None,
    force_tokens_per_stage: int | None = None,
) -> SearchTree:
    """Sample ``n`` whole answers (one batched decode) and keep the knockout's winner."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    scorer = scorer or judge_scorer(model, processor)
    generator = infer.seeded_generator(model, sampling)
    t0 = time.perf_counter()
    state = infer.start(model, processor, [image], [question]).repeat(n)
    while state.next_stage is not None:
        infer.decode_stage(state, max_new_tokens=max_new_tokens_per_stage,
                           force_tokens=force_tokens_per_stage, sampling=sampling,
                           generator=generator)
    answers = infer.finish(state)
    t1 = time.perf_counter()
    candidates = [Candidate.from_answer(i, a) for i, a in enumerate(answers)]
    winner, comparisons = knockout(JudgeContext(ANSWER, question, "", image), candidates, scorer)
    step = StageSearch(ANSWER, candidates, comparisons, winner, t1 - t0,
                       time.perf_counter() - t1)
    return SearchTree("best_of_n", scorer.name, question, [step], answers[winner],
                      time.perf_counter() - t0)


def greedy(
    model,
    processor,
    image: Any,
    question: str,
    *,
    max_new_tokens_per_stage: int | Mapping[str, int] | None = None,
    force_tokens_per_stage: int | None = None,
) -> SearchTree:
    """Plain greedy staged decoding, shaped as a (one-candidate) tree for comparison."""
    t0 = time.perf_counter()
    answer = infer.generate_stages(model, processor, image, question,
                                   max_new_tokens_per_stage=max_new_tokens_per_stage,
                                   force_tokens_per_stage=force_tokens_per_stage)
    steps = [StageSearch(s, [Candidate.from_result(0, r)], [], 0, r.seconds)
             for s, r in answer.stages.items()]
    return SearchTree("greedy", "none", question, steps, answer, time.perf_counter() - t0)

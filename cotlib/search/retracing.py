"""SWIRES, the stage-wise retracing search of LLaVA-CoT's later version (:func:`swires`): keep
the best few captions, grow reasonings from them, and go back to sample more captions while the
reasonings score too low."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cotlib import infer
from cotlib.search.beam import answer_so_far
from cotlib.search.scorers import Scorer, ScoreScorer, function_scorer, loglik_scorer
from cotlib.search.tree import (
    LLAVA_COT_SAMPLING,
    Candidate,
    JudgeContext,
    SearchTree,
    StageSearch,
    format_score,
)


def rank_candidates(cands: Sequence[Candidate]) -> list[int]:
    """Candidate indices best first: closed before not closed, then by score (NaN last);
    ties keep the earlier candidate first."""
    def key(c: Candidate):
        score = c.score if c.score is not None and not math.isnan(c.score) else float("-inf")
        return (not c.closed, -score)
    return [c.index for c in sorted(cands, key=key)]


def _as_score_scorer(scorer: Scorer | Callable[..., float] | None) -> ScoreScorer:
    if scorer is None:
        return loglik_scorer()
    if isinstance(scorer, ScoreScorer):
        return scorer
    if isinstance(scorer, Scorer):
        raise ValueError(f"SWIRES needs a score per candidate, and {scorer!r} only compares "
                         "pairs: use loglik_scorer(), function_scorer(fn) or "
                         "openai_reward_scorer(client, model)")
    if callable(scorer):
        return function_scorer(scorer)
    raise TypeError(f"scorer must be a ScoreScorer or a function, got {type(scorer).__name__}")


def swires(
    model,
    processor,
    image: Any,
    question: str,
    *,
    m: int = 4,
    n: int = 2,
    k: int = 2,
    top: int = 3,
    retraces: int = 3,
    cutoff: float = -1.0,
    scorer: ScoreScorer | Callable[..., float] | None = None,
    sampling: infer.Sampling = LLAVA_COT_SAMPLING,
    max_new_tokens_per_stage: int | Mapping[str, int] | None = None,
    force_tokens_per_stage: int | None = None,
    on_stage_end: Callable[[StageSearch], Any] | None = None,
) -> SearchTree:
    """SWIRES, the stage-wise retracing search of LLaVA-CoT's later version (arXiv 2411.10440
    v6): one SUMMARY; sample ``m`` CAPTIONs and keep the best ``n``; sample ``k`` REASONINGs
    from each kept caption; if the second-best reasoning scores at or below ``cutoff``, retrace:
    sample ``m`` more captions, keep the best ``n`` of *all* captions so far, give the newly kept
    ones ``k`` reasonings each, and look again (at most ``retraces`` times). Finally one
    CONCLUSION for each of the ``top`` best reasonings; the best-scored conclusion's answer is
    returned.

    ``scorer`` scores one candidate at a time (higher is better): the model's own mean
    log-probability per token by default (so ``cutoff=-1.0`` is in nats per token), any
    ``fn(candidate[, context]) -> float``, or :func:`openai_reward_scorer` online (scores 0–10;
    set ``cutoff`` on that scale). A candidate that never closed its stage ranks below every
    one that did. The paper's values: ``m=4, n=2, k=2, top=3``, ``retraces=3``.

    Each sampled candidate appears in exactly one step of the returned tree (so summing
    ``candidate.tokens`` over the steps counts the search's real cost); ``step.kept`` lists the
    pool's best candidates after that step, ``candidate.parent`` where each one grew from.
    Same call shape as :func:`beam_search_stages`.
    """
    for name, value in (("m", m), ("n", n), ("k", k), ("top", top)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if retraces < 0:
        raise ValueError(f"retraces must be >= 0, got {retraces}")
    rater = _as_score_scorer(scorer)
    generator = infer.seeded_generator(model, sampling)
    kw = dict(max_new_tokens=max_new_tokens_per_stage, force_tokens=force_tokens_per_stage,
              sampling=sampling, generator=generator)
    t0 = time.perf_counter()
    steps: list[StageSearch] = []

    def sample(state: infer.DecodeState, first: int, parent: int | None, ctx: JudgeContext):
        t1 = time.perf_counter()
        results = infer.decode_stage(state, **kw)
        t2 = time.perf_counter()
        cands = []
        for j, r in enumerate(results):
            c = Candidate.from_result(first + j, r)
            c.parent, c.score = parent, float(rater.score(c, ctx))
            cands.append(c)
        return cands, t2 - t1, time.perf_counter() - t2

    def record(step: StageSearch) -> None:
        steps.append(step)
        if on_stage_end is not None:
            on_stage_end(step)

    root = infer.start(model, processor, [image], [question])
    (summary,), ts, tj = sample(root, 0, None, JudgeContext("SUMMARY", question, "", image))
    record(StageSearch("SUMMARY", [summary], [], 0, ts, tj, kept=[0]))
    cap_ctx = JudgeContext("CAPTION", question, answer_so_far(root), image)
    captions: list[Candidate] = []
    reasonings: list[Candidate] = []
    where: dict[tuple[str, int], tuple[infer.DecodeState, int]] = {}  # (stage, index) -> row
    for attempt in range(retraces + 1):
        note = f"retrace {attempt}" if attempt else ""
        batch = root.repeat(m)
        new, ts, tj = sample(batch, len(captions), 0, cap_ctx)
        for j, c in enumerate(new):
            where["CAPTION", c.index] = (batch, j)
        captions += new
        kept = rank_candidates(captions)[:n]
        record(StageSearch("CAPTION", new, [], kept[0], ts, tj, kept=kept, note=note))
        grown = {c.parent for c in reasonings}
        new_r: list[Candidate] = []
        ts = tj = 0.0
        for ci in kept:
            if ci in grown:
                continue
            state, row = where["CAPTION", ci]
            branch = state.select([row]).repeat(k)
            ctx = JudgeContext("REASONING", question, answer_so_far(branch), image)
            cands, s1, j1 = sample(branch, len(reasonings) + len(new_r), ci, ctx)
            for j, c in enumerate(cands):
                where["REASONING", c.index] = (branch, j)
            new_r += cands
            ts, tj = ts + s1, tj + j1
        reasonings += new_r
        ranked = rank_candidates(reasonings)
        second = next(c for c in reasonings if c.index == ranked[min(1, len(ranked) - 1)])
        retrace = second.score is None or not second.score > cutoff
        if retrace:
            why = (f"second best [{second.index}] scores {format_score(second.score)} <= cutoff "
                   f"{format_score(cutoff)}")
            note = (f"{note}; " if note else "") + (
                f"{why}: retrace to CAPTION" if attempt < retraces
                else f"{why}, but all {retraces} retraces are used: stop")
        record(StageSearch("REASONING", new_r, [], ranked[0], ts, tj, kept=ranked[:top],
                           note=note))
        if not retrace:
            break
    conclusions: list[Candidate] = []
    finals: list[infer.DecodeState] = []
    ts = tj = 0.0
    for ri in ranked[:top]:
        state, row = where["REASONING", ri]
        branch = state.select([row])
        ctx = JudgeContext("CONCLUSION", question, answer_so_far(branch), image)
        (c,), s1, j1 = sample(branch, len(conclusions), ri, ctx)
        conclusions.append(c)
        finals.append(branch)
        ts, tj = ts + s1, tj + j1
    order = rank_candidates(conclusions)
    record(StageSearch("CONCLUSION", conclusions, [], order[0], ts, tj, kept=order))
    answer = infer.finish(finals[order[0]])[0]
    return SearchTree("swires", rater.name, question, steps, answer, time.perf_counter() - t0)

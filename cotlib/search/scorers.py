"""Scorers referee knockout matches: the base :class:`Scorer`, scores per candidate
(:class:`ScoreScorer`: :func:`loglik_scorer`, :func:`function_scorer`) and the pairwise
:func:`knockout` every search runs them in. The judges (the model itself, an OpenAI-compatible
judge or rater) are in :mod:`cotlib.search.judges`."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence

from cotlib.search.tree import Candidate, Comparison, Decision, JudgeContext, format_score


class Scorer:
    """Referees knockout matches. Subclasses implement :meth:`compare` for a list of pairs
    (a list, so a model judge can batch one round in one call)."""

    name = "scorer"

    def compare(self, ctx: JudgeContext,
                pairs: Sequence[tuple[Candidate, Candidate]]) -> list[Decision]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class ScoreScorer(Scorer):
    """A scorer from a per-candidate score: the higher score wins (ties: the first)."""

    def __init__(self, name: str, score: Callable[[Candidate, JudgeContext], float]):
        self.name, self.score = name, score

    def compare(self, ctx, pairs):
        out = []
        for a, b in pairs:
            sa, sb = float(self.score(a, ctx)), float(self.score(b, ctx))
            choice = 1 if _gt(sb, sa) else 0
            out.append(Decision(choice, f"score {format_score(sa)} vs {format_score(sb)}",
                                by=self.name))
        return out


def _gt(x: float, y: float) -> bool:
    """x > y, with NaN treated as the worst score."""
    x = float("-inf") if math.isnan(x) else x
    y = float("-inf") if math.isnan(y) else y
    return x > y


def length_normalised_loglik(logprobs: Sequence[float], alpha: float = 1.0) -> float:
    """Sum of log-probabilities divided by ``len ** alpha``; ``-inf`` for no tokens.

    ``alpha=0`` is the raw sum (which favours short candidates: every token costs), ``alpha=1``
    the mean log-probability per token.

    >>> length_normalised_loglik([-1.0, -3.0]), length_normalised_loglik([-1.0, -3.0], 0.0)
    (-2.0, -4.0)
    """
    if not logprobs:
        return float("-inf")
    return float(sum(logprobs)) / len(logprobs) ** alpha


def loglik_scorer(alpha: float = 1.0) -> ScoreScorer:
    """Prefer the candidate the model finds more likely, per token (``alpha=1``) or in total
    (``alpha=0``), see :func:`length_normalised_loglik`.

    >>> a, b = Candidate(0, "SUMMARY", "x", [-1.0]), Candidate(1, "SUMMARY", "y", [-0.5, -0.7])
    >>> loglik_scorer().compare(JudgeContext("SUMMARY", "q", ""), [(a, b)])[0].choice
    1
    """
    return ScoreScorer(f"loglik(alpha={alpha:g})",
                       lambda c, ctx: length_normalised_loglik(c.token_logprobs, alpha))


def function_scorer(fn: Callable[..., float], name: str | None = None) -> ScoreScorer:
    """A scorer from your own function ``fn(candidate) -> float`` (or ``fn(candidate,
    context)``); the higher score wins.

    >>> longer = function_scorer(lambda c: len(c.text))
    >>> a, b = Candidate(0, "CAPTION", "a red circle"), Candidate(1, "CAPTION", "red")
    >>> longer.compare(JudgeContext("CAPTION", "q", ""), [(a, b)])[0].choice
    0
    """
    try:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
        two = len(params) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)
    except (TypeError, ValueError):  # builtins without a signature
        two = False
    score = (lambda c, ctx: fn(c, ctx)) if two else (lambda c, ctx: fn(c))
    return ScoreScorer(name or getattr(fn, "__name__", "function"), score)


# -----------------------------------------------------------------------------
# the knockout


def knockout(ctx: JudgeContext, candidates: Sequence[Candidate],
             scorer: Scorer) -> tuple[int, list[Comparison]]:
    """Pairwise knockout: pair up (0 vs 1, 2 vs 3, …), winners go on; an odd one out gets a
    bye. A candidate that closed its stage beats one that did not, without the scorer.
    Returns the winner's index and every comparison.

    >>> cands = [Candidate(i, "SUMMARY", t, [-float(i)]) for i, t in enumerate("abc")]
    >>> winner, matches = knockout(JudgeContext("SUMMARY", "q", ""), cands, loglik_scorer())
    >>> winner, [(m.round, m.a, m.b, m.winner) for m in matches]
    (0, [(1, 0, 1, 0), (2, 0, 2, 0)])
    """
    if not candidates:
        raise ValueError("knockout needs at least one candidate")
    alive = [c.index for c in candidates]
    by_index = {c.index: c for c in candidates}
    comparisons: list[Comparison] = []
    rnd = 0
    while len(alive) > 1:
        rnd += 1
        pairs = [(alive[i], alive[i + 1]) for i in range(0, len(alive) - 1, 2)]
        decided: dict[int, Decision] = {}
        ask = []
        for k, (a, b) in enumerate(pairs):
            ca, cb = by_index[a], by_index[b]
            if ca.closed != cb.closed:
                loser = b if ca.closed else a
                decided[k] = Decision(0 if ca.closed else 1,
                                      f"[{loser}] is malformed ({by_index[loser].stop}, "
                                      "no closing tag or empty)", by="rule")
            else:
                ask.append(k)
        if ask:
            for k, d in zip(ask, scorer.compare(ctx, [(by_index[pairs[k][0]],
                                                       by_index[pairs[k][1]]) for k in ask])):
                decided[k] = d
        winners = []
        for k, (a, b) in enumerate(pairs):
            d = decided[k]
            w = b if d.choice == 1 else a
            winners.append(w)
            comparisons.append(Comparison(rnd, a, b, w, d.reason, d.raw, d.by, d.fallback))
        if len(alive) % 2:
            winners.append(alive[-1])
        alive = winners
    return alive[0], comparisons

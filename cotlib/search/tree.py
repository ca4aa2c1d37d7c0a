"""Candidates, the scorers' verdicts and the search tree: the records every search returns.

A :class:`Candidate` is one sampled continuation of a stage (or a whole answer for best-of-N); a
:class:`Decision` is a scorer's verdict on a pair and a :class:`Comparison` one knockout match; a
:class:`StageSearch` is the search at one stage and a :class:`SearchTree` a whole search.

>>> c = Candidate(0, "SUMMARY", "plan", [-1.0, -2.0])
>>> c.tokens, c.logprob, c.mean_logprob
(2, -3.0, -1.5)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from cotlib import infer

ANSWER = "ANSWER"  # the "stage" name best-of-N uses for whole answers

#: LLaVA-CoT's sampling for candidates (temperature 0.6, top-p 0.9), seeded for repeatability.
LLAVA_COT_SAMPLING = infer.Sampling(temperature=0.6, top_p=0.9, seed=0)

# -----------------------------------------------------------------------------
# candidates, comparisons, the tree


@dataclass
class Candidate:
    """One sampled continuation of a stage (or a whole answer for best-of-N)."""

    index: int
    stage: str
    text: str
    token_logprobs: list[float] = field(default_factory=list)
    stop: str = infer.TAG
    closed: bool = True  # ended with its own closing tag (whole answers: every stage did)
    parent: int | None = None  # SWIRES: the index of the candidate it grew from (previous stage)
    score: float | None = None  # SWIRES: the scorer's score

    @property
    def tokens(self) -> int:
        return len(self.token_logprobs)

    @property
    def logprob(self) -> float:
        return float(sum(self.token_logprobs))

    @property
    def mean_logprob(self) -> float:
        return self.logprob / self.tokens if self.tokens else float("-inf")

    @classmethod
    def from_result(cls, index: int, result: infer.StageResult) -> Candidate:
        closed = result.stop in (infer.TAG, infer.GIVEN) and bool(result.text)
        return cls(index, result.stage, result.text, list(result.token_logprobs), result.stop,
                   closed)

    @classmethod
    def from_answer(cls, index: int, answer: infer.StagedAnswer) -> Candidate:
        logprobs = [lp for r in answer.stages.values() for lp in r.token_logprobs]
        return cls(index, ANSWER, answer.text, logprobs, "answer", answer.ok)


@dataclass
class JudgeContext:
    """What a scorer may look at besides the two candidates."""

    stage: str
    question: str
    so_far: str  # the answer's text before this stage ("" for the first stage)
    image: Any = field(default=None, repr=False)


@dataclass
class Decision:
    """A scorer's verdict on one pair: ``choice`` 0 = the first, 1 = the second."""

    choice: int
    reason: str
    raw: str = ""  # the judge's own words, if any
    by: str = ""  # which scorer decided (e.g. "judge", "loglik (fallback: malformed answer)")
    fallback: bool = False


@dataclass
class Comparison:
    """One knockout match between candidates ``a`` and ``b`` (indices), and its outcome."""

    round: int
    a: int
    b: int
    winner: int
    reason: str
    raw: str = ""
    by: str = ""
    fallback: bool = False


@dataclass
class StageSearch:
    """The search at one stage: candidates, the knockout, the winner, timings."""

    stage: str
    candidates: list[Candidate]
    comparisons: list[Comparison]
    winner: int
    sample_seconds: float = 0.0
    judge_seconds: float = 0.0
    kept: list[int] = field(default_factory=list)  # SWIRES: indices that go on (best first)
    note: str = ""  # SWIRES: e.g. "retrace 1"

    @property
    def best(self) -> Candidate:
        return next(c for c in self.candidates if c.index == self.winner)


@dataclass
class SearchTree:
    """A whole search: one :class:`StageSearch` per stage (one ``ANSWER`` step for best-of-N)
    and the final :class:`cotlib.infer.StagedAnswer`."""

    method: str  # "beam", "best_of_n", "greedy" or "swires"
    scorer: str
    question: str
    steps: list[StageSearch]
    answer: infer.StagedAnswer
    seconds: float = 0.0

    @property
    def fallbacks(self) -> int:
        return sum(c.fallback for s in self.steps for c in s.comparisons)

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self, width: int = 70) -> str:
        """The tree as text: each stage's candidates (winner marked) and the knockout."""
        lines = [f"{self.method} search, scorer: {self.scorer}, {self.seconds:.2f} s — "
                 f"{self.question!r}"]
        for step in self.steps:
            note = f" {step.note}" if step.note else ""
            lines.append(f"{step.stage}{note}  ({len(step.candidates)} candidates, sampled in "
                         f"{step.sample_seconds:.2f} s, judged in {step.judge_seconds:.2f} s)")
            if step.kept and len(step.kept) < sum(len(s.candidates) for s in self.steps
                                                  if s.stage == step.stage):
                lines.append(f"    kept so far (best first): {step.kept}")
            for c in step.candidates:
                mark = "★" if c.index == step.winner else ("+" if c.index in step.kept else " ")
                flag = "" if c.closed else f"  [not closed: {c.stop}]"
                origin = f"from [{c.parent}] " if c.parent is not None else ""
                score = f"score {format_score(c.score)}, " if c.score is not None else ""
                lines.append(f"  {mark} [{c.index}] {origin}{shorten(c.text, width)}  "
                             f"({score}mean logprob {c.mean_logprob:.2f}){flag}")
            for m in step.comparisons:
                lines.append(f"      round {m.round}: [{m.a}] vs [{m.b}] -> [{m.winner}] by "
                             f"{m.by}: {shorten(m.reason, width)}")
        lines.append(f"final answer: {self.answer.final_answer!r}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def shorten(text: str, width: int) -> str:
    """One line, printable characters only (random-weight models write control bytes)."""
    text = " ".join(str(text).split())
    text = "".join(ch if ch.isprintable() else "\ufffd" for ch in text)
    return text if len(text) <= width else text[: width - 1] + "…"


def format_score(x: float) -> str:
    """A score with three decimals, or as is when it is not finite (nan, inf)."""
    return f"{x:.3f}" if math.isfinite(x) else str(x)

"""Stage-level beam search (LLaVA-CoT), best-of-N and greedy, with pluggable scorers.

LLaVA-CoT's inference-time scaling: for each stage, sample N candidates (T=0.6, top-p 0.9),
each stopped at the stage's closing tag, then run a pairwise knockout judged by the model itself
with a stage-specific prompt whose answer reads "Since [reason], I choose response [1/2]." The
winner is appended and the next stage is searched the same way.

Here the N candidates are decoded in one batched call from a copy of the shared prefix cache
(:meth:`cotlib.infer.DecodeState.repeat`), and any *scorer* can referee the knockout:

- :func:`judge_scorer` — the model itself, with :data:`JUDGE_PROMPTS`;
- :func:`loglik_scorer` — the candidates' (length-normalised) log-likelihood;
- :func:`openai_judge_scorer` — an external judge through the ``openai`` client;
- :func:`function_scorer` — any function of a candidate.

A judge answer that cannot be parsed does not crash the search (LLaVA-CoT's script raises an
IndexError there): that comparison falls back to the log-likelihood scorer and the fallback is
recorded. A candidate that never closed its stage loses to one that did, without asking the
judge. Everything — candidates, comparisons, raw judge answers, winners — is returned in a
:class:`SearchTree` for display.

>>> from cotlib import models
>>> from PIL import Image
>>> model, processor = models.load(models.tiny("idefics3"))
>>> tree = beam_search_stages(model, processor, Image.new("RGB", (64, 64)), "How many?", n=2,
...                           scorer=loglik_scorer(), force_tokens_per_stage=2)
>>> [len(step.candidates) for step in tree.steps]
[2, 2, 2, 2]
"""

from __future__ import annotations

import inspect
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from cotlib import infer, models, stages

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
                score = f"score {_fmt(c.score)}, " if c.score is not None else ""
                lines.append(f"  {mark} [{c.index}] {origin}{_short(c.text, width)}  "
                             f"({score}mean logprob {c.mean_logprob:.2f}){flag}")
            for m in step.comparisons:
                lines.append(f"      round {m.round}: [{m.a}] vs [{m.b}] -> [{m.winner}] by "
                             f"{m.by}: {_short(m.reason, width)}")
        lines.append(f"final answer: {self.answer.final_answer!r}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def _short(text: str, width: int) -> str:
    """One line, printable characters only (random-weight models write control bytes)."""
    text = " ".join(str(text).split())
    text = "".join(ch if ch.isprintable() else "\ufffd" for ch in text)
    return text if len(text) <= width else text[: width - 1] + "…"


# -----------------------------------------------------------------------------
# judge prompts and parsing

_JUDGE_FRAME = (
    "You are judging two candidate {what} for a question about this image.\n"
    "Question: {question}\n"
    "Answer so far: {so_far}\n"
    "{criterion}\n"
    "Response 1: {a}\n"
    "Response 2: {b}\n"
    'Reply in exactly this format: "Since [reason], I choose response [1/2]."'
)

#: Stage-specific judge prompts (LLaVA-CoT uses one per stage). Placeholders: ``{question}``,
#: ``{so_far}``, ``{a}``, ``{b}``.
JUDGE_PROMPTS: dict[str, str] = {
    stage: _JUDGE_FRAME.replace("{what}", what).replace("{criterion}", criterion)
    for stage, what, criterion in [
        ("SUMMARY", "summaries (plans)",
         "Which response better outlines the steps needed to answer the question, with fewer "
         "errors?"),
        ("CAPTION", "captions",
         "Which response better describes the parts of the image that matter for the question, "
         "accurately and without invented details?"),
        ("REASONING", "reasoning steps",
         "Which response reasons better: clear, step-by-step logic from the image facts to the "
         "answer, with fewer errors?"),
        ("CONCLUSION", "conclusions",
         "Which response gives the more accurate final answer, consistent with the reasoning "
         "so far?"),
        (ANSWER, "answers",
         "Which response answers the question better overall: accurate description, sound "
         "reasoning and a correct final answer?"),
    ]
}

_CHOICE_RE = re.compile(r"choose\s+(?:the\s+)?(?:response|answer|option)?\s*[\[(#]?\s*([12])\b",
                        re.IGNORECASE)
_RESPONSE_RE = re.compile(r"\bresponse\s*[\[(#]?\s*([12])\b", re.IGNORECASE)
_REASON_RE = re.compile(r"since\s+(.*?)\s*,?\s*I\s+choose", re.IGNORECASE | re.DOTALL)


def parse_judgement(text: str) -> tuple[int | None, str]:
    """Read a judge's answer: ``(0 or 1, reason)``, or ``(None, text)`` if it is malformed.

    Accepts "I choose response 2", "choose Response [1]", "... response (2)"; when the format is
    missing but exactly one of "response 1" / "response 2" is named, that one is taken.

    >>> parse_judgement("Since it names the colour, I choose response [2].")
    (1, 'it names the colour')
    >>> parse_judgement("Response 1 is better.")
    (0, 'Response 1 is better.')
    >>> parse_judgement("both are fine")
    (None, 'both are fine')
    """
    text = str(text or "")
    matches = _CHOICE_RE.findall(text)
    if matches:
        choice = int(matches[-1]) - 1
    else:
        named = set(_RESPONSE_RE.findall(text))
        if len(named) != 1:
            return None, text.strip()
        choice = int(named.pop()) - 1
    reason = _REASON_RE.search(text)
    return choice, (reason.group(1).strip() if reason else text.strip())


def judge_prompt(ctx: JudgeContext, a: Candidate, b: Candidate,
                 prompts: Mapping[str, str] | None = None) -> str:
    """The judge prompt for one pair (from :data:`JUDGE_PROMPTS` unless ``prompts`` is given)."""
    template = (prompts or JUDGE_PROMPTS).get(ctx.stage) or JUDGE_PROMPTS[ANSWER]
    return template.format(question=ctx.question, so_far=ctx.so_far.strip() or "(nothing yet)",
                           a=a.text.strip() or "(empty)", b=b.text.strip() or "(empty)")


# -----------------------------------------------------------------------------
# scorers


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
            out.append(Decision(choice, f"score {_fmt(sa)} vs {_fmt(sb)}", by=self.name))
        return out


def _gt(x: float, y: float) -> bool:
    """x > y, with NaN treated as the worst score."""
    x = float("-inf") if math.isnan(x) else x
    y = float("-inf") if math.isnan(y) else y
    return x > y


def _fmt(x: float) -> str:
    return f"{x:.3f}" if math.isfinite(x) else str(x)


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


class _JudgeBase(Scorer):
    """Shared by the model judge and the OpenAI judge: parse, fall back when malformed."""

    def __init__(self, prompts: Mapping[str, str] | None, fallback: Scorer | None):
        self.prompts = dict(prompts or JUDGE_PROMPTS)
        self.fallback = fallback or loglik_scorer()

    def _decide(self, ctx, pairs, raws: Sequence[str], errors: Sequence[str | None]):
        out: list[Decision | None] = []
        redo: list[int] = []
        for i, raw in enumerate(raws):
            choice, reason = parse_judgement(raw) if errors[i] is None else (None, "")
            if choice is None:
                out.append(None)
                redo.append(i)
            else:
                out.append(Decision(choice, reason, raw, by=self.name))
        if redo:
            fb = self.fallback.compare(ctx, [pairs[i] for i in redo])
            for i, d in zip(redo, fb):
                why = errors[i] or "malformed judge answer"
                out[i] = Decision(d.choice, f"{d.reason} ({why})", raws[i] or errors[i] or "",
                                  by=f"{d.by} (fallback)", fallback=True)
        return out


class ModelJudge(_JudgeBase):
    """The model judges its own candidates (LLaVA-CoT), one batched call per knockout round."""

    name = "model judge"

    def __init__(self, model, processor, *, prompts=None, max_new_tokens: int = 64,
                 fallback: Scorer | None = None):
        super().__init__(prompts, fallback)
        self.model, self.processor, self.max_new_tokens = model, processor, max_new_tokens

    def compare(self, ctx, pairs):
        if ctx.image is None:
            raise ValueError("the model judge needs the image: JudgeContext(image=...)")
        texts = [models.chat_prompt(self.processor, judge_prompt(ctx, a, b, self.prompts))
                 for a, b in pairs]
        raws = infer.generate_text(self.model, self.processor, [ctx.image] * len(pairs), texts,
                                   max_new_tokens=self.max_new_tokens)
        return self._decide(ctx, pairs, raws, [None] * len(pairs))


def judge_scorer(model, processor, *, prompts: Mapping[str, str] | None = None,
                 max_new_tokens: int = 64, fallback: Scorer | None = None) -> ModelJudge:
    """The model as its own judge, with stage-specific prompts (:data:`JUDGE_PROMPTS`).
    Malformed answers fall back to ``fallback`` (default :func:`loglik_scorer`)."""
    return ModelJudge(model, processor, prompts=prompts, max_new_tokens=max_new_tokens,
                      fallback=fallback)


class OpenAIJudge(_JudgeBase):
    """An external judge through any OpenAI-compatible chat endpoint."""

    def __init__(self, client, model_name: str, *, prompts=None, include_image: bool = True,
                 max_tokens: int = 128, fallback: Scorer | None = None):
        super().__init__(prompts, fallback)
        self.client, self.model_name = client, model_name
        self.include_image, self.max_tokens = include_image, max_tokens
        self.name = f"openai judge ({model_name})"

    def compare(self, ctx, pairs):
        from cotlib import images

        url = images.image_to_data_url(ctx.image) if self.include_image and ctx.image else None
        raws, errors = [], []
        for a, b in pairs:
            content: list[dict] = [{"type": "text",
                                    "text": judge_prompt(ctx, a, b, self.prompts)}]
            if url:
                content.append({"type": "image_url", "image_url": {"url": url}})
            try:
                resp = self.client.chat.completions.create(
                    model=self.model_name, messages=[{"role": "user", "content": content}],
                    max_tokens=self.max_tokens, temperature=0,
                )
                raws.append(resp.choices[0].message.content or "")
                errors.append(None)
            except Exception as err:  # network, auth, server errors: fall back, keep going
                raws.append("")
                errors.append(f"judge call failed: {type(err).__name__}: {_short(err, 120)}")
        return self._decide(ctx, pairs, raws, errors)


def openai_judge_scorer(client, model_name: str, **kwargs) -> OpenAIJudge:
    """A judge served through the ``openai`` client (OpenAI, vLLM, the course's local teacher…).
    ``client`` is an ``openai.OpenAI`` client, or a ``base_url`` string / ``TeacherConfig``:
    then :func:`cotlib.teacher.openai_client` builds it, so OpenAI's key goes to OpenAI only.
    Keyword arguments: ``prompts``, ``include_image``, ``max_tokens``, ``fallback``."""
    from cotlib import teacher

    if isinstance(client, (str, teacher.TeacherConfig)):
        client = teacher.openai_client(client, max_retries=1)
    return OpenAIJudge(client, model_name, **kwargs)


_RATE_FRAME = (
    "You are scoring one candidate {what} for a question about this image.\n"
    "Question: {question}\n"
    "Answer so far: {so_far}\n"
    "{criterion}\n"
    "Candidate: {text}\n"
    'Rate it from 0 (useless) to 10 (perfect). Reply in exactly this format: "Score: N".'
)
_SCORE_RE = re.compile(r"score\s*[:=]?\s*\**\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_NUMBER_RE = re.compile(r"^\s*\**\s*(-?\d+(?:\.\d+)?)\s*(?:/\s*10)?\s*\**\s*\.?\s*$")


def parse_rating(text: str) -> float | None:
    """Read a rater's answer: the number after "Score:", or a reply that is only a number;
    ``None`` if neither is there.

    >>> parse_rating("Score: 7"), parse_rating("**Score:** 8.5 because..."), parse_rating(" 6/10")
    (7.0, 8.5, 6.0)
    >>> parse_rating("quite good") is None
    True
    """
    text = str(text or "")
    m = _SCORE_RE.search(text) or _NUMBER_RE.match(text)
    return float(m.group(1)) if m else None


class OpenAIRater(ScoreScorer):
    """An external reward model through any OpenAI-compatible chat endpoint: it rates one
    candidate at a time from 0 to 10 (what SWIRES needs; the pairwise judges cannot say how good
    a candidate is on its own). A failed call or an unreadable answer scores NaN, which ranks
    last; ``failures`` counts them and ``log`` keeps every raw answer."""

    def __init__(self, client, model_name: str, *, include_image: bool = True,
                 max_tokens: int = 16):
        super().__init__(f"openai rater ({model_name})", self._rate)
        self.client, self.model_name = client, model_name
        self.include_image, self.max_tokens = include_image, max_tokens
        self.failures = 0
        self.log: list[tuple[str, int, str]] = []  # (stage, candidate index, raw answer or error)

    def prompt(self, c: Candidate, ctx: JudgeContext) -> str:
        template = JUDGE_PROMPTS.get(ctx.stage) or JUDGE_PROMPTS[ANSWER]
        what = template.split("two candidate ", 1)[1].split(" for a question", 1)[0]
        criterion = template.split("\n")[3].replace("Which response", "Does this one")
        return _RATE_FRAME.format(what=what, question=ctx.question,
                                  so_far=ctx.so_far.strip() or "(nothing yet)",
                                  criterion=criterion, text=c.text.strip() or "(empty)")

    def _rate(self, c: Candidate, ctx: JudgeContext) -> float:
        from cotlib import images

        content: list[dict] = [{"type": "text", "text": self.prompt(c, ctx)}]
        if self.include_image and ctx.image is not None:
            content.append({"type": "image_url",
                            "image_url": {"url": images.image_to_data_url(ctx.image)}})
        try:
            resp = self.client.chat.completions.create(
                model=self.model_name, messages=[{"role": "user", "content": content}],
                max_tokens=self.max_tokens, temperature=0,
            )
            raw = resp.choices[0].message.content or ""
        except Exception as err:  # network, auth, server errors: rank last, keep going
            raw = f"rater call failed: {type(err).__name__}: {_short(err, 120)}"
            self.failures += 1
            self.log.append((ctx.stage, c.index, raw))
            return float("nan")
        self.log.append((ctx.stage, c.index, raw))
        value = parse_rating(raw)
        if value is None:
            self.failures += 1
            return float("nan")
        return value


def openai_reward_scorer(client, model_name: str, **kwargs) -> OpenAIRater:
    """An external reward model served through the ``openai`` client, rating each candidate 0–10
    (for :func:`swires`; cutoffs are then on that scale, e.g. ``cutoff=5``). Keyword arguments:
    ``include_image``, ``max_tokens``. ``client`` may be a ``base_url`` string or a
    ``TeacherConfig``, as for :func:`openai_judge_scorer` (OpenAI's key goes to OpenAI only)."""
    from cotlib import teacher

    if isinstance(client, (str, teacher.TeacherConfig)):
        client = teacher.openai_client(client, max_retries=1)
    return OpenAIRater(client, model_name, **kwargs)


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


# -----------------------------------------------------------------------------
# search methods


def _generator(model, sampling: infer.Sampling | None):
    import torch

    if sampling is None or sampling.seed is None:
        return None
    return torch.Generator(device=infer._device(model)).manual_seed(sampling.seed)


def _so_far(state: infer.DecodeState) -> str:
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
    generator = _generator(model, sampling)
    t0 = time.perf_counter()
    state = infer.start(model, processor, [image], [question])
    steps: list[StageSearch] = []
    while state.next_stage is not None:
        stage = state.next_stage
        ctx = JudgeContext(stage, question, _so_far(state), image)
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
    generator = _generator(model, sampling)
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


def _rank(cands: Sequence[Candidate]) -> list[int]:
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
    generator = _generator(model, sampling)
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
    cap_ctx = JudgeContext("CAPTION", question, _so_far(root), image)
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
        kept = _rank(captions)[:n]
        record(StageSearch("CAPTION", new, [], kept[0], ts, tj, kept=kept, note=note))
        grown = {c.parent for c in reasonings}
        new_r: list[Candidate] = []
        ts = tj = 0.0
        for ci in kept:
            if ci in grown:
                continue
            state, row = where["CAPTION", ci]
            branch = state.select([row]).repeat(k)
            ctx = JudgeContext("REASONING", question, _so_far(branch), image)
            cands, s1, j1 = sample(branch, len(reasonings) + len(new_r), ci, ctx)
            for j, c in enumerate(cands):
                where["REASONING", c.index] = (branch, j)
            new_r += cands
            ts, tj = ts + s1, tj + j1
        reasonings += new_r
        ranked = _rank(reasonings)
        second = next(c for c in reasonings if c.index == ranked[min(1, len(ranked) - 1)])
        retrace = second.score is None or not second.score > cutoff
        if retrace:
            why = (f"second best [{second.index}] scores {_fmt(second.score)} <= cutoff "
                   f"{_fmt(cutoff)}")
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
        ctx = JudgeContext("CONCLUSION", question, _so_far(branch), image)
        (c,), s1, j1 = sample(branch, len(conclusions), ri, ctx)
        conclusions.append(c)
        finals.append(branch)
        ts, tj = ts + s1, tj + j1
    order = _rank(conclusions)
    record(StageSearch("CONCLUSION", conclusions, [], order[0], ts, tj, kept=order))
    answer = infer.finish(finals[order[0]])[0]
    return SearchTree("swires", rater.name, question, steps, answer, time.perf_counter() - t0)


# -----------------------------------------------------------------------------
# drawing


def draw_tree(tree: SearchTree, ax=None, width: int = 28):
    """Draw the search tree with matplotlib: one column per stage, every candidate a box (the
    winner green, candidates that never closed their stage red), an edge from each stage's
    winner to the next stage's candidates. Returns the axes."""
    import matplotlib.pyplot as plt

    n_rows = max(len(s.candidates) for s in tree.steps)
    if ax is None:
        _, ax = plt.subplots(figsize=(3.2 * len(tree.steps) + 1, 1.0 * n_rows + 1.5))
    ax.set_xlim(-0.8, len(tree.steps) - 0.2)
    ax.set_ylim(n_rows - 0.4, -1.2)
    ax.axis("off")
    ax.text(-0.7, -0.9, "question", fontsize=8, weight="bold")
    prev = (-0.55, (n_rows - 1) / 2)
    ax.plot(*prev, "ko", markersize=5)
    at: dict[tuple[str, int], tuple[float, float]] = {}  # (stage, index) -> right edge of its box
    chosen = {tree.steps[-1].stage: tree.steps[-1].winner} if tree.steps else {}
    for step in reversed(tree.steps):  # SWIRES: the path to the answer, stage by stage
        c = next((c for c in step.candidates if c.index == chosen.get(step.stage)), None)
        if c is not None and c.parent is not None and step.stage in stages.STAGES:
            previous = stages.STAGES[stages.STAGES.index(step.stage) - 1]
            chosen.setdefault(previous, c.parent)
    for x, step in enumerate(tree.steps):
        extra = [part for part in (step.note.split(";")[0] if step.note.startswith("retrace")
                                   else "", "→ retrace" if "retrace to" in step.note else "")
                 if part]
        title = "\n".join([step.stage, *extra])
        ax.text(x, -0.9, title, ha="center", fontsize=9, weight="bold")
        offset = (n_rows - len(step.candidates)) / 2
        wins = {c.index: 0 for c in step.candidates}
        for m in step.comparisons:
            wins[m.winner] += 1
        for pos, c in enumerate(step.candidates):
            y = offset + pos
            source = prev
            if c.parent is not None and step.stage in stages.STAGES:
                previous = stages.STAGES[stages.STAGES.index(step.stage) - 1]
                source = at.get((previous, c.parent), prev)
            ax.annotate("", xy=(x - 0.42, y), xytext=source,
                        arrowprops=dict(arrowstyle="-", color="0.75", lw=0.8))
            best = chosen.get(step.stage, step.winner) if step.kept else step.winner
            colour = "#c8f0c8" if c.index == best else (
                "#f6d0d0" if not c.closed else ("#dde8f8" if c.index in step.kept[1:] else
                                                "#eeeeee"))
            label = f"[{c.index}] {_short(c.text, width)}\n"
            label += (f"score {_fmt(c.score)}" if c.score is not None
                      else f"logp/tok {c.mean_logprob:.2f}")
            if step.comparisons:
                label += f"  wins {wins[c.index]}"
            ax.text(x, y, label, ha="center", va="center", fontsize=7, family="monospace",
                    bbox=dict(boxstyle="round,pad=0.3", fc=colour, ec="0.5"))
            at[step.stage, c.index] = (x + 0.42, y)
        winner_pos = next((p for p, c in enumerate(step.candidates) if c.index == step.winner),
                          0)
        prev = (x + 0.42, offset + winner_pos)
    header_lines = max((1 + bool(s.note.startswith("retrace")) + ("retrace to" in s.note)
                        for s in tree.steps), default=1)
    ax.set_title(f"{tree.method} search — scorer: {tree.scorer} — answer: "
                 f"{_short(tree.answer.final_answer, 40)!r}", fontsize=9,
                 pad=6 + 11 * (header_lines - 1))
    return ax

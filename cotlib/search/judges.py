"""Judges: the model judging its own candidates (LLaVA-CoT), an external judge and an external
rater (reward model) through any OpenAI-compatible endpoint, with the stage-specific prompts and
the parsers of their answers. A judge answer that cannot be parsed falls back to another scorer
(default :func:`cotlib.search.loglik_scorer`) and the fallback is recorded."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from cotlib import infer, models
from cotlib.search.scorers import Scorer, ScoreScorer, loglik_scorer
from cotlib.search.tree import ANSWER, Candidate, Decision, JudgeContext, shorten

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


def _retry_policy(client) -> tuple[object, object]:
    """The teacher's retry policy for a judge's or rater's client: ``(calls, config)``, where
    ``calls`` is ``client`` with the SDK's own retries off and ``config`` a
    :class:`cotlib.teacher.TeacherConfig` holding the client's retry count, for
    :func:`cotlib.teacher.complete_with_retries` (429, 5xx, timeouts, connection errors and a
    malformed 200 retried after the teacher's backoff, honouring ``Retry-After``): one policy
    for the teacher, the filter's judge and the search's judges. A client that cannot copy
    itself without retries (no ``with_options``) is called as it is, once per attempt.

    >>> from cotlib import teacher
    >>> client = teacher.openai_client("http://127.0.0.1:8765/v1", max_retries=2)
    >>> calls, config = _retry_policy(client)
    >>> calls.max_retries, config.max_retries
    (0, 2)
    >>> client.close()
    """
    from cotlib import teacher

    retries = getattr(client, "max_retries", 0)
    retries = retries if isinstance(retries, int) and retries >= 0 else 0
    with_options = getattr(client, "with_options", None)
    calls = with_options(max_retries=0) if callable(with_options) else client
    return calls, teacher.TeacherConfig(max_retries=retries)


def _complete(calls, config, model_name: str, content: list[dict], max_tokens: int) -> str:
    """One judge or rater completion under :func:`_retry_policy`'s policy: the reply's text, or
    the last failure raised (an ``openai`` error or :class:`cotlib.teacher.BadResponse`)."""
    from cotlib import teacher

    return teacher.complete_with_retries(lambda: calls.chat.completions.create(
        model=model_name, messages=[{"role": "user", "content": content}],
        max_tokens=max_tokens, temperature=0), config).text


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
    """An external judge through any OpenAI-compatible chat endpoint. Calls are retried by the
    teacher's policy with the client's retry count (:func:`_retry_policy`); a call that still
    fails, or a malformed reply, falls back."""

    def __init__(self, client, model_name: str, *, prompts=None, include_image: bool = True,
                 max_tokens: int = 128, fallback: Scorer | None = None):
        super().__init__(prompts, fallback)
        self.client, self.model_name = client, model_name
        self._calls, self._policy = _retry_policy(client)
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
                raws.append(_complete(self._calls, self._policy, self.model_name, content,
                                     self.max_tokens))
                errors.append(None)
            except Exception as err:  # network, auth, server errors: fall back, keep going
                raws.append("")
                errors.append(f"judge call failed: {type(err).__name__}: {shorten(err, 120)}")
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
    last; ``failures`` counts them and ``log`` keeps every raw answer. Calls are retried by
    the teacher's policy with the client's retry count (:func:`_retry_policy`)."""

    def __init__(self, client, model_name: str, *, include_image: bool = True,
                 max_tokens: int = 16):
        super().__init__(f"openai rater ({model_name})", self._rate)
        self.client, self.model_name = client, model_name
        self._calls, self._policy = _retry_policy(client)
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
            raw = _complete(self._calls, self._policy, self.model_name, content, self.max_tokens)
        except Exception as err:  # network, auth, server errors: rank last, keep going
            raw = f"rater call failed: {type(err).__name__}: {shorten(err, 120)}"
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

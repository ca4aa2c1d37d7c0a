"""The answer format decoding writes (taken from :mod:`cotlib.stages`, so training data and
decoding agree), and the results: one :class:`StageResult` per stage, one :class:`StagedAnswer` per
question.

>>> StageResult("SUMMARY", "a plan", [1, 2], [-0.5, -0.25]).logprob
-0.75
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from cotlib import stages

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

    >>> from cotlib import models
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

"""Answering with progress callbacks: :func:`answer` decodes stage by stage or with the
stage-level beam search and reports each token and each finished stage (:class:`StageDone`);
it returns an :class:`Outcome`."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cotlib import env, infer, search, stages
from cotlib.widgets.loading import LoadedModel, cpu_threads
from cotlib.widgets.uploads import WidgetError


@dataclass
class StageDone:
    """A finished stage as the panels show it: text plus tokens, time and why it stopped."""

    stage: str
    text: str
    tokens: int
    seconds: float
    stop: str
    note: str = ""  # e.g. the search's candidates and judge time

    def stats(self) -> str:
        """``"17 tokens · 0.21 s · 81 tokens/s · stop: tag"`` (plus the note)."""
        rate = f" · {self.tokens / self.seconds:.0f} tokens/s" if self.seconds > 0 else ""
        line = f"{self.tokens} tokens · {self.seconds:.2f} s{rate} · stop: {self.stop}"
        return f"{line} · {self.note}" if self.note else line

    @classmethod
    def from_result(cls, result: infer.StageResult) -> StageDone:
        return cls(result.stage, result.text, result.tokens, result.seconds, result.stop)

    @classmethod
    def from_search(cls, step: search.StageSearch) -> StageDone:
        best = step.best
        note = (f"best of {len(step.candidates)} candidates (#{best.index}), judged in "
                f"{step.judge_seconds:.2f} s")
        return cls(step.stage, best.text, best.tokens, step.sample_seconds + step.judge_seconds,
                   best.stop, note)


@dataclass
class Outcome:
    """What :func:`answer` returns: the staged answer, the search tree (with search) and the
    wall time."""

    answer: infer.StagedAnswer
    tree: search.SearchTree | None
    seconds: float

    def summary(self) -> str:
        """Timing and token counts for the whole answer, and the final answer."""
        a = self.answer
        rate = a.tokens / self.seconds if self.seconds > 0 else 0.0
        how = f"beam search ({self.tree.scorer})" if self.tree is not None else "greedy"
        problems = "well formed" if a.ok else f"{len(a.problems)} format problems"
        return (f"{how}: prompt {a.prompt_tokens} tokens (prefill {a.prefill_seconds:.2f} s) · "
                f"answer {a.tokens} tokens in {self.seconds:.2f} s ({rate:.0f} tokens/s) · "
                f"{problems} · final answer: {printable(a.final_answer)!r}")


def answer(
    loaded: LoadedModel,
    image: Any,
    question: str,
    *,
    use_search: bool = False,
    n: int = 2,
    max_new_tokens: int | Mapping[str, int] | None = None,
    on_token: Callable[[str, str], Any] | None = None,
    on_stage_end: Callable[[StageDone], Any] | None = None,
) -> Outcome:
    """Answer ``question`` about ``image`` stage by stage and report progress.

    Greedy: ``on_token(stage, text_so_far)`` after every token, ``on_stage_end(StageDone)``
    after every stage. With ``use_search``: LLaVA-CoT's stage-level beam search with ``n``
    candidates per stage judged by the model itself; stages arrive whole as the knockout decides
    them (``on_token`` is called with empty text when a stage's search starts).
    """
    if not str(question).strip():
        raise WidgetError("type a question first")
    model, processor = loaded.model, loaded.processor
    t0 = time.perf_counter()
    with cpu_threads(model):
        if not use_search:
            result = infer.generate_stages(
                model, processor, image, question, max_new_tokens_per_stage=max_new_tokens,
                on_token=on_token,
                on_stage_end=(lambda s, r: on_stage_end(StageDone.from_result(r)))
                if on_stage_end else None,
            )
            return Outcome(result, None, time.perf_counter() - t0)
        if n < 1:
            raise WidgetError(f"search needs at least 1 candidate per stage, got {n}")

        def step_done(step: search.StageSearch) -> None:
            if on_stage_end:
                on_stage_end(StageDone.from_search(step))
            nxt = stages.next_stage(step.stage)
            if on_token and nxt:
                on_token(nxt, "")

        if on_token:
            on_token(stages.STAGES[0], "")
        judge_tokens = 24 if env.is_fast() else 64
        tree = search.beam_search_stages(
            model, processor, image, question, n=n,
            scorer=search.judge_scorer(model, processor, max_new_tokens=judge_tokens),
            max_new_tokens_per_stage=max_new_tokens, on_stage_end=step_done,
        )
    return Outcome(tree.answer, tree, time.perf_counter() - t0)


def printable(text: str) -> str:
    """Replace control characters (random-weight models write them) with a visible mark."""
    return "".join(ch if ch.isprintable() or ch in "\n\t" else "\ufffd" for ch in str(text))

"""Answering the test tasks: free generation (:func:`answer_freely`), the searches
(:func:`answer_beam`, :func:`answer_best_of_n`, :func:`answer_swires`), every system scored
(:func:`evaluate_systems`) and the base's image controls (:func:`base_controls`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from cotlib import env
from cotlib.evaluate import Answer, EvalResult
from cotlib.experiment.config import BEST_OF_N, SWIRES, SYSTEMS, UNTAGGED, ExperimentConfig


class Answers(list[Answer]):
    """One system's answers on a list of tasks, one :class:`cotlib.evaluate.Answer` each (text,
    seconds, tokens, and whether the model closed its stages where the decoder wrote the tags),
    as :func:`cotlib.evaluate.score_answers` scores them. ``outputs``, ``seconds``, ``tokens``
    and ``well_formed`` read one field of every answer (``evaluate.score``'s arguments)."""

    @property
    def outputs(self) -> list[str]:
        return [a.text for a in self]

    @property
    def seconds(self) -> list[float]:
        return [a.seconds for a in self]

    @property
    def tokens(self) -> list[int]:
        return [a.tokens for a in self]

    @property
    def well_formed(self) -> list[bool] | None:
        """Each answer's flag; None when the text alone decides (free generation)."""
        flags = [a.well_formed for a in self]
        return None if all(f is None for f in flags) else [bool(f) for f in flags]


def answer_freely(model, processor, tasks: Sequence, max_new_tokens: int,
                  progress: Callable[[int], Any] | None = None, batch_size: int = 8,
                  images: Sequence | None = None) -> Answers:
    """Greedy decoding of ``batch_size`` tasks at a time, left-padded, by transformers'
    ``model.generate`` (:func:`cotlib.infer.generate_ids`), stopped at the end-of-answer token:
    nothing is forced, the text is all the model's own. Seconds per
    answer are a batch's wall time divided by its size (throughput; the same for each system
    answered this way).

    Direct-answer systems and the CoT SFT system are answered this way. ``images`` replaces the
    tasks' own images (the controls of :func:`cotlib.evaluate.controls`).
    """
    from cotlib import infer, models

    tok = processor.tokenizer
    out = Answers()
    for first in range(0, len(tasks), batch_size):
        chunk = tasks[first:first + batch_size]
        prompts = [models.chat_prompt(processor, task.prompt_question()) for task in chunk]
        t0 = time.perf_counter()
        pictures = (list(images[first:first + batch_size]) if images is not None
                    else [task.get_image() for task in chunk])
        rows = infer.generate_ids(model, processor, pictures, prompts,
                                  max_new_tokens=max_new_tokens)
        seconds = (time.perf_counter() - t0) / len(chunk)
        out.extend(Answer(tok.decode(ids, skip_special_tokens=True).strip(), seconds, len(ids))
                   for ids in rows)
        if progress is not None:
            progress(first + len(chunk))
    return out


def _stage_budgets(max_new_tokens: int | None) -> dict[str, int]:
    """Each stage's own budget (``cotlib.infer.DEFAULT_MAX_TOKENS``) capped at the whole answer's
    budget in free generation."""
    from cotlib import infer

    return {stage: min(limit, max_new_tokens or limit)
            for stage, limit in infer.DEFAULT_MAX_TOKENS.items()}


def answer_search(tasks: Sequence, search: Callable[[Any], Any],
                  progress: Callable[[int], Any] | None = None) -> Answers:
    """Answer each task with ``search(task)``, a ``cotlib.search`` function returning a
    ``SearchTree``. Tokens count every candidate sampled (the search's real cost); a trace is
    well formed only if the model closed every stage itself."""
    out = Answers()
    for i, task in enumerate(tasks):
        tree = search(task)
        out.append(Answer(tree.answer.text, tree.seconds,
                          sum(c.tokens for step in tree.steps for c in step.candidates),
                          well_formed=tree.answer.ok))
        if progress is not None:
            progress(i + 1)
    return out


def answer_beam(model, processor, tasks: Sequence, n: int, max_new_tokens: int | None = None,
                progress: Callable[[int], Any] | None = None) -> Answers:
    """Stage-level beam search (``cotlib.search``), ``n`` sampled candidates per stage, knockout
    by length-normalised log-likelihood (:func:`answer_search`). Each stage stops at its own
    budget (``cotlib.infer.DEFAULT_MAX_TOKENS``), capped at ``max_new_tokens``, the whole
    answer's budget in free generation.
    """
    from cotlib import search

    budgets, scorer = _stage_budgets(max_new_tokens), search.loglik_scorer()
    return answer_search(tasks, lambda task: search.beam_search_stages(
        model, processor, task.get_image(), task.prompt_question(), n=n, scorer=scorer,
        sampling=search.LLAVA_COT_SAMPLING, max_new_tokens_per_stage=budgets), progress)


def answer_best_of_n(model, processor, tasks: Sequence, n: int,
                     max_new_tokens: int | None = None,
                     progress: Callable[[int], Any] | None = None) -> Answers:
    """Best-of-N: ``n`` whole answers sampled (T=0.6, top-p 0.9), the knockout's winner by
    length-normalised log-likelihood kept (:func:`answer_search`)."""
    from cotlib import search

    budgets, scorer = _stage_budgets(max_new_tokens), search.loglik_scorer()
    return answer_search(tasks, lambda task: search.best_of_n(
        model, processor, task.get_image(), task.prompt_question(), n=n, scorer=scorer,
        sampling=search.LLAVA_COT_SAMPLING, max_new_tokens_per_stage=budgets), progress)


def answer_swires(model, processor, tasks: Sequence, max_new_tokens: int | None = None,
                  progress: Callable[[int], Any] | None = None) -> Answers:
    """SWIRES (``cotlib.search.swires`` with its defaults), scored by the model's own
    length-normalised log-likelihood, where the paper uses an external reward model
    (:func:`answer_search`)."""
    from cotlib import search

    budgets, scorer = _stage_budgets(max_new_tokens), search.loglik_scorer()
    return answer_search(tasks, lambda task: search.swires(
        model, processor, task.get_image(), task.prompt_question(), scorer=scorer,
        sampling=search.LLAVA_COT_SAMPLING, max_new_tokens_per_stage=budgets), progress)


def _every(log: Callable[[str], Any], name: str, total: int, each: int = 20):
    started = time.perf_counter()
    logged = [0]

    def tick(done: int) -> None:
        if done // each > logged[0] // each or done == total:
            logged[0] = done
            log(f"      {name}: {done}/{total} answered ({time.perf_counter() - started:.0f} s)")

    return tick


def evaluate_systems(base: Path, run: Path, test: Sequence, config: ExperimentConfig,
                     log: Callable[[str], Any] = print, train_tasks: Sequence | None = None
                     ) -> tuple[list[EvalResult], dict[str, EvalResult]]:
    """Answer ``test`` with the four systems and score them (:data:`SYSTEMS`, in order), then the
    rows ``config`` asks for (best-of-N, SWIRES, the untagged adapter); also the base's image
    controls (:func:`base_controls`; empty unless ``config.controls``)."""
    from cotlib import evaluate, models, train

    device = env.hardware().device
    results = []
    beam_tasks = list(test[: config.beam_tasks]) if config.beam_tasks is not None else list(test)

    direct_loaders = (
        lambda: models.load(base, dtype="float32" if device == "cpu" else None, device=device),
        lambda: train.load_adapter(run / "adapter_direct", device=device, merge=True),
    )
    controls: dict[str, EvalResult] = {}
    for name, load in zip(SYSTEMS[:2], direct_loaders):
        model, processor = load()
        model.eval()
        a = answer_freely(model, processor, test, config.direct_max_new_tokens,
                          _every(log, name, len(test), 60), config.answer_batch)
        results.append(evaluate.score_answers(name, test, a, note="greedy, free generation"))
        if name == SYSTEMS[0] and config.controls:
            controls = base_controls(model, processor, test, config, results[-1], train_tasks)
            log("      controls: " + ", ".join(f"{k} {r.accuracy:.1%}"
                                                for k, r in controls.items()))
        env.free_memory(model)

    model, processor = train.load_adapter(run / "adapter", device=device, merge=True)
    a = answer_freely(model, processor, test, config.max_new_tokens,
                      _every(log, SYSTEMS[2], len(test)), config.answer_batch)
    results.append(evaluate.score_answers(
        SYSTEMS[2], test, a,
        note=f"greedy, free generation (nothing forced), at most {config.max_new_tokens} tokens"))
    b = answer_beam(model, processor, beam_tasks, config.beam_n, config.max_new_tokens,
                    _every(log, SYSTEMS[3], len(beam_tasks), 10))
    subset = "" if len(beam_tasks) == len(test) else (
        f"; on the first {len(beam_tasks)} of the {len(test)} test tasks, to save time")
    results.append(evaluate.score_answers(
        SYSTEMS[3], beam_tasks, b,
        note=f"stage-level beam search, {config.beam_n} candidates per stage (T=0.6, top-p 0.9), "
             "knockout by length-normalised log-likelihood; opening tags fed by the decoder, "
             "well formed = the model closed every stage itself; no stage longer than "
             f"{config.max_new_tokens} tokens{subset}"))
    searched = "; opening tags fed by the decoder, well formed = the model closed every stage " \
        f"itself{subset}"
    if config.best_of_n:
        b = answer_best_of_n(model, processor, beam_tasks, config.best_of_n,
                             config.max_new_tokens, _every(log, BEST_OF_N, len(beam_tasks), 10))
        results.append(evaluate.score_answers(
            BEST_OF_N, beam_tasks, b,
            note=f"{config.best_of_n} whole answers sampled (T=0.6, top-p 0.9), knockout by "
                 f"length-normalised log-likelihood{searched}"))
    if config.swires:
        from cotlib import search

        b = answer_swires(model, processor, beam_tasks, config.max_new_tokens,
                          _every(log, SWIRES, len(beam_tasks), 10))
        kw = search.swires.__kwdefaults__  # answer_swires runs SWIRES with its defaults
        results.append(evaluate.score_answers(
            SWIRES, beam_tasks, b,
            note=f"stage-wise retracing search (cotlib.search.swires: {kw['m']} captions, best "
                 f"{kw['n']} kept, {kw['k']} reasonings each, retrace when the second-best "
                 f"scores at most {kw['cutoff']}, at most {kw['retraces']} times; conclusions "
                 f"for the best {kw['top']}), scored by the model's own "
                 f"length-normalised log-likelihood, not the paper's reward model{searched}"))
    env.free_memory(model)
    if config.untagged:
        from cotlib import stages

        model, processor = train.load_adapter(run / "adapter_untagged", device=device,
                                              merge=True)
        a = answer_freely(model, processor, test, config.max_new_tokens,
                          _every(log, UNTAGGED, len(test)), config.answer_batch)
        results.append(evaluate.score_answers(
            UNTAGGED, test, [replace(x, text=stages.retag(x.text)) for x in a],
            note="trained on the same traces without their stage tags; greedy, free generation; "
                 "graded on its last paragraph when it wrote the four paragraphs it was trained "
                 "on (then counted as well formed), else on its whole text"))
        env.free_memory(model)
    return results, controls


def base_controls(model, processor, test: Sequence, config: ExperimentConfig,
                  real: EvalResult, train_tasks: Sequence | None = None
                  ) -> dict[str, EvalResult]:
    """The base's direct answers with each task's own image (``real``, already scored), another
    task's image of the same kind, and a blank image; plus the majority answer of each type
    among the training tasks."""
    from cotlib import evaluate

    def answer(tasks, images):  # answer_freely batches them itself
        return answer_freely(model, processor, tasks, config.direct_max_new_tokens,
                             batch_size=config.answer_batch, images=images).outputs

    found = evaluate.controls(answer, list(test), name="base",
                              conditions=("shuffled", "blank"), seed=config.seed,
                              majority_from=train_tasks)
    return {"real": real, **found}

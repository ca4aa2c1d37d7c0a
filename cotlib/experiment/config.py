"""The experiment's settings: the systems' names, :func:`training_recipe`,
:class:`ExperimentConfig`, what a run returns (:class:`Experiment`) and the base model's
folder."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cotlib import env
from cotlib.evaluate import EvalResult
from cotlib.train.settings import TrainSettings

#: ``synth.make_tasks`` seed of the extra training tasks: task i uses seed 7_000_000 + i, clear of
#: the shipped splits (1e6, 2e6, 3e6 + i), the base's held-out tasks (4e6, 5e6) and its
#: pretraining stream (>= 10_000_000).
EXTRA_TASK_SEED = 7

#: The four systems, in table order (the first row is the reference for the overhead columns).
SYSTEMS = ("base (direct)", "direct SFT", "CoT SFT", "CoT SFT + beam")
#: Rows after the four: the paper's other searches on the beam row's tasks
#: (:attr:`ExperimentConfig.best_of_n`, :attr:`ExperimentConfig.swires`), and its "w/o structured
#: tags" ablation (:attr:`ExperimentConfig.untagged`, in :meth:`ExperimentConfig.full`).
BEST_OF_N, SWIRES, UNTAGGED = "CoT SFT + best-of-N", "CoT SFT + SWIRES", "CoT SFT, no tags"


class ExperimentError(RuntimeError):
    """The experiment cannot run; the message names the fix."""


def training_recipe(**changes: Any) -> TrainSettings:
    """The experiment's LoRA recipe: :class:`cotlib.train.TrainSettings` with the settings below
    (``changes`` replace any of them).

    >>> r = training_recipe(); (r.epochs, r.learning_rate, r.lora_r, r.modules_to_save)
    (8.0, 0.001, 64, ['lm_head'])
    """
    settings: dict[str, Any] = dict(
        # Learning rates picked on the validation split (60 tasks; scripts/tune_lr.py, 437 kept
        # traces, 8 epochs, batch 4, LoRA r=64 + lm_head) for the tiled base of 2026-12-06.
        # Direct SFT, val accuracy: 2.5e-4 -> 43.3%, 5e-4 -> 40.0%, 1e-3 -> 33.3%, 2e-3 -> 18.3%
        # (its training loss rose: 0.86 -> 1.06). CoT SFT: 2.5e-4 -> 11.7% (format 56.7%), 5e-4
        # -> 15.0% (78.3%), 1e-3 -> 18.3% (88.3%); LoRA alone (no lm_head) at 2e-3 -> 16.7%
        # (81.7%, loss 5.39 -> 1.07). With 60 tasks an accuracy is uncertain by about
        # +-12 points: the grid separates the diverging rate, not its neighbours. (The earlier
        # base's tuning, by format compliance: 8 epochs, lr 2e-3 -> 95-99%; 7 epochs -> 92%.)
        epochs=8.0,
        learning_rate=1e-3,  # the CoT adapter's (ExperimentConfig.direct_learning_rate: direct)
        lora_r=64,  # the base's matrices are 192 wide: a rank this high is cheap here
        # On the CPU, drawing the dropout masks (aten::bernoulli_) was 21% of a CoT training
        # step's time in a profile of the shipped base, but without dropout format compliance
        # fell to 86.7% (120 test tasks; 98.3% with 0.05, the same traces and settings).
        lora_dropout=0.05,
        # Trained in full next to LoRA: the base never wrote the stage tags. Measured with a
        # 4-minute stand-in base, 3 epochs, 10 test tasks: format compliance 0% with LoRA (r=64)
        # alone, 80% with the output layer trained too.
        modules_to_save=["lm_head"],
        batch_size=4,
        grad_accum=1,
        # Batches of traces of similar length: 14% fewer tokens per epoch (padding 15% -> 1%);
        # the demo's CoT run took 367-435 s instead of 493-538 s.
        group_by_length=True,
        logging_steps=20,
        save_steps=10**6,  # no checkpoints: a run is minutes long
    )
    settings.update(changes)
    return TrainSettings(**settings)


@dataclass
class ExperimentConfig:
    """Everything that decides one run of the experiment (written into ``experiment.json``).

    The defaults are the demo's: sized for about 10 minutes on 2 CPU cores with the shipped base.
    """

    base: str | None = None  # None: env.BASE_DIR (the shipped base model)
    extra_train_tasks: int = 360  # generated beyond the shipped 240 training tasks
    shipped_train_tasks: int | None = None  # None: all 240 of data/tasks/train
    #: The shipped split the systems are scored on: "heldout" (330 tasks, 30 per type: enough to
    #: tell about 10 points apart between two systems) or "test" (120, the notebooks' fast split).
    test_split: str = "heldout"
    test_tasks: int | None = None  # None: all of the test split
    #: Score the base also with shuffled and blank images and against the majority answer (a
    #: model that scores the same without the picture answers from the question).
    controls: bool = True
    beam_tasks: int | None = 24  # the beam row's subset (the first ones); None: all test tasks
    beam_n: int = 2  # candidates per stage, as in LLaVA-CoT's paper (its code: 10)
    #: Whole answers sampled for the best-of-N row (on the beam row's tasks); 0: no such row.
    best_of_n: int = 4
    #: The SWIRES row (the paper's later stage-wise retracing search, ``cotlib.search.swires``
    #: with its defaults and the model's own log-likelihood as the scorer) on the beam row's tasks.
    swires: bool = True
    #: Train a third adapter on the same traces without their stage tags (the paper's "w/o
    #: structured tags" ablation) and score it: one more LoRA run, so only in :meth:`full`.
    untagged: bool = False
    fault_rate: float = 0.1  # share of traces the local teacher breaks, per fault kind
    #: The LoRA recipe both adapters train with (:func:`training_recipe`: epochs, learning rate,
    #: rank, batch...), the "same budget" for each. :func:`train_adapter` sets, per run, the
    #: model (``base``), the output folder, the seed (``seed``) and the threads
    #: (:meth:`cpu_threads`); their values here are not used.
    train: TrainSettings = field(default_factory=training_recipe)
    #: The direct-answer adapter's learning rate (None: ``train.learning_rate``). Same data and
    #: same budget (epochs, batch) is the fair comparison; each variant needs a rate at which it
    #: trains, picked on the validation split (scripts/tune_lr.py; see :func:`training_recipe`).
    direct_learning_rate: float | None = 2.5e-4
    max_new_tokens: int = 320  # CoT answers, free generation (the traces run to ~280 tokens)
    direct_max_new_tokens: int = 8
    #: Free generation decodes this many test tasks per batch (seconds per answer = the batch's
    #: time / its size); 1 gives the latency one user waits, at several times the demo's time.
    #: CoT SFT on the 120 test tasks (2 threads, same outputs): 29.7 s at 16, 24.3 s at 24,
    #: 15.8 s at 40 per batch.
    answer_batch: int = 40
    #: torch threads; None: the machine's cores, at most 4. Side by side (below), each LoRA run
    #: gets half of them.
    threads: int | None = None
    #: Train the two adapters at the same time, the direct one in a second process. None: on a
    #: CPU with two or more cores. Measured on the 2-core development machine, shipped base,
    #: batch 4, seconds per step: CoT 0.43 with one thread or two; direct 0.23 with one thread,
    #: 0.30 with two; side by side with one thread each, CoT 0.47 and direct 0.18. So the two
    #: runs take about as long as the CoT run alone.
    side_by_side: bool | None = None
    seed: int = 0

    def cpu_threads(self) -> int:
        """The torch threads this run uses (``threads``, or the cores up to 4)."""
        return self.threads or max(1, min(4, os.cpu_count() or 1))

    def trains_side_by_side(self) -> bool:
        """Whether :func:`train_both` runs the two LoRA trainings at the same time."""
        if self.side_by_side is not None:
            return self.side_by_side
        return env.hardware().device == "cpu" and (os.cpu_count() or 1) >= 2

    @classmethod
    def fast(cls, **overrides: Any) -> ExperimentConfig:
        """Seconds-scale settings for tests and fast mode (a handful of tasks and steps)."""
        settings: dict[str, Any] = dict(
            extra_train_tasks=0, shipped_train_tasks=24, test_split="test", test_tasks=8,
            beam_tasks=3, beam_n=2, best_of_n=2, max_new_tokens=48,
            train=training_recipe(epochs=1.0, batch_size=8),
            # one thread: a seconds-scale run gains nothing from a second one, and under
            # `make test` the other core is busy with another test
            threads=1,
            side_by_side=False)  # a second process would spend longer importing than training
        settings.update(overrides)
        return cls(**settings)

    @classmethod
    def full(cls, **overrides: Any) -> ExperimentConfig:
        """Every row of the paper's table on every test task: the demo's settings plus the
        untagged ablation, and the searches on all held-out tasks rather than the first 24
        (``cotlib demo --full``; longer than the demo's 10 minutes).

        >>> c = ExperimentConfig.full(); (c.untagged, c.beam_tasks, c.best_of_n > 0, c.swires)
        (True, None, True, True)
        """
        settings: dict[str, Any] = dict(untagged=True, beam_tasks=None)
        settings.update(overrides)
        return cls(**settings)


@dataclass
class Experiment:
    """What :func:`run_experiment` produced: the four results, facts about the run, the files."""

    run: Path
    results: list[EvalResult]
    info: dict[str, Any] = field(default_factory=dict)
    controls: dict[str, EvalResult] = field(default_factory=dict)  # the base's image controls

    @property
    def report(self) -> Path:
        return self.run / "report.md"


# --------------------------------------------------------------------------------------------
# the base model


def base_folder(base: str | os.PathLike | None = None) -> Path:
    """The base model's folder: ``base`` if given, else the shipped ``data/base``; raises
    :class:`ExperimentError` naming the fix when it is missing.

    >>> try:
    ...     base_folder("/nonexistent")
    ... except ExperimentError as err:
    ...     print(str(err)[:51])
    no base model at /nonexistent (config.json missing)
    """
    folder = Path(base) if base is not None else env.BASE_DIR
    if not (folder / "config.json").exists():
        shipped = folder.resolve() == env.BASE_DIR.resolve()
        fix = ("the course ships it in data/base; rebuild it with `python scripts/pretrain_base.py"
               "` (see its docstring; `--short` gives a weaker one in minutes)"
               if shipped else "pass the folder of a model saved with save_pretrained")
        raise ExperimentError(f"no base model at {folder} (config.json missing) — {fix}, or "
                              "point to another one with `cotlib demo --base PATH`.")
    return folder

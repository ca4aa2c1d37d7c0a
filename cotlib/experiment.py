"""The miniature LLaVA-CoT experiment: does answering in four stages help a tiny model?

Four systems answer the same held-out tasks (``data/tasks/heldout``: 330, 30 per task type):

1. **base** — the shipped base model (``data/base``), answering directly, as it was pretrained;
2. **direct SFT** — a LoRA adapter trained on the same tasks with the answers only;
3. **CoT SFT** — a LoRA adapter trained on four-stage traces (teacher → filter → dataset),
   with the same settings (epochs, learning rate, rank, batch) as the direct adapter;
4. **CoT SFT + beam** — the CoT adapter with LLaVA-CoT's stage-level beam search.

Each step is a plain function that reads and writes the run folder (``runs/<name>/``: ``tasks/``,
``traces.jsonl``, ``verdicts.jsonl``, ``dataset/``, ``adapter/``, ``eval.json``, ``report.md``);
:func:`run_experiment` calls them in order. ``cotlib demo`` and notebook 07 both use it.

Two choices the report repeats, because they matter when reading the numbers:

* the CoT SFT row decodes **freely** (one greedy ``model.generate``, nothing forced), so its format
  compliance is what the model learned. Staged decoding (:mod:`cotlib.infer`) feeds every opening
  tag itself; for the beam row a trace counts as well formed only if the model closed every stage
  with its own closing tag;
* the beam search referees candidates by their length-normalised log-likelihood, not by the model
  as its own judge (LLaVA-CoT's choice): a few-million-parameter model was never taught to answer
  "I choose response [1]".

>>> ExperimentConfig.fast().test_tasks
8
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from cotlib import env
from cotlib.evaluate import Answer, EvalResult
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


# --------------------------------------------------------------------------------------------
# data: tasks, traces, verdicts, datasets


def prepare_tasks(run: Path, config: ExperimentConfig) -> tuple[list, list]:
    """Training tasks (the shipped train split + ``extra_train_tasks`` new ones, saved in
    ``run/tasks``) and the held-out test tasks (``data/tasks/<test_split>``)."""
    from cotlib import synth

    train_tasks = synth.load_split(env.DATA_DIR / "tasks" / "train")
    if config.shipped_train_tasks is not None:
        train_tasks = train_tasks[: config.shipped_train_tasks]
    if config.extra_train_tasks:
        train_tasks += synth.make_tasks(config.extra_train_tasks, seed=EXTRA_TASK_SEED)
    synth.save_split(train_tasks, run / "tasks")
    folder = env.DATA_DIR / "tasks" / config.test_split
    if not (folder / "tasks.jsonl").exists():
        raise ExperimentError(f"no test split {config.test_split!r} in {folder.parent} — use one "
                              "of the shipped splits (heldout, test), or regenerate them with "
                              "`python scripts/make_data.py`.")
    test = synth.load_split(folder)
    if config.test_tasks is not None:
        test = test[: config.test_tasks]  # the split cycles through the task types
    return synth.load_split(run / "tasks"), test


def make_traces(tasks: Sequence, run: Path, config: ExperimentConfig) -> list[dict]:
    """Four-stage traces from the local teacher (with injected faults) into ``traces.jsonl``."""
    from cotlib import filtering, teacher, teacher_server

    path = run / "traces.jsonl"
    path.unlink(missing_ok=True)  # the local teacher is free: start over each run
    rate = config.fault_rate
    faults = teacher_server.Faults(rate_malformed=rate, rate_wrong_answer=rate,
                                   rate_refusal=rate, seed=config.seed)
    with teacher_server.LocalTeacher(faults, seed=config.seed) as server:
        tc = teacher.TeacherConfig(model=teacher.LOCAL_MODEL, base_url=server.base_url,
                                   concurrency=8)
        teacher.run_generation(tasks, path, tc, progress=False)
    # the file is in arrival order, which concurrency shuffles: put the records in task order so
    # that the datasets, and the training runs, are the same from one run to the next
    order = {task.id: i for i, task in enumerate(tasks)}
    return sorted(filtering.read_traces(path), key=lambda r: order.get(r["task_id"], len(order)))


#: Each dataset variant's folder in the run.
DATASET_FOLDERS = {"cot": "dataset", "direct": "dataset_direct", "untagged": "dataset_untagged"}


def filter_and_build(records: list[dict], tasks: Sequence, run: Path,
                     variants: Sequence[str] = ("cot", "direct")) -> dict[str, Any]:
    """Filter the traces (``verdicts.jsonl``) and build each variant's dataset from the same kept
    traces (``dataset/``, ``dataset_direct/``, ``dataset_untagged/``: :data:`DATASET_FOLDERS`).
    Returns them by variant, and the verdicts."""
    from datasets import DatasetDict

    from cotlib import data, filtering

    verdicts = filtering.filter_traces(records, tasks, out=run)
    built = {"verdicts": verdicts}
    for variant in variants:
        folder = DATASET_FOLDERS[variant]
        ds = data.build_dataset(records, verdicts, tasks, variant=variant)
        if (run / folder).exists():
            shutil.rmtree(run / folder)
        data.save(DatasetDict(train=ds), run / folder)
        built[variant] = ds
    return built


# --------------------------------------------------------------------------------------------
# training


def train_adapter(dataset, base: Path, out: Path, config: ExperimentConfig, *,
                  verbose: bool = True):
    """LoRA SFT of ``base`` on ``dataset`` into ``out`` with the experiment's settings (epochs,
    batch, rank: the "same budget" for both variants; :func:`train_both` gives the direct one its
    own learning rate). Returns the :class:`cotlib.train.TrainResult`.
    """
    from cotlib import train

    if out.exists():
        shutil.rmtree(out)
    settings = replace(config.train, model=str(base), output_dir=str(out), seed=config.seed,
                       cpu_threads=config.cpu_threads())
    return train.train(dataset, settings, verbose=verbose)


def _train_in_second_process(dataset_dir: str, base: str, out: str, config: ExperimentConfig,
                             log_path: str) -> None:
    """:func:`train_both`'s second process: one LoRA run, its output into ``log_path``."""
    import contextlib
    import traceback

    from cotlib import train

    with open(log_path, "w", buffering=1) as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        try:
            train_adapter(train.load_dataset_any(dataset_dir), Path(base), Path(out), config)
        except BaseException:
            traceback.print_exc()
            raise


def train_both(built: dict[str, Any], base: Path, run: Path, config: ExperimentConfig,
               log: Callable[[str], Any] = print) -> tuple[Any, Any]:
    """The direct-answer and the CoT LoRA runs, with the same budget: ``(direct, cot)``.

    Side by side (:meth:`ExperimentConfig.trains_side_by_side`), the direct run trains in a
    second process, from ``run/dataset_direct``, with half the threads (its output goes to
    ``run/train_direct.log``), while this process trains the CoT adapter with the other half.
    Otherwise one after the other, in this process.
    """
    import multiprocessing

    from cotlib import train

    direct_config = replace(config, train=replace(
        config.train, learning_rate=config.direct_learning_rate or config.train.learning_rate))
    if not config.trains_side_by_side():
        direct = train_adapter(built["direct"], base, run / "adapter_direct", direct_config)
        return direct, train_adapter(built["cot"], base, run / "adapter", config)
    half = replace(config, threads=max(1, config.cpu_threads() // 2))
    direct_half = replace(direct_config, threads=half.threads)
    out, log_path = run / "adapter_direct", run / "train_direct.log"
    if out.exists():
        shutil.rmtree(out)
    # the second process reads OMP_NUM_THREADS when it imports torch: set it only for its start
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(half.threads)
    try:
        second = multiprocessing.get_context("spawn").Process(
            target=_train_in_second_process, name="cotlib-direct-sft",
            args=(str(run / "dataset_direct"), str(base), str(out), direct_half, str(log_path)))
        second.start()
    finally:
        if before is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = before
    log(f"      direct-answer run started in a second process (output: {log_path})")
    try:
        cot = train_adapter(built["cot"], base, run / "adapter", half)
        if second.is_alive():
            log("      waiting for the direct-answer run to finish")
        second.join()
    finally:
        if second.is_alive():  # this process failed or was interrupted: stop the other too
            second.terminate()
            second.join()
    if second.exitcode != 0 or not (out / "training_card.json").exists():
        raise ExperimentError(
            f"the direct-answer LoRA run (second process) failed with exit code "
            f"{second.exitcode}: see {log_path}. To train in this process instead: "
            "ExperimentConfig(side_by_side=False).")
    direct = train.TrainResult.from_folder(out)
    log(f"      direct-answer run: {direct.seconds:.0f} s in its process")
    return direct, cot


# --------------------------------------------------------------------------------------------
# answering


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
    """Greedy decoding of ``batch_size`` tasks at a time on a shared cache
    (:func:`cotlib.infer.generate_ids`: each row gets the tokens it would get alone), stopped at
    the end-of-answer token: nothing is forced, the text is all the model's own. Seconds per
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
    """Answer ``test`` with the four systems and score them (:data:`SYSTEMS`, in order); also
    the base's image controls (:func:`base_controls`; empty unless ``config.controls``)."""
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
        b = answer_swires(model, processor, beam_tasks, config.max_new_tokens,
                          _every(log, SWIRES, len(beam_tasks), 10))
        results.append(evaluate.score_answers(
            SWIRES, beam_tasks, b,
            note="stage-wise retracing search (cotlib.search.swires: 4 captions, best 2 kept, 2 "
                 "reasonings each, retrace when the second-best scores at most -1.0, at most 3 "
                 "times; conclusions for the best 3), scored by the model's own "
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


# --------------------------------------------------------------------------------------------
# the whole experiment


def run_experiment(config: ExperimentConfig | None = None, run: str | os.PathLike = "demo",
                   log: Callable[[str], Any] = print) -> Experiment:
    """Run every step and write ``eval.json``, the figures and ``report.md`` into the run folder.

    ``run`` is a run name (a folder under ``runs/``) or a path. ``log`` receives progress lines.
    """
    config = config or ExperimentConfig()
    base = base_folder(config.base)
    run = Path(run) if os.sep in str(run) or Path(run).is_absolute() else env.run_dir(str(run))
    run.mkdir(parents=True, exist_ok=True)
    env.seed_everything(config.seed)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def step(k: int, text: str) -> float:
        log(f"[{k}/6] {text}  ({time.perf_counter() - started:.0f} s so far)")
        return time.perf_counter()

    with env.torch_threads(config.cpu_threads()):
        t = step(1, "tasks: the shipped training split + new synthetic tasks; held-out test split")
        train_tasks, test = prepare_tasks(run, config)
        log(f"      {len(train_tasks)} training tasks in {run / 'tasks'}; {len(test)} test tasks")
        timings["tasks"] = time.perf_counter() - t

        t = step(2, "traces from the local teacher (10% of each fault kind injected)"
                 if config.fault_rate == 0.1 else "traces from the local teacher")
        records = make_traces(train_tasks, run, config)
        timings["teacher"] = time.perf_counter() - t

        t = step(3, "filter the traces; build the CoT and direct-answer datasets")
        built = filter_and_build(records, train_tasks, run, ("cot", "direct", "untagged")
                                 if config.untagged else ("cot", "direct"))
        verdicts = built["verdicts"]
        kept = sum(v.kept for v in verdicts)
        reasons = Counter(v.reason for v in verdicts if not v.kept)
        log(f"      kept {kept} of {len(verdicts)} traces; rejected: {dict(reasons)}")
        timings["filter_and_datasets"] = time.perf_counter() - t

        together = config.trains_side_by_side()
        t = step(4, f"LoRA SFT of the base twice with the same settings, on direct answers "
                 f"({len(built['direct'])} rows) and on four-stage traces ({len(built['cot'])} "
                 f"rows){', side by side' if together else ''}")
        direct, cot = train_both(built, base, run, config, log)
        trained = {"direct SFT": direct, "CoT SFT": cot}
        if config.untagged:
            log(f"      and on the same traces without their stage tags "
                f"({len(built['untagged'])} rows)")
            trained[UNTAGGED] = train_adapter(built["untagged"], base, run / "adapter_untagged",
                                              config)
        timings["train_both" if together else "train_direct_then_cot"] = time.perf_counter() - t

        systems = len(SYSTEMS) + bool(config.best_of_n) + config.swires + config.untagged
        t = step(5, f"answer the test tasks with the {systems} systems")
        results, controls = evaluate_systems(base, run, test, config, log, train_tasks)
        timings["evaluate"] = time.perf_counter() - t

        t = step(6, "scores, figures and report")
        info = {
            "config": asdict(config), "base": str(base),
            "base_parameters": _parameters(base),
            "train_tasks": len(train_tasks), "test_tasks": len(test),
            "traces": len(records), "kept": kept, "rejected": dict(reasons.most_common()),
            "training": {name: {"steps": r.card.get("steps"), "seconds": round(r.seconds, 1),
                                "loss_first": r.losses[0][1] if r.losses else None,
                                "loss_last": r.losses[-1][1] if r.losses else None,
                                "loss_rose": loss_rose(r.losses),
                                "trainable": r.card.get("parameters", {}).get("trainable")}
                         for name, r in trained.items()},
            "side_by_side": together,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "test_split": config.test_split,
            "controls": {k: {"accuracy": r.accuracy, "by_type": r.by_type}
                         for k, r in controls.items()},
            "attribution": attribution_of(results[2], test),
            "timings": timings,
            "machine": _machine(),
        }
        timings["report"] = 0.0
        info["total_seconds"] = time.perf_counter() - started
        experiment = Experiment(run, results, info, controls)
        write_report(experiment)
        timings["report"] = time.perf_counter() - t
        info["total_seconds"] = time.perf_counter() - started
        write_report(experiment)  # again, with the report step's own time in it
    log(f"done in {info['total_seconds']:.0f} s: {experiment.report}")
    return experiment


def loss_rose(losses: Sequence[tuple[int, float]]) -> bool:
    """Whether a run's logged training loss ended higher than it started (the mean of the last
    quarter of the logged values above the mean of the first quarter): a recipe that makes the
    model worse on its own training data, which the report flags.

    >>> loss_rose([(1, 2.0), (2, 1.0), (3, 0.5), (4, 0.4)]), loss_rose([(1, 0.7), (2, 1.6)])
    (False, True)
    """
    values = [v for _, v in losses]
    if len(values) < 2:
        return False
    k = max(1, len(values) // 4)
    return sum(values[-k:]) / k > sum(values[:k]) / k


def attribution_of(cot: EvalResult, test: Sequence) -> dict[str, Any]:
    """Stage attribution (:mod:`cotlib.attribution`) of the CoT SFT answers, from its rows."""
    from cotlib import attribution

    by_id = {t.id: t for t in test}
    tasks = [by_id[row["task_id"]] for row in cot.rows]
    return attribution.attribution_table(tasks, [row["output"] for row in cot.rows])


def _parameters(base: Path) -> int | None:
    """Parameters of the model saved in ``base``, counted from its safetensors headers."""
    import math

    from safetensors import safe_open

    total = 0
    for path in base.glob("*.safetensors"):
        with safe_open(str(path), "pt") as weights:
            total += sum(math.prod(weights.get_slice(k).get_shape()) for k in weights.keys())
    return total or None


def _machine() -> dict[str, Any]:
    import torch

    hw = env.hardware()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"device": hw.device, "gpu": hw.gpu_name, "cpu_count": hw.cpu_count,
            "torch_threads": torch.get_num_threads(), "processor": platform.processor() or
            platform.machine(), "load_average": [round(x, 2) for x in load] if load else None}


# --------------------------------------------------------------------------------------------
# the report


#: The task types that need more than one step (count two sets, or read two bars, then combine):
#: where reasoning in stages should help most.
MULTI_STEP = ("count_sum", "compare_counts", "count_color_shape", "bar_diff")


def subset(result: EvalResult, task_types: Sequence[str]) -> EvalResult:
    """``result`` re-scored on the tasks of ``task_types`` only (from its per-task rows)."""
    rows = [row for row in result.rows if row["task_type"] in task_types]
    if not rows:
        raise ValueError(f"{result.name!r} answered no task of the types {list(task_types)}")
    return _rescored(result, rows, f"the {', '.join(task_types)} tasks only")


def reading(results: Sequence[EvalResult]) -> list[str]:
    """Plain sentences comparing the systems, computed from the numbers (nothing is assumed
    about which way they point): each comparison is paired (the same tasks), with a 95% interval
    for the difference and an exact McNemar test, and says whether the data support it.
    Expects the four :data:`SYSTEMS` in order, then any of the other rows (:data:`BEST_OF_N`,
    :data:`SWIRES`, :data:`UNTAGGED`).

    >>> from cotlib import evaluate, stages, synth
    >>> ts = synth.make_tasks(44, seed=9)
    >>> direct = evaluate.score("direct SFT", ts, [t.answer if i % 2 else "x"
    ...                         for i, t in enumerate(ts)], seconds=[.01] * 44, tokens=[2] * 44)
    >>> cot = evaluate.score("CoT SFT", ts, [stages.render("p", "c", "r", t.answer) for t in ts],
    ...                      seconds=[.5] * 44, tokens=[80] * 44)
    >>> print(reading([direct, direct, cot, cot])[1])  # doctest: +NORMALIZE_WHITESPACE
    CoT SFT vs direct SFT: 100.0% vs 50.0% at 40x the generated tokens and 50x the seconds per
    answer. CoT SFT - direct SFT: +50.0 points (95% interval +36.4 to +63.6; 22 tasks right only
    for CoT SFT, 0 only for direct SFT, McNemar p = 4.77e-07): the data support that CoT SFT is
    more accurate.
    """
    from cotlib import evaluate

    base, direct, cot, beam = results[:4]

    def compare(a: EvalResult, b: EvalResult, what: str, paired=None) -> str:
        tok = _ratio(a.mean_tokens, b.mean_tokens)
        sec = _ratio(a.mean_seconds, b.mean_seconds)
        paired = paired or evaluate.paired_comparison(a, b)
        return (f"{what}: {a.accuracy:.1%} vs {b.accuracy:.1%} at {tok} the generated tokens and "
                f"{sec} the seconds per answer. " + paired.sentence())

    paired = evaluate.paired_comparison(cot, direct)
    lines = [compare(direct, base, "Direct SFT vs the base"),
             compare(cot, direct, "CoT SFT vs direct SFT", paired)]
    kinds = [k for k in MULTI_STEP if k in cot.by_type and k in direct.by_type]
    if kinds:
        multi = evaluate.paired_comparison(subset(cot, kinds), subset(direct, kinds))
        lines.append(f"On the multi-step types ({', '.join(kinds)}; {multi.n} tasks): "
                     + multi.sentence())
    if paired.supported:
        lines.append(
            "Here reasoning paid: the CoT adapter answers more tasks correctly than the "
            "direct-answer adapter trained on the same tasks with the same budget, as LLaVA-CoT "
            "found for an 11B model." if paired.difference > 0 else
            "Here forcing the model to reason first hurt: the direct-answer adapter, trained on "
            "the same tasks with the same budget, answers more tasks correctly — as R1-V "
            "reported for 2B models.")
    else:
        lines.append(f"On these {paired.n} tasks the run cannot tell CoT SFT and direct SFT "
                     "apart: a real difference smaller than the interval above would go unseen.")
    lines += [
        compare(beam, same_tasks(cot, beam), "Beam search vs greedy CoT SFT"
                + ("" if beam.n == cot.n else f" on the same {beam.n} tasks")),
        f"Format compliance after CoT SFT: {cot.format_rate:.1%} of free generations have all "
        f"four stages, in order, closed and non-empty; with beam search {beam.format_rate:.1%} "
        "closed every stage themselves.",
    ]
    by_name = {r.name: r for r in results[4:]}
    for name, what in ((BEST_OF_N, "Best-of-N"), (SWIRES, "SWIRES")):
        if name in by_name:
            r = by_name[name]
            lines.append(compare(r, same_tasks(cot, r), f"{what} vs greedy CoT SFT"
                                 + ("" if r.n == cot.n else f" on the same {r.n} tasks")))
    if UNTAGGED in by_name:
        lines.append(compare(cot, by_name[UNTAGGED], "CoT SFT vs the same traces without tags"))
    return lines


def _ratio(a: float, b: float) -> str:
    """``a / b`` as ``"40x"`` (``"1.3x"`` below 10, ``"?x"`` when ``b`` is 0).

    >>> _ratio(80, 2), _ratio(0.013, 0.01), _ratio(1, 0)
    ('40x', '1.3x', '?x')
    """
    if not b:
        return "?x"
    r = a / b
    return f"{r:.1f}x" if r < 10 else f"{r:.0f}x"


def same_tasks(result: EvalResult, other: EvalResult) -> EvalResult:
    """``result`` re-scored on the tasks ``other`` answered (e.g. greedy CoT on the beam-search
    subset), from its per-task rows."""
    if result.n == other.n:
        return result
    ids = {row["task_id"] for row in other.rows}
    rows = [row for row in result.rows if row["task_id"] in ids]
    return _rescored(result, rows, f"on the {len(rows)} tasks of {other.name}")


def _rescored(result: EvalResult, rows: list[dict], what: str) -> EvalResult:
    """``result``'s scores recomputed on ``rows`` (a part of its per-task rows); ``what`` is
    added to its note."""
    by_type: dict[str, list[bool]] = {}
    for row in rows:
        by_type.setdefault(row["task_type"], []).append(row["correct"])
    n = len(rows)
    return EvalResult(
        name=result.name, n=n, accuracy=round(sum(r["correct"] for r in rows) / n, 4),
        by_type={k: round(sum(v) / len(v), 4) for k, v in sorted(by_type.items())},
        format_rate=round(sum(r["well_formed"] for r in rows) / n, 4),
        mean_tokens=round(sum(r["tokens"] for r in rows) / n, 2),
        mean_seconds=round(sum(r["seconds"] for r in rows) / n, 4), rows=rows,
        note=f"{result.note}; {what}")


def _format_check(results: Sequence[EvalResult]) -> list[str]:
    from cotlib import stages

    out = []
    for r in results:
        bad: Counter = Counter()
        for row in r.rows:
            if not row["well_formed"]:
                parsed = stages.parse(row["output"])
                kinds = sorted(parsed.problem_kinds()) or ["a stage not closed by the model"]
                bad[kinds[0]] += 1
        problems = ", ".join(f"{k} {v}" for k, v in bad.most_common()) or "none"
        out.append(f"| {r.name} | {r.format_rate:.1%} | {problems} |")
    return out


def recorded_recipe(config: dict[str, Any]) -> dict[str, Any]:
    """The training recipe of a config recorded in ``experiment.json``: its ``train`` entry, or
    the config itself for files written before the recipe was nested (the training fields were
    then beside the others).

    >>> recorded_recipe({"train": {"lora_r": 64}, "seed": 0}), recorded_recipe({"lora_r": 16})
    ({'lora_r': 64}, {'lora_r': 16})
    """
    return config.get("train", config)


def write_report(experiment: Experiment) -> Path:
    """Write ``eval.json``, ``overhead.png``, ``by_type.png`` and ``report.md`` (the table the
    report shows is the one computed from ``eval.json``'s results)."""
    import matplotlib

    if "matplotlib.pyplot" not in __import__("sys").modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cotlib import evaluate

    run, results, info = experiment.run, experiment.results, experiment.info
    evaluate.save_results(results, run / "eval.json")
    if experiment.controls:
        evaluate.save_results(list(experiment.controls.values()), run / "controls.json")
    (run / "experiment.json").write_text(json.dumps(info, indent=1, default=str))
    for name, plot in (("overhead.png", evaluate.plot_overhead),
                       ("by_type.png", evaluate.plot_by_type)):
        fig = plot(results, run / name)
        plt.close(fig)
    cfg, tr, m = info["config"], info["training"], info["machine"]
    recipe = recorded_recipe(cfg)
    n_params = info.get("base_parameters")
    params = f"({n_params:,} parameters)" if n_params else ""
    size = f"{n_params / 1e6:.1f}M-parameter" if n_params else "small"
    timing = ", ".join(f"{k.replace('_', ' ')} {v:.0f} s" for k, v in info["timings"].items())
    lines = [
        "# cotlib demo: the miniature LLaVA-CoT experiment", "",
        f"Base model `{info['base']}` {params}. {info['train_tasks']} training tasks "
        f"({cfg['extra_train_tasks']} generated with seed {EXTRA_TASK_SEED}), "
        f"{info['test_tasks']} held-out test tasks (data/tasks/{info.get('test_split', 'test')})."
        , "",
        f"- teacher: the local teacher wrote {info['traces']} traces; the filter kept "
        f"{info['kept']} (rejected: {info['rejected'] or 'none'}). Both adapters train on the "
        "tasks of the kept traces: four-stage completions for CoT SFT, the answer alone for "
        "direct SFT.",
        f"- training (same data and budget for both): LoRA r={recipe['lora_r']} (+ "
        f"{', '.join(recipe['modules_to_save'] or ()) or 'nothing'} trained in full), learning "
        "rate " + (f"{recipe['learning_rate']}" if not cfg.get("direct_learning_rate") else
                   f"{recipe['learning_rate']} (CoT) and {cfg['direct_learning_rate']} (direct), "
                   "each picked on the validation split (scripts/tune_lr.py)")
        + f", {recipe['epochs']:g} epochs, batch {recipe['batch_size']}"
        f"{' of similar lengths' if recipe.get('group_by_length') else ''}"
        f"{' (the two runs side by side, one process each)' if info.get('side_by_side') else ''}; "
        + "; ".join(f"{k}: {v['steps']} steps, {v['seconds']:.0f} s" + (
            f", loss {v['loss_first']:.3f} -> {v['loss_last']:.3f}"
            if v["loss_first"] is not None else "") + (
            " (**the training loss rose**: this run made the model worse on its own training "
            "data, so its row measures the recipe, not the method)" if v.get("loss_rose") else "")
            for k, v in tr.items()),
        "", "## Results", "",
        evaluate.comparison_table(results), "",
        f"Tokens and seconds are per answer, on {m['device']} with {m['torch_threads']} torch "
        f"thread(s). Free generation decoded {cfg.get('answer_batch', 1)} tasks per batch: its "
        "seconds are a batch's time divided by its size (one user alone waits longer); beam "
        "search ran one task at a time. The last two columns compare with the first row.", "",
    ]
    lines += [f"- **{r.name}**: {r.note}" for r in results if r.note]
    lines += ["", "![accuracy against tokens and seconds per answer](overhead.png)", "",
              "## Reading", ""]
    lines += [f"- {s}" for s in reading(results)]
    lines += [
        "- For context: LLaVA-CoT reports that four-stage SFT (and then stage-level beam "
        "search) improves an 11B model; R1-V and others found that for ~2B models forcing a "
        f"chain of thought can lose to direct answers. A {size} model trained for minutes is far "
        "from both: read this as a measurement of the method on this model, not as evidence for "
        "or against it at scale.",
        "", "## Accuracy by task type", "", evaluate.by_type_table(results), "",
        "![accuracy by task type](by_type.png)", "",
        *_controls_section(experiment), *_attribution_section(info.get("attribution")),
        "## Format and stage lengths", "",
        "| system | format compliance | first problem of the others |", "|---|---|---|",
        *_format_check(results), "",
        "Mean words per stage:", "", evaluate.stage_table(results), "",
        "## Run", "",
        f"- times: {timing}; total {info['total_seconds']:.0f} s",
        f"- machine: {m['device']}, {m['cpu_count']} CPU cores, load average "
        f"{m['load_average']} at the end",
        "- files: tasks/, traces.jsonl, verdicts.jsonl, dataset/, dataset_direct/, adapter/, "
        "adapter_direct/" + (", dataset_untagged/, adapter_untagged/" if cfg.get("untagged")
                             else "")
        + ", eval.json (every answer), experiment.json, overhead.png, by_type.png",
        "",
    ]
    path = run / "report.md"
    path.write_text("\n".join(lines))
    return path


def _controls_section(experiment: Experiment) -> list[str]:
    from cotlib import evaluate

    if not experiment.controls:
        return []
    c = experiment.controls
    gap = 100 * (c["real"].accuracy - c["blank"].accuracy) if "blank" in c else float("nan")
    return [
        "## Does the base look at the image?", "",
        "The base's direct answers with each task's own image, with another task's image of the "
        "same kind (shapes or bars), and with a blank white image; and the most common answer of "
        "each task type among the training tasks, which needs no model at all. Accuracy in % "
        "(95% interval).", "",
        evaluate.controls_table(c), "",
        f"Real images minus blank images: {gap:+.1f} points. A model that scores about the same "
        "without the picture is answering from the question's wording.", ""]


def _attribution_section(table: dict | None) -> list[str]:
    if not table:
        return []
    wrong = table["n"] - table["correct"]
    cap = table["captions"]
    items = cap["items_right"] + cap["items_missed"]
    stages_ = ", ".join(f"{k} {v}" for k, v in table["wrong_by_stage"].items())
    rows = ["| task type | " + " | ".join(table["wrong_by_stage"]) + " |",
            "|---|" + "---:|" * len(table["wrong_by_stage"])]
    rows += [f"| {kind} | " + " | ".join(str(v) for v in counts.values()) + " |"
             for kind, counts in table["by_type"].items()]
    return [
        "## Where the wrong CoT answers went wrong", "",
        "Each CoT SFT answer checked stage by stage against the known scene "
        "(`cotlib.attribution`): CAPTION read back into a scene; REASONING re-solved on the "
        "model's own caption; CONCLUSION against the reasoning's result. A wrong answer goes to "
        "the first stage that failed: format (no CAPTION or CONCLUSION to read), perception (the "
        "caption's scene gives another answer), reasoning (it did not reach what its own "
        "caption implies), copy (the CONCLUSION differs from the reasoning's result).", "",
        f"- {table['correct']} of {table['n']} right; the {wrong} wrong: {stages_}.",
        f"- Captions read: {cap['read']}; exactly right: {cap['exact']}; scene items named right "
        f"{cap['items_right']} of {items}"
        + (f" ({cap['items_right'] / items:.1%})" if items else "")
        + f", invented {cap['items_invented']}.", "", *rows, ""]


def table_matches_report(run: str | os.PathLike) -> bool:
    """True when ``report.md`` contains the comparison table computed from ``eval.json`` (the
    report's numbers are the measured ones)."""
    from cotlib import evaluate

    run = Path(run)
    table = evaluate.comparison_table(evaluate.load_results(run / "eval.json"))
    return table in (run / "report.md").read_text()


"""The experiment's steps, each reading and writing the run folder: tasks
(:func:`prepare_tasks`), traces (:func:`make_traces`), filter and datasets
(:func:`filter_and_build`), the two LoRA runs (:func:`train_adapter`, :func:`train_both`), and
:func:`run_experiment`, which calls them in order, then answers and reports
(:mod:`cotlib.experiment.answering`, :mod:`cotlib.experiment.report`)."""

from __future__ import annotations

import os
import platform
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from cotlib import env
from cotlib.evaluate import EvalResult
from cotlib.experiment.answering import evaluate_systems
from cotlib.experiment.config import (
    EXTRA_TASK_SEED,
    SYSTEMS,
    UNTAGGED,
    Experiment,
    ExperimentConfig,
    ExperimentError,
    base_folder,
)
from cotlib.experiment.report import write_report

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

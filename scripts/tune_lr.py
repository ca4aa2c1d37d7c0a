"""Pick each adapter's learning rate on the validation split: the experiment's "same data, same
budget" with a rate at which each variant trains.

For every learning rate of a small grid it trains the CoT or the direct-answer adapter exactly as
``cotlib.experiment`` does (same traces, same epochs and batch), answers the 60 tasks of
``data/tasks/val`` greedily and scores them; it writes ``tuning.json`` and ``tuning.md`` (the grid,
with the training loss's first and last values) into the run folder and prints the pick: the
highest validation accuracy, ties to the smaller rate.

    python scripts/tune_lr.py --variant cot --grid 1e-3 2e-3 4e-3 --run runs/tune
    python scripts/tune_lr.py --variant direct --grid 2.5e-4 5e-4 1e-3 2e-3 --run runs/tune

Two processes (one per variant, one thread each) share a 2-core machine well.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from cotlib import data, env, evaluate, experiment, options, synth, train


def prepare(run: Path, config: experiment.ExperimentConfig) -> dict:
    """Tasks, traces, verdicts and both datasets, made once per run folder and reused."""
    if (run / "dataset_direct").exists() and (run / "dataset").exists():
        return {"cot": data.load(run / "dataset")["train"],
                "direct": data.load(run / "dataset_direct")["train"]}
    tasks, _ = experiment.prepare_tasks(run, config)
    records = experiment.make_traces(tasks, run, config)
    return experiment.filter_and_build(records, tasks, run)


@dataclass
class TuneSettings:
    """The script's settings, one option each (help in :data:`HELP`)."""

    variant: Literal["cot", "direct"]
    grid: list[float]
    run: str = "runs/tune"
    base: str | None = None
    threads: int = 1
    fast: bool = False
    lora_only: bool = False


HELP = {
    "variant": "the adapter to tune: CoT SFT or direct SFT",
    "grid": "learning rates to try",
    "run": "run folder: tasks, traces and datasets (made once, reused), adapters, tuning.json",
    "base": "base model folder (default: data/base)",
    "threads": "torch threads",
    "fast": "seconds-scale settings (a smoke test)",
    "lora_only": "train LoRA alone (no modules_to_save such as lm_head in full)",
}
OPTIONS = options.field_options(TuneSettings, HELP)


def build_parser() -> argparse.ArgumentParser:
    """The script's options, one per :class:`TuneSettings` field, defaults in ``--help``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_options(ap, TuneSettings, OPTIONS, show_defaults=True)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = options.from_args(build_parser().parse_args(argv), TuneSettings, OPTIONS)
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    settings = experiment.ExperimentConfig.fast if args.fast else experiment.ExperimentConfig
    config = replace(settings(base=args.base), threads=args.threads, side_by_side=False)
    if args.lora_only:
        config = replace(config, train=replace(config.train, modules_to_save=None))
    base = experiment.base_folder(config.base)
    built = prepare(run, config)
    val = synth.load_split(env.DATA_DIR / "tasks" / "val")[: 8 if args.fast else None]
    budget = config.max_new_tokens if args.variant == "cot" else config.direct_max_new_tokens
    rows = []
    for lr in args.grid:
        out = run / f"{args.variant}{'_lora_only' if args.lora_only else ''}_lr{lr:g}"
        t0 = time.perf_counter()
        result = experiment.train_adapter(built[args.variant], base, out,
                                          replace(config, train=replace(
                                              config.train, learning_rate=lr)), verbose=False)
        model, processor = train.load_adapter(out, device="cpu", merge=True)
        model.eval()
        answers = experiment.answer_freely(model, processor, val, budget,
                                           batch_size=config.answer_batch)
        scored = evaluate.score_answers(f"{args.variant} lr {lr:g}", val, answers)
        losses = [v for _, v in result.losses]
        rows.append({"variant": args.variant + (" (LoRA only)" if args.lora_only else ""),
                     "learning_rate": lr, "val_accuracy": scored.accuracy,
                     "val_interval": evaluate.accuracy_interval(scored),
                     "format_rate": scored.format_rate, "loss_first": losses[0] if losses else None,
                     "loss_last": losses[-1] if losses else None,
                     "loss_rose": experiment.loss_rose(result.losses),
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)
        env.free_memory(model)
    path = run / "tuning.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    # a later call adds its rates to the variant's grid (a rate run again replaces its row)
    done = {r["learning_rate"] for r in rows}
    key = args.variant + ("_lora_only" if args.lora_only else "")
    rows = sorted([r for r in old.get(key, {}).get("grid", [])
                   if r["learning_rate"] not in done] + rows, key=lambda r: r["learning_rate"])
    best = max(rows, key=lambda r: (r["val_accuracy"], -r["learning_rate"]))
    old[key] = {"grid": rows, "pick": best["learning_rate"], "epochs": config.train.epochs,
                         "batch": config.train.batch_size, "val_tasks": len(val), "base": str(base)}
    path.write_text(json.dumps(old, indent=1))
    lines = ["| variant | learning rate | val accuracy (95% interval) | format | "
             "loss first -> last |", "|---|---:|---|---:|---|"]
    for v in old.values():
        for r in v["grid"]:
            lo, hi = r["val_interval"]
            loss = ("not logged" if r["loss_first"] is None else
                    f"{r['loss_first']:.3f} -> {r['loss_last']:.3f}"
                    + (" (rose)" if r["loss_rose"] else ""))
            lines.append(f"| {r['variant']} | {r['learning_rate']:g} | {r['val_accuracy']:.1%} "
                         f"({lo:.1%}–{hi:.1%}) | {r['format_rate']:.1%} | {loss} |")
    (run / "tuning.md").write_text("\n".join(lines) + "\n")
    print(f"pick for {args.variant}: learning rate {best['learning_rate']:g} "
          f"(val accuracy {best['val_accuracy']:.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

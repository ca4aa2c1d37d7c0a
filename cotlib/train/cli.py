"""The command line, ``python -m cotlib.train`` (also the entry point for ``accelerate launch -m
cotlib.train``)."""

from __future__ import annotations

import argparse
import sys

from cotlib import models
from cotlib.train.dataset import load_dataset_any, synthetic_traces
from cotlib.train.memory import HARDWARE_PRESETS
from cotlib.train.run import train
from cotlib.train.settings import TrainError, TrainSettings, resolve_model


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m cotlib.train``.

    >>> build_parser().parse_args(["--dataset", "d", "--max-steps", "3"]).max_steps
    3
    """
    p = argparse.ArgumentParser(
        prog="python -m cotlib.train",
        description="LoRA SFT of a VLM on four-stage traces (runs under accelerate launch too).")
    p.add_argument("--dataset", required=True,
                   help="save_to_disk folder, or 'synthetic' (traces rendered from the shipped "
                        "train split)")
    p.add_argument("--model", default=TrainSettings.model,
                   help="preset name, hub id, folder, or "
                   + " / ".join(f"tiny-{f}" for f in models.FAMILIES))
    p.add_argument("--output", default=TrainSettings.output_dir)
    p.add_argument("--preset", default="auto", choices=["auto", *HARDWARE_PRESETS])
    p.add_argument("--epochs", type=float, default=TrainSettings.epochs)
    p.add_argument("--max-steps", type=int, default=-1)
    p.add_argument("--learning-rate", type=float, default=TrainSettings.learning_rate)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--grad-accum", type=int)
    p.add_argument("--longest-edge", type=int)
    p.add_argument("--image-splitting", choices=["on", "off"])
    p.add_argument("--gradient-checkpointing", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--qlora", action="store_true")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--adapt-vision", action="store_true")
    p.add_argument("--group-by-length", action="store_true",
                   help="batch rows of similar length (less padding)")
    p.add_argument("--logging-steps", type=int, default=5)
    p.add_argument("--save-steps", type=int, default=100)
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--on-bad-image", choices=["skip", "raise"], default="skip")
    p.add_argument("--rows", type=int, help="use only the first N rows")
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, train, print where the adapter went. Rank 0 builds shared files first."""
    from accelerate import PartialState

    args = build_parser().parse_args(argv)
    state = PartialState()
    try:
        with state.main_process_first():  # tiny model and dataset built once, then reused
            dataset = synthetic_traces() if args.dataset == "synthetic" else load_dataset_any(
                args.dataset)
            model = resolve_model(args.model)
    except TrainError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.rows:
        dataset = dataset.select(range(min(args.rows, len(dataset))))
    onoff = {"on": True, "off": False, None: None}
    settings = TrainSettings(
        model=model, output_dir=args.output, preset=args.preset, epochs=args.epochs,
        max_steps=args.max_steps, learning_rate=args.learning_rate, batch_size=args.batch_size,
        grad_accum=args.grad_accum, longest_edge=args.longest_edge,
        do_image_splitting=onoff[args.image_splitting],
        gradient_checkpointing=("auto" if args.gradient_checkpointing == "auto"
                                else onoff[args.gradient_checkpointing]),
        qlora=True if args.qlora else None, lora_r=args.lora_r, adapt_vision=args.adapt_vision,
        group_by_length=args.group_by_length, logging_steps=args.logging_steps,
        save_steps=args.save_steps, resume=args.resume, seed=args.seed,
        on_bad_image=args.on_bad_image)
    try:
        result = train(dataset, settings, verbose=state.is_main_process)
    except TrainError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if state.is_main_process:
        losses = result.losses
        print(f"adapter, processor and training card in {result.output_dir} "
              f"({result.seconds:.1f} s, {state.num_processes} process(es); loss "
              f"{losses[0][1] if losses else float('nan'):.3f} -> "
              f"{losses[-1][1] if losses else float('nan'):.3f})")
    return 0

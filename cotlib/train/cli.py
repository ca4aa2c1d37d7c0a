"""The command line, ``python -m cotlib.train`` (also the entry point for ``accelerate launch -m
cotlib.train``). Its training options are built from :class:`TrainSettings`' fields
(:data:`SETTINGS_OPTIONS`, through :mod:`cotlib.options`): each one's type and default are the
field's, declared once."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Any

from cotlib import models, options
from cotlib.train.dataset import load_dataset_any, synthetic_traces
from cotlib.train.memory import BYTES, HARDWARE_PRESETS
from cotlib.train.run import train
from cotlib.train.settings import TrainError, TrainSettings, resolve_model

#: The options that set a :class:`TrainSettings` field: (flag, field, help, argparse arguments
#: beyond the ones the field's type gives). Every field but ``extra`` (more ``SFTConfig`` fields,
#: from Python only) has one.
SETTINGS_OPTIONS: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("--model", "model", "preset name, hub id, folder, or "
     + " / ".join(f"tiny-{f}" for f in models.FAMILIES), {}),
    ("--output", "output_dir", "folder for the adapter, its processor and training card", {}),
    ("--preset", "preset", "hardware preset (auto: from this machine)",
     {"choices": ["auto", *HARDWARE_PRESETS]}),
    ("--epochs", "epochs", "passes over the dataset", {}),
    ("--max-steps", "max_steps", "stop after this many optimizer steps (-1: epochs decide)", {}),
    ("--learning-rate", "learning_rate", "peak learning rate", {}),
    ("--lr-scheduler", "lr_scheduler", "transformers' lr_scheduler_type", {}),
    ("--warmup", "warmup", "warm-up: a fraction of the steps, or a step count if >= 1", {}),
    ("--batch-size", "batch_size", "rows per device and step (None: the preset's)", {}),
    ("--grad-accum", "grad_accum", "gradient accumulation steps (None: the preset's, or an "
     "effective batch of 16 with --batch-size on a GPU)", {}),
    ("--longest-edge", "longest_edge", "image resize edge in pixels (None: the preset's)", {}),
    ("--image-splitting", "do_image_splitting", "image tiling (None: the preset's)", {}),
    ("--gradient-checkpointing", "gradient_checkpointing",
     "auto: on when the memory estimate needs it", {}),
    ("--qlora", "qlora", "4-bit base weights, CUDA only (None: the preset's)", {}),
    ("--dtype", "dtype", "None: by hardware (bf16 Ampere+, fp16 T4, fp32 CPU)",
     {"choices": sorted(BYTES)}),
    ("--lora-r", "lora_r", "LoRA rank", {}),
    ("--lora-alpha", "lora_alpha", "LoRA alpha (None: twice the rank)", {}),
    ("--lora-dropout", "lora_dropout", "LoRA dropout", {}),
    ("--adapt-vision", "adapt_vision", "put LoRA on the vision tower too", {}),
    ("--modules-to-save", "modules_to_save", "modules trained in full, e.g. lm_head",
     {"metavar": "MODULE"}),
    ("--max-length", "max_length", "cut rows at this many tokens (None: never cut)", {}),
    ("--group-by-length", "group_by_length", "batch rows of similar length (less padding)", {}),
    ("--logging-steps", "logging_steps", "log the loss every N steps", {}),
    ("--save-steps", "save_steps", "checkpoint every N steps", {}),
    ("--save-total-limit", "save_total_limit", "checkpoints kept", {}),
    ("--resume", "resume", "continue from the latest checkpoint, or from CHECKPOINT",
     {"nargs": "?", "const": True, "type": str, "metavar": "CHECKPOINT"}),
    ("--seed", "seed", "random seed (data order, LoRA init)", {}),
    ("--on-bad-image", "on_bad_image", "what an unreadable image does",
     {"choices": ["skip", "raise"]}),
    ("--dataloader-workers", "dataloader_workers", "None: 0 on a CPU, up to 4 on a GPU", {}),
    ("--cpu-threads", "cpu_threads", "torch threads on a CPU (None: 1 for tiny models, else "
     "torch's)", {}),
)

def _options() -> list[options.Option]:
    """:data:`SETTINGS_OPTIONS` as :mod:`cotlib.options` takes them: each one's dest is the
    field's name."""
    return [(flag, name, text, {"dest": name} | more)
            for flag, name, text, more in SETTINGS_OPTIONS]


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m cotlib.train``: the dataset, then one option per
    :class:`TrainSettings` field (:data:`SETTINGS_OPTIONS`); ``--help`` shows each default.

    >>> args = build_parser().parse_args(["--dataset", "d", "--max-steps", "3", "--qlora"])
    >>> args.max_steps, args.qlora, args.lora_r
    (3, True, 16)
    """
    p = argparse.ArgumentParser(
        prog="python -m cotlib.train",
        description="LoRA SFT of a VLM on four-stage traces (runs under accelerate launch too).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", required=True,
                   help="save_to_disk folder, or 'synthetic' (traces rendered from the shipped "
                        "train split)")
    options.add_options(p, TrainSettings(), _options())
    p.add_argument("--rows", type=int, help="use only the first N rows")
    return p


def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    """The :class:`TrainSettings` that :func:`build_parser`'s options describe (the model as
    given: :func:`main` resolves it).

    >>> settings_from_args(build_parser().parse_args(
    ...     ["--dataset", "d", "--image-splitting", "off"])).do_image_splitting
    False
    """
    return options.from_args(args, TrainSettings(), _options())


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
    settings = replace(settings_from_args(args), model=model)
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

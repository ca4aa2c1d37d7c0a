"""Command line: ``cotlib demo | doctor | teacher serve | generate | train``.

>>> from cotlib.cli import build_parser
>>> build_parser().parse_args(["demo", "--tasks", "2"]).tasks
2
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from cotlib import env, families, options

if TYPE_CHECKING:
    from cotlib.experiment.config import ExperimentConfig


def demo_options() -> tuple[options.Option, ...]:
    """``cotlib demo``'s options that set a field of
    :class:`~cotlib.experiment.ExperimentConfig` (dotted: of its training recipe):
    (flag, field, help). Each parses to None unless given, so the chosen settings (the demo's,
    ``--fast``'s, ``--full``'s) keep their value; ``--help`` shows the demo's.

    >>> [o[:2] for o in demo_options()[:3]]
    [('--base', 'base'), ('--tasks', 'test_tasks'), ('--beam-tasks', 'beam_tasks')]
    """
    from cotlib.experiment.config import ExperimentConfig

    d = ExperimentConfig()
    return (
        ("--base", "base", "base model folder (default: data/base, the shipped base); "
         + " / ".join(f"tiny-{f}" for f in families.names()) + " build a random tiny model"),
        ("--tasks", "test_tasks", f"test tasks to answer (default: all of data/tasks/"
                                  f"{d.test_split})"),
        ("--beam-tasks", "beam_tasks", "test tasks for the search rows: beam, best-of-N, SWIRES "
                                       f"(default: the first {d.beam_tasks}; --full: all)"),
        ("--extra-tasks", "extra_train_tasks",
         "synthetic training tasks generated beyond the shipped 240"),
        ("--epochs", "train.epochs", "LoRA epochs (both adapters)"),
        ("--learning-rate", "train.learning_rate", "peak LoRA learning rate of the CoT adapter"),
        ("--direct-learning-rate", "direct_learning_rate",
         "the direct-answer adapter's (None: --learning-rate)"),
        ("--shipped-train-tasks", "shipped_train_tasks",
         "shipped training tasks used (None: all 240 of data/tasks/train)"),
        ("--test-split", "test_split", "the shipped split the systems are scored on: heldout "
                                       "(330 tasks) or test (120, the notebooks' fast split)"),
        ("--controls", "controls", "score the base also with shuffled and blank images and "
                                   "against the majority answer"),
        ("--beam-n", "beam_n", "candidates per stage in the beam search"),
        ("--best-of-n", "best_of_n", "whole answers sampled for the best-of-N row (0: no row)"),
        ("--swires", "swires", "the SWIRES row (stage-wise retracing search)"),
        ("--untagged", "untagged", "also CoT SFT without stage tags (a third LoRA run; on with "
                                   "--full)"),
        ("--fault-rate", "fault_rate", "share of traces the local teacher breaks, per fault kind"),
        ("--max-new-tokens", "max_new_tokens", "token budget of a CoT answer"),
        ("--direct-max-new-tokens", "direct_max_new_tokens", "token budget of a direct answer"),
        ("--answer-batch", "answer_batch", "test tasks decoded per batch (1: the latency one "
                                           "user waits)"),
        ("--threads", "threads", "torch threads (None: the machine's cores, at most 4)"),
        ("--side-by-side", "side_by_side", "train the two adapters at the same time, the direct "
                                           "one in a second process (None: on a CPU with two or "
                                           "more cores)"),
        ("--seed", "seed", "seed of the teacher's faults, the LoRA runs and the controls"),
    )


def demo_config(args: argparse.Namespace | None = None, *, fast: bool = False,
                full: bool = False) -> ExperimentConfig:
    """The :class:`~cotlib.experiment.ExperimentConfig` that ``cotlib demo`` runs: the demo's
    settings, or ``fast``'s or ``full``'s, with the options given in ``args``
    (:func:`demo_options`; a tiny model's name stays a name).

    >>> demo_config(build_parser().parse_args(["demo", "--tasks", "4", "--epochs", "2"]),
    ...             fast=True).train.epochs
    2.0
    """
    from cotlib.experiment.config import ExperimentConfig

    config = (ExperimentConfig.fast() if fast else ExperimentConfig.full() if full
              else ExperimentConfig())
    return config if args is None else options.from_args(args, config, demo_options())


def build_parser() -> argparse.ArgumentParser:
    from cotlib.experiment.config import ExperimentConfig

    parser = argparse.ArgumentParser(prog="cotlib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="the whole offline pipeline: tasks -> teacher -> filter -> dataset -> LoRA "
        "SFT -> staged inference -> evaluation -> runs/<run>/report.md",
        description="The miniature LLaVA-CoT experiment. Each option sets a field of "
        "cotlib.experiment.ExperimentConfig; one not given keeps the chosen settings' value "
        "(the demo's, --fast's or --full's), and the defaults shown are the demo's.")
    demo.add_argument("--run", default="demo", help="run folder name under runs/ (default: demo)")
    options.add_options(demo, ExperimentConfig(), demo_options(), unset=True)
    demo.add_argument("--fast", action="store_true",
                      help="seconds-scale settings (also with COTLIB_FAST=1)")
    demo.add_argument("--full", action="store_true",
                      help="every row of the paper's table: also CoT SFT without stage tags (a "
                           "third LoRA run), and the searches on every test task (about 30 "
                           "minutes on 2 CPU cores)")

    sub.add_parser("doctor", help="check the setup: versions, GPU, disk, key presence")

    teacher = sub.add_parser("teacher", help="the local OpenAI-compatible teacher")
    teacher.add_argument("action", choices=("serve",))
    teacher.add_argument("rest", nargs=argparse.REMAINDER)

    sub.add_parser("generate", help="generate four-stage traces with a teacher (see --help)")
    sub.add_parser("train", help="LoRA fine-tuning with TRL's SFTTrainer (see --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Subcommands with their own parsers get their arguments untouched (argparse's REMAINDER
    # would not capture a leading option such as `generate --split ...`).
    if argv[:1] == ["generate"]:
        from cotlib import teacher

        return teacher.generate_main(argv[1:]) or 0
    if argv[:1] == ["train"]:
        from cotlib import train

        return train.main(argv[1:]) or 0
    if argv[:2] == ["teacher", "serve"]:
        from cotlib import teacher_server

        return teacher_server.main(argv[2:]) or 0
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        return demo(args.run, fast=args.fast or env.is_fast(), full=args.full, args=args)
    if args.command == "doctor":
        print(env.report())
        print(offline_check())
        return 0
    return 2  # `teacher` without `serve`: argparse has already explained the choices


def offline_check() -> str:
    """What the course needs with no internet: the shipped tasks and base model (checksum
    verified), the cached tiny twins, and Chromium for the browser test — one line each.

    >>> "shipped tasks" in offline_check()
    True
    """
    import os
    import shutil

    from cotlib import models

    where = ("$COTLIB_DATA" if os.environ.get("COTLIB_DATA") else
             "the repository's data/" if env.DATA_DIR == env.REPO_ROOT / "data" else
             "installed package data")
    lines = [f"data folder  : {env.DATA_DIR} ({where})"]
    counts = {}
    for split in ("train", "val", "test"):
        path = env.DATA_DIR / "tasks" / split / "tasks.jsonl"
        counts[split] = len(path.read_text().splitlines()) if path.exists() else 0
    ok = all(counts.values())
    lines.append(f"shipped tasks: {'ok' if ok else 'MISSING'} "
                 f"({', '.join(f'{k} {v}' for k, v in counts.items())})"
                 + ("" if ok else " - restore data/ with git checkout data"))
    if not (env.BASE_DIR / "config.json").exists():
        lines.append("shipped base : MISSING data/base - git checkout data/base, or rebuild it "
                     "with python scripts/pretrain_base.py")
    else:
        try:
            models.verify_checksum(env.BASE_DIR)
            lines.append("shipped base : ok (checksum verified)")
        except models.ModelLoadError as err:
            lines.append(f"shipped base : {err}")
    cache = models.tiny_cache_dir() / "tiny"
    cached = [f for f in models.FAMILIES if any(cache.glob(f"{f}-*/cotlib_tiny.json"))]
    lines.append(f"tiny twins   : {', '.join(cached) or 'none cached yet'} "
                 "(built offline on first use, seconds)")
    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")
                    if shutil.which(b)), None)
    lines.append(f"chromium     : {browser or 'not found (only the browser test needs it: '}"
                 + ("" if browser else "apt-get install chromium)"))
    return "\n".join(lines)


def demo(run: str = "demo", *, fast: bool = False, full: bool = False,
         args: argparse.Namespace | None = None) -> int:
    """The whole offline pipeline on the embedded defaults (:mod:`cotlib.experiment`): writes
    ``runs/<run>/report.md`` with the systems' table and figures. ``full``: every row
    (:meth:`cotlib.experiment.ExperimentConfig.full`); ``args``: ``cotlib demo``'s options
    (:func:`demo_config`). Returns the exit code."""
    from dataclasses import replace

    from transformers.utils import logging as hf_logging

    from cotlib import evaluate, experiment

    if fast and full:
        print("error: --fast and --full exclude each other (fast mode: seconds-scale settings; "
              "--full: every row at the demo's scale); pick one", file=sys.stderr)
        return 1
    config = demo_config(args, fast=fast, full=full)
    if config.base is not None and config.base.startswith("tiny-"):
        from cotlib import models

        family = config.base[len("tiny-"):]
        if family not in models.FAMILIES:
            use = " or ".join(f"tiny-{f}" for f in models.FAMILIES)
            print(f"error: unknown tiny family {family!r}; use {use}", file=sys.stderr)
            return 1
        config = replace(config, base=str(models.tiny(family)))
    mode = ("fast mode (seconds-scale settings)" if fast else "every row (--full)" if full
            else "the demo's settings")
    print(f"cotlib demo: the miniature LLaVA-CoT experiment, {mode}; base "
          f"{config.base or env.BASE_DIR}")
    hf_logging.disable_progress_bar()  # no "Loading weights" bar for every model load
    try:
        result = experiment.run_experiment(config, run)
    except experiment.ExperimentError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        hf_logging.enable_progress_bar()
    print()
    print(evaluate.comparison_table(result.results))
    print(f"\nreport: {result.report} (figures and every answer next to it)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

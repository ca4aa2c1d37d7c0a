"""Command line: ``cotlib demo | doctor | teacher serve | generate | train``.

>>> from cotlib.cli import build_parser
>>> build_parser().parse_args(["demo", "--tasks", "2"]).tasks
2
"""

from __future__ import annotations

import argparse
import sys

from cotlib import env, families


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cotlib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="the whole offline pipeline: tasks -> teacher -> filter -> dataset -> LoRA "
        "SFT -> staged inference -> evaluation -> runs/<run>/report.md")
    demo.add_argument("--run", default="demo", help="run folder name under runs/ (default: demo)")
    demo.add_argument("--base", default=None,
                      help="base model folder (default: data/base, the shipped base); "
                           + " / ".join(f"tiny-{f}" for f in families.names())
                           + " build a random tiny model")
    demo.add_argument("--tasks", type=int, default=None,
                      help="test tasks to answer (default: all 330 of data/tasks/heldout)")
    demo.add_argument("--beam-tasks", type=int, default=None,
                      help="test tasks for the search rows: beam, best-of-N, SWIRES (default: "
                           "the first 24; --full: all)")
    demo.add_argument("--extra-tasks", type=int, default=None,
                      help="synthetic training tasks generated beyond the shipped 240")
    demo.add_argument("--epochs", type=float, default=None, help="LoRA epochs (both adapters)")
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
        return demo(args.run, base=args.base, n_tasks=args.tasks, beam_tasks=args.beam_tasks,
                    extra_tasks=args.extra_tasks, epochs=args.epochs,
                    fast=args.fast or env.is_fast(), full=args.full)
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


def demo(run: str = "demo", *, base: str | None = None, n_tasks: int | None = None,
         beam_tasks: int | None = None, extra_tasks: int | None = None,
         epochs: float | None = None, fast: bool = False, full: bool = False) -> int:
    """The whole offline pipeline on the embedded defaults (:mod:`cotlib.experiment`): writes
    ``runs/<run>/report.md`` with the systems' table and figures. ``full``: every row
    (:meth:`cotlib.experiment.ExperimentConfig.full`). Returns the exit code."""
    from dataclasses import replace

    from transformers.utils import logging as hf_logging

    from cotlib import evaluate, experiment

    if fast and full:
        print("error: --fast and --full exclude each other (fast mode: seconds-scale settings; "
              "--full: every row at the demo's scale); pick one", file=sys.stderr)
        return 1
    config = (experiment.ExperimentConfig.fast() if fast else experiment.ExperimentConfig.full()
              if full else experiment.ExperimentConfig())
    overrides = {"base": base, "test_tasks": n_tasks, "beam_tasks": beam_tasks,
                 "extra_train_tasks": extra_tasks}
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    if epochs is not None:  # the training recipe's (ExperimentConfig.train)
        config = replace(config, train=replace(config.train, epochs=epochs))
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

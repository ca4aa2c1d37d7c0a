"""``cotlib generate``: the command line of a generation run."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict

from cotlib import synth
from cotlib.teacher.client import TeacherConfig, TeacherError, redact
from cotlib.teacher.prompt import MODES
from cotlib.teacher.run import run_generation

# -----------------------------------------------------------------------------
# command line: cotlib generate ...


def build_parser() -> argparse.ArgumentParser:
    """The ``cotlib generate`` options, with the :class:`TeacherConfig` defaults.

    >>> args = build_parser().parse_args(["--split", "data/tasks/train", "--out", "t.jsonl"])
    >>> args.model, args.concurrency, args.max_retries, args.budget
    ('gpt-4o', 8, 4, None)
    """
    p = argparse.ArgumentParser(
        prog="cotlib generate", description="Generate four-stage traces with a teacher."
    )
    p.add_argument("--split", required=True, help="task folder, e.g. data/tasks/train")
    p.add_argument("--out", required=True, help="results JSONL, e.g. runs/x/traces.jsonl")
    p.add_argument("--base-url", default=None, help="OpenAI-compatible server (default: OpenAI)")
    p.add_argument("--model", default="gpt-4o")
    p.add_argument("--mode", default="conditioned", choices=MODES)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--max-retries", type=int, default=4)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per attempt")
    p.add_argument("--budget", type=float, default=None,
                   help="USD ceiling on the file's total cost: a request that could cross it "
                        "(prompt + max tokens at the model's price) is not sent")
    p.add_argument("--max-tokens", type=int, default=1024, help="completion tokens per request")
    p.add_argument("--limit", type=int, default=None, help="only the first N tasks")
    p.add_argument("--api-key-env", default=None, metavar="NAME",
                   help="send the key in this environment variable (to any server). Default: "
                        "OPENAI_API_KEY to api.openai.com only; COTLIB_TEACHER_API_KEY or a "
                        "dummy key to any other --base-url")
    p.add_argument("--prompt-key", action="store_true", help="type the key in if not set")
    p.add_argument("--no-progress", action="store_true")
    return p


def generate_main(argv: list[str] | None = None) -> int:
    """``cotlib generate --split data/tasks/train --out runs/x/traces.jsonl [--base-url ...]``.
    Exit status 0 when every task is done, 1 otherwise (rerun to retry / continue)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    tasks = synth.load_split(args.split)[: args.limit]
    config = TeacherConfig(
        model=args.model, base_url=args.base_url, api_key_env=args.api_key_env,
        prompt_for_key=args.prompt_key, mode=args.mode, concurrency=args.concurrency,
        max_retries=args.max_retries, timeout_s=args.timeout, budget_usd=args.budget,
        max_tokens=args.max_tokens,
    )
    try:
        summary = run_generation(tasks, args.out, config, progress=not args.no_progress)
    except (TeacherError, RuntimeError, ValueError) as err:  # one message, no traceback
        print(f"cotlib generate: {redact(err)}", file=sys.stderr)
        summary = getattr(err, "summary", None)
        if summary is not None:
            print(json.dumps(asdict(summary)))
        return 1
    print(summary)
    print(json.dumps(asdict(summary)))
    return 0 if summary.done + summary.skipped == summary.total else 1

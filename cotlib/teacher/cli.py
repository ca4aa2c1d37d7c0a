"""``cotlib generate``: the command line of a generation run."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from typing import Any

from cotlib import options, synth
from cotlib.teacher.client import TeacherConfig, TeacherError, redact
from cotlib.teacher.prompt import MODES
from cotlib.teacher.run import run_generation

# -----------------------------------------------------------------------------
# command line: cotlib generate ...


#: The ``cotlib generate`` options that set a :class:`TeacherConfig` field: (flag, field, help).
#: Each one's type and default are the field's, declared once in :class:`TeacherConfig`
#: (:mod:`cotlib.options` builds the options).
CONFIG_OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("--base-url", "base_url", "OpenAI-compatible server (None: OpenAI)"),
    ("--model", "model", "the teacher model"),
    ("--mode", "mode", "conditioned: the teacher sees the standard answer; blind: it does not"),
    ("--concurrency", "concurrency", "requests in flight at once"),
    ("--max-retries", "max_retries", "retries after the first attempt"),
    ("--timeout", "timeout_s", "seconds per attempt"),
    ("--budget", "budget_usd", "USD ceiling on the file's total cost: a request that could "
                               "cross it (prompt + max tokens at the model's price) is not sent"),
    ("--max-tokens", "max_tokens", "completion tokens per request"),
    ("--api-key-env", "api_key_env", "send the key in this environment variable (to any "
                                     "server). None: OPENAI_API_KEY to api.openai.com only; "
                                     "COTLIB_TEACHER_API_KEY or a dummy key to any other "
                                     "--base-url"),
    ("--prompt-key", "prompt_for_key", "type the key in if not set"),
)


#: argparse arguments of :data:`CONFIG_OPTIONS` beyond the ones their fields' types give.
_MORE: dict[str, dict[str, Any]] = {"mode": {"choices": MODES}, "api_key_env": {"metavar": "NAME"}}


def _options() -> list[options.Option]:
    """:data:`CONFIG_OPTIONS` as :mod:`cotlib.options` takes them (dests from the flags)."""
    return [(flag, name, text, _MORE.get(name, {})) for flag, name, text in CONFIG_OPTIONS]


def build_parser() -> argparse.ArgumentParser:
    """The ``cotlib generate`` options, with the :class:`TeacherConfig` defaults
    (:data:`CONFIG_OPTIONS`); ``--help`` shows each default.

    >>> args = build_parser().parse_args(["--split", "data/tasks/train", "--out", "t.jsonl"])
    >>> args.model, args.concurrency, args.max_retries, args.timeout, args.budget
    ('gpt-4o', 8, 4, 60.0, None)
    """
    p = argparse.ArgumentParser(
        prog="cotlib generate", description="Generate four-stage traces with a teacher.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--split", required=True, help="task folder, e.g. data/tasks/train")
    p.add_argument("--out", required=True, help="results JSONL, e.g. runs/x/traces.jsonl")
    options.add_options(p, TeacherConfig(), _options())
    p.add_argument("--limit", type=int, default=None, help="only the first N tasks")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> TeacherConfig:
    """The :class:`TeacherConfig` that :func:`build_parser`'s options describe.

    >>> config_from_args(build_parser().parse_args(
    ...     ["--split", "s", "--out", "o", "--timeout", "5", "--prompt-key"])).timeout_s
    5.0
    """
    return options.from_args(args, TeacherConfig(), _options())


def generate_main(argv: list[str] | None = None) -> int:
    """``cotlib generate --split data/tasks/train --out runs/x/traces.jsonl [--base-url ...]``.
    Exit status 0 when every task is done, 1 otherwise (rerun to retry / continue)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    tasks = synth.load_split(args.split)[: args.limit]
    try:
        summary = run_generation(tasks, args.out, config_from_args(args),
                                 progress=not args.no_progress)
    except (TeacherError, RuntimeError, ValueError) as err:  # one message, no traceback
        print(f"cotlib generate: {redact(err)}", file=sys.stderr)
        summary = getattr(err, "summary", None)
        if summary is not None:
            print(json.dumps(asdict(summary)))
        return 1
    print(summary)
    print(json.dumps(asdict(summary)))
    return 0 if summary.done + summary.skipped == summary.total else 1

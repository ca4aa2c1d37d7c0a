"""Check that ``infer.generate_ids`` (greedy: transformers' ``model.generate``) gives the texts
and token counts of the hand-written batched loop it replaced (``infer.generate._decode_on_cache``)
on the experiment's free generation (a check, not a test: it prints, and exits 1 on a difference).

    python benchmarks/compare_generate.py --runs /tmp/exp17/runs_demo_0409

For each model — the base with the run's CoT adapter merged (``--cot-tokens`` new tokens), with
its direct adapter merged and the bare base (``--direct-tokens``) — both decode the chat prompts
of every task of ``--split`` in batches of ``--batch``, as ``experiment.answer_freely`` does, and
each row's decoded text and token count are compared.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from cotlib import env, infer, models, synth, train  # noqa: E402
from cotlib.infer.generate import _decode_on_cache  # noqa: E402


def answers(fn, model, processor, tasks, batch: int, max_new_tokens: int):
    """(text, token count) per task, decoded as ``answer_freely`` decodes them; and seconds."""
    tok = processor.tokenizer
    out, t0 = [], time.perf_counter()
    for first in range(0, len(tasks), batch):
        chunk = tasks[first:first + batch]
        prompts = [models.chat_prompt(processor, t.prompt_question()) for t in chunk]
        rows = fn(model, processor, [t.get_image() for t in chunk], prompts,
                  max_new_tokens=max_new_tokens)
        out += [(tok.decode(ids, skip_special_tokens=True).strip(), len(ids)) for ids in rows]
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", required=True, help="a run folder holding adapter/ and "
                        "adapter_direct/")
    parser.add_argument("--split", default=str(env.DATA_DIR / "tasks" / "heldout"))
    parser.add_argument("--batch", type=int, default=40)
    parser.add_argument("--cot-tokens", type=int, default=320)
    parser.add_argument("--direct-tokens", type=int, default=8)
    parser.add_argument("--only", choices=["cot", "direct", "base"], nargs="*")
    parser.add_argument("--json", help="write the per-model counts and first differences here")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    env.quiet_model_loading()
    tasks = synth.load_split(Path(args.split))
    runs = Path(args.runs)
    plan = {"cot": (runs / "adapter", args.cot_tokens),
            "direct": (runs / "adapter_direct", args.direct_tokens),
            "base": (None, args.direct_tokens)}
    report, failed = {}, False
    for name, (folder, limit) in plan.items():
        if args.only and name not in args.only:
            continue
        if folder is None:
            model, processor = models.load_base(dtype="float32", device="cpu")
        else:
            model, processor = train.load_adapter(folder, device="cpu", merge=True)
        old, s_old = answers(_decode_on_cache, model, processor, tasks, args.batch, limit)
        new, s_new = answers(infer.generate_ids, model, processor, tasks, args.batch, limit)
        same_text = sum(a[0] == b[0] for a, b in zip(old, new, strict=True))
        same_len = sum(a[1] == b[1] for a, b in zip(old, new, strict=True))
        diffs = [{"task": i, "old": a, "new": b}
                 for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b]
        failed |= bool(diffs)
        report[name] = {"tasks": len(tasks), "max_new_tokens": limit, "same_text": same_text,
                        "same_tokens": same_len, "tokens": sum(n for _, n in new),
                        "seconds_loop": round(s_old, 1), "seconds_generate": round(s_new, 1),
                        "differences": diffs[:5]}
        print(f"{name}: same text {same_text} of {len(tasks)}, same token count {same_len} of "
              f"{len(tasks)}; {report[name]['tokens']} tokens; loop {s_old:.0f} s, "
              f"model.generate {s_new:.0f} s", flush=True)
        for d in diffs[:2]:
            print(f"  task {d['task']}: loop {d['old']!r}\n    generate {d['new']!r}")
        del model
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark batched greedy decoding: cotlib's ``infer.generate_ids`` against transformers'
``model.generate(do_sample=False)`` (a benchmark, not a test: it prints, asserts nothing).

    python benchmarks/bench_generate.py                        # data/base + runs/demo/adapter, CPU
    python benchmarks/bench_generate.py --adapter none --tasks 16 --threads 1

Both decode the same chat prompts (the experiment's CoT prompt for the first ``--tasks`` test
tasks, ``--batch`` at a time, left-padded by ``models.encode``), greedy, at most
``--max-new-tokens`` new tokens, stopping a row at its end-of-answer token. The model is the
shipped base (data/base) with the CoT adapter merged in, as the experiment answers (the demo run's
``runs/demo/adapter`` when it is there and was trained on data/base; else the bare base). What it
prints, from one run on one device (each method timed ``--repeats`` times, alternating, median):

- whether each row's new tokens are the same for both (cut at the first end-of-answer token);
- tokens/s of each (new tokens up to end-of-answer, summed over rows, per wall second) and their
  ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from cotlib import env, infer, models, synth, train  # noqa: E402
from cotlib.infer.plumbing import pad_id  # noqa: E402


def load(adapter: str, device: str):
    """The model the experiment answers with: the base with ``adapter`` merged (or the base)."""
    folder = ROOT / "runs" / "demo" / "adapter" if adapter == "auto" else (
        None if adapter == "none" else Path(adapter))
    if folder is not None and (folder / "adapter_config.json").exists():
        base = json.loads((folder / "adapter_config.json").read_text()).get(
            "base_model_name_or_path", "")
        if adapter != "auto" or Path(base).resolve() == env.BASE_DIR.resolve():
            model, processor = train.load_adapter(folder, device=device, dtype="float32",
                                                  merge=True)
            return model, processor, f"data/base + adapter {folder} (merged)"
    model, processor = models.load_base(dtype="float32", device=device)
    return model, processor, "data/base (no adapter)"


def with_generate(model, processor, images, prompts, max_new_tokens: int) -> list[list[int]]:
    """transformers' greedy ``generate`` on the left-padded batch, each row cut at its first
    end-of-answer token (the same stop rule as ``generate_ids``)."""
    from transformers import GenerationConfig

    eos = infer.eos_ids(model, processor)
    batch = models.encode(processor, images, prompts, device=infer.device_of(model))
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False,
                              eos_token_id=sorted(eos), pad_token_id=pad_id(processor))
    with torch.inference_mode():
        out = model.generate(**batch, generation_config=config)
    rows = []
    for ids in out[:, batch["input_ids"].shape[1]:].tolist():
        cut = next((i for i, t in enumerate(ids) if t in eos), len(ids))
        rows.append(ids[:cut])
    return rows


def with_generate_ids(model, processor, images, prompts, max_new_tokens: int) -> list[list[int]]:
    return infer.generate_ids(model, processor, images, prompts, max_new_tokens=max_new_tokens)


def timed(fn, model, processor, chunks, max_new_tokens: int) -> tuple[float, list[list[int]]]:
    t0 = time.perf_counter()
    rows: list[list[int]] = []
    for images, prompts in chunks:
        rows += fn(model, processor, images, prompts, max_new_tokens)
    return time.perf_counter() - t0, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", default="auto",
                        help="adapter folder, 'auto' (runs/demo/adapter if trained on data/base) "
                             "or 'none' (default: auto)")
    parser.add_argument("--tasks", type=int, default=32, help="test tasks (default: 32)")
    parser.add_argument("--batch", type=int, default=8, help="batch size (default: 8, as the "
                        "experiment's answer_freely)")
    parser.add_argument("--max-new-tokens", type=int, default=320,
                        help="(default: 320, the experiment's CoT budget)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs each (default: 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    env.quiet_model_loading()
    model, processor, what = load(args.adapter, args.device)
    tasks = synth.load_split(env.DATA_DIR / "tasks" / "test")[:args.tasks]
    chunks = [([t.get_image() for t in tasks[i:i + args.batch]],
               [models.chat_prompt(processor, t.prompt_question())
                for t in tasks[i:i + args.batch]])
              for i in range(0, len(tasks), args.batch)]
    methods = {"infer.generate_ids": with_generate_ids, "model.generate": with_generate}
    print(f"model: {what}; device {args.device}, {torch.get_num_threads()} thread(s); "
          f"{len(tasks)} test tasks, batch {args.batch}, at most {args.max_new_tokens} new tokens, "
          f"torch {torch.__version__}")
    timed(with_generate_ids, model, processor, chunks[:1], 8)  # warm-up
    timed(with_generate, model, processor, chunks[:1], 8)
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    outputs: dict[str, list[list[int]]] = {}
    for r in range(args.repeats):
        order = list(methods) if r % 2 == 0 else list(methods)[::-1]
        for name in order:
            s, rows = timed(methods[name], model, processor, chunks, args.max_new_tokens)
            seconds[name].append(s)
            if name in outputs and outputs[name] != rows:
                print(f"note: {name} gave different tokens on repeat {r + 1}")
            outputs[name] = rows
    a, b = outputs["infer.generate_ids"], outputs["model.generate"]
    same = sum(x == y for x, y in zip(a, b, strict=True))
    print(f"same new tokens: {same} of {len(a)} rows"
          + ("" if same == len(a) else f" (first differing row: "
             f"{next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)})"))
    speed = {}
    for name in methods:
        tokens = sum(len(r) for r in outputs[name])
        median = statistics.median(seconds[name])
        speed[name] = tokens / median
        print(f"{name:>20}: {tokens} tokens, median {median:.2f} s "
              f"({', '.join(f'{s:.2f}' for s in seconds[name])}) -> {speed[name]:.1f} tokens/s")
    print(f"ratio generate_ids / model.generate (tokens/s): "
          f"{speed['infer.generate_ids'] / speed['model.generate']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

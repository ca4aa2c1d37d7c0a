"""Benchmark stage-by-stage decoding (a benchmark, not a test: it prints ratios, asserts nothing).

    python benchmarks/bench_infer.py                               # tiny model, CPU, seconds
    python benchmarks/bench_infer.py --model-config tiny-qwen2_vl
    python benchmarks/bench_infer.py --model-config smolvlm-256m   # SmolVLM-256M size (GPU)

What it measures, in one run on one device (median of --repeats timed runs after a warm-up):

1. one pass      — one uninterrupted greedy ``model.generate`` of as many tokens as the staged
                   answer holds (the reference);
2. cached staged — :func:`cotlib.infer.generate_stages`: image and prompt encoded once, the cache
                   reused from stage to stage;
3. naive staged  — the same with ``reuse_cache=False``: image + prompt + answer so far re-encoded
                   for every stage, as LLaVA-CoT's demo script does;
4. N candidates for one stage from a shared, already encoded prefix: one batched call
   (``state.repeat(N)``) vs N sequential calls.

Goals from the issue: cached staged <= 1.10 x one pass; batched >= 3 x faster than sequential on a
GPU. ``smolvlm-256m`` builds Idefics3 with SmolVLM-256M-Instruct's real sizes (text: 30 layers,
hidden 576, 9 heads / 3 kv heads, vocab 49280; vision: SigLIP-B/16 at 512 px; 64 tokens per tile,
image splitting on: a 512 px image becomes 4x4 tiles + a global view = 1088 image tokens) with
random weights and the course's tiny tokenizer. Random weights never write a closing tag, so every
stage is forced to --tokens-per-stage tokens.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from random_smolvlm import build_random_smolvlm  # noqa: E402  (beside this script)

from cotlib import infer, models, synth  # noqa: E402

CONFIGS = ("tiny-idefics3", "tiny-qwen2_vl", "smolvlm-256m")


def build(name: str, device: str):
    dtype = torch.float32 if device == "cpu" else (
        torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    if name == "smolvlm-256m":
        model, processor = build_random_smolvlm(name, device, dtype)
        tok = processor.tokenizer
        model.generation_config.pad_token_id = tok.pad_token_id
        model.generation_config.eos_token_id = tok.eos_token_id
        model.generation_config.do_sample = False
        return model, processor
    family = name.removeprefix("tiny-")
    return models.load(models.tiny(family), device=device,
                       dtype=str(dtype).removeprefix("torch."))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, repeats: int, device: str) -> float:
    """Median wall-clock seconds of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-config", choices=CONFIGS, default="tiny-idefics3")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tokens-per-stage", type=int, default=32)
    ap.add_argument("--n", type=int, default=4, help="candidates per stage")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for torch (on a busy machine 1 gives steadier timings)")
    ap.add_argument("--image-px", type=int, default=None,
                    help="side of the test image (default: 192 tiny, 512 smolvlm-256m)")
    args = ap.parse_args(argv)

    device, k, n = args.device, args.tokens_per_stage, args.n
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model, processor = build(args.model_config, device)
    build_s = time.perf_counter() - t0
    task = synth.make_tasks(1, seed=0)[0]
    px = args.image_px or (512 if args.model_config == "smolvlm-256m" else 192)
    image = task.get_image().resize((px, px))
    question = task.prompt_question()

    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else None
    threads = torch.get_num_threads()
    where = f" ({gpu})" if gpu else f" (no GPU used for this run; {threads} threads)"
    print(f"device: {device}{where}, dtype {next(model.parameters()).dtype}, "
          f"torch {torch.__version__}")
    print(f"model: {args.model_config}, {models.count_parameters(model)['total'] / 1e6:.1f}M "
          f"parameters, random weights, built in {build_s:.1f} s")

    staged = infer.generate_stages(model, processor, image, question, force_tokens_per_stage=k)
    total = len(staged.completion_ids)
    print(f"prompt: {staged.prompt_tokens} tokens (image included); answer: 4 stages x {k} "
          f"forced tokens + tags = {total} tokens; repeats: {args.repeats} (median)")

    def one_pass():
        infer.generate_one_pass(model, processor, image, question, max_new_tokens=total,
                                min_new_tokens=total)

    def cached():
        infer.generate_stages(model, processor, image, question, force_tokens_per_stage=k)

    def naive():
        infer.generate_stages(model, processor, image, question, force_tokens_per_stage=k,
                              reuse_cache=False)

    prefix = infer.start(model, processor, [image], [question])
    sampling = infer.Sampling(temperature=0.6, top_p=0.9)

    def batched():
        gen = torch.Generator(device=device).manual_seed(0)
        infer.decode_stage(prefix.repeat(n), force_tokens=k, sampling=sampling, generator=gen)

    def sequential():
        gen = torch.Generator(device=device).manual_seed(0)
        for _ in range(n):
            infer.decode_stage(prefix.repeat(1), force_tokens=k, sampling=sampling,
                               generator=gen)

    rows = [("one pass (model.generate)", timed(one_pass, args.repeats, device)),
            ("cached staged", timed(cached, args.repeats, device)),
            ("naive staged (re-encode per stage)", timed(naive, args.repeats, device)),
            (f"{n} candidates, one batched call", timed(batched, args.repeats, device)),
            (f"{n} candidates, {n} sequential calls", timed(sequential, args.repeats, device))]
    sec = dict(rows)
    print()
    print(f"{'what':40s} {'seconds':>9s}")
    for name, s in rows:
        print(f"{name:40s} {s:9.4f}")
    one, cach, nai = rows[0][1], rows[1][1], rows[2][1]
    bat, seq = sec[rows[3][0]], sec[rows[4][0]]
    print()
    print(f"cached staged / one pass       = {cach / one:5.2f}x   (goal <= 1.10)")
    print(f"naive staged / cached staged   = {nai / cach:5.2f}x   (the cost of re-encoding)")
    print(f"sequential / batched ({n} cands) = {seq / bat:5.2f}x   (goal >= 3 on a GPU)")
    if not gpu:
        print("note: CPU run; the batching goal is for a GPU, where a step's cost hardly grows "
              "with the batch.")


if __name__ == "__main__":
    main()

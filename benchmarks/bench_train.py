"""Benchmark LoRA SFT: the course recipe vs TRL's default vision recipe (prints, asserts nothing).

    python benchmarks/bench_train.py                    # CPU: tiny models, about 2 minutes
    python benchmarks/bench_train.py --models smolvlm-256m smolvlm-500m   # GPU: SmolVLM sizes

Side by side, on the same rows (the shipped training split rendered as four-stage traces), the
same model folder, the same image setting and the same per-device batch:

* ``trl-default`` — TRL's own VLM example (``examples/scripts/sft_vlm.py``): the ``messages``
  format, ``SFTConfig`` defaults (gradient checkpointing on the whole model, bf16, loss on every
  token but padding) with ``max_length=None``, and ``--use_peft --lora_target_modules
  all-linear`` (LoRA r=16, alpha 32, dropout 0.05 on every Linear, vision tower included).
  On a CPU, bf16 is switched off (TRL's default cannot run there).
* ``course`` — :func:`cotlib.train.train`: prompt/completion with completion-only loss, LoRA on
  the language model only (the frozen vision tower keeps no activations), gradient checkpointing
  by the memory estimate (off when it fits), data-loader workers on a GPU.
* ``course-ckpt`` — the course recipe with checkpointing forced on (language model only): the
  memory-lean variant.

Each run is its own subprocess (a clean CUDA context / a fresh peak RSS). Timing: samples/s and
tokens/s (non-padding tokens) over ``--steps`` optimizer steps after ``--warmup`` steps; peak
memory: ``torch.cuda.max_memory_allocated`` on a GPU, the process's peak RSS on a CPU. On a CPU
every run uses one torch thread (the tiny matrices run fastest that way; equal for both).

GPU models are Idefics3 built from SmolVLM-256M / -500M-Instruct's real configs (see
REFERENCE.md) with random weights and the course's tiny tokenizer; image settings: 1024 px with
tiling (4 tiles + a global view = 320 image tokens, the T4 preset) and one 512-px view without
tiling (64 tokens). ``--t4`` adds the course recipe at the T4 preset (fp16) for SmolVLM-500M to
check the 16 GB budget, next to the preset's memory estimate.

Goals (GPU): course >= 1.3x trl-default samples/s at <= its peak memory; SmolVLM-500M within a
16 GB T4 at the T4 preset.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from random_smolvlm import SMOLVLM, build_random_smolvlm  # noqa: E402  (beside this script)

RECIPES = ("trl-default", "course", "course-ckpt")


def build_smolvlm(name: str, folder: Path, device: str) -> Path:
    """Save an Idefics3 model with SmolVLM's real sizes (random weights, bf16) + a processor."""
    import torch

    model, processor = build_random_smolvlm(name, device, torch.bfloat16)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------------------------
# One run (in its own process)
# --------------------------------------------------------------------------------------------


def _timer(warmup: int):
    import torch
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def __init__(self):
            self.trainer = None
            self.marks: list[tuple[int, float, int]] = []

        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            tokens = getattr(self.trainer, "_total_train_tokens", 0) if self.trainer else 0
            self.marks.append((state.global_step, time.perf_counter(), tokens))

        def rates(self, batch: int) -> dict:
            (s0, t0, k0), (s1, t1, k1) = self.marks[warmup - 1], self.marks[-1]
            return {"samples_per_s": (s1 - s0) * batch / (t1 - t0),
                    "tokens_per_s": (k1 - k0) / (t1 - t0), "timed_steps": s1 - s0}

    return Timer()


def run_one(spec: dict) -> dict:
    import torch

    from cotlib import env, train

    hw = env.hardware()
    if hw.device == "cpu":
        torch.set_num_threads(1)
    data = train.synthetic_traces(n=spec["rows"])
    if spec.get("long_text"):  # ~500 text tokens per row, what the presets are sized for
        data = data.map(lambda row: {"completion": [{**row["completion"][0], "content": [
            {"type": "text", "text": "\n\n".join([row["completion"][0]["content"][0]["text"]] * 3)}
        ]}]})
    steps = spec["warmup"] + spec["steps"]
    timer = _timer(spec["warmup"])
    out = tempfile.mkdtemp(prefix="bench-train-")
    if spec["recipe"] == "trl-default":
        trainer = _trl_default(spec, data, out, steps, timer, hw)
        if hw.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        timer.trainer = trainer
        trainer.train()
        dtype = str(trainer.model.dtype).removeprefix("torch.")
        image_tokens = None
    else:
        settings = train.TrainSettings(
            model=spec["model"], output_dir=out, max_steps=steps, batch_size=spec["batch"],
            grad_accum=1, longest_edge=spec.get("longest_edge"),
            do_image_splitting=spec.get("splitting"), logging_steps=max(1, steps),
            save_steps=10_000, preset=spec.get("preset", "auto"), dtype=spec.get("dtype"),
            gradient_checkpointing=True if spec["recipe"] == "course-ckpt" else "auto",
            cpu_threads=1)
        prep = train.build_trainer(data, settings, callbacks=[timer], verbose=False)
        timer.trainer = prep.trainer
        if hw.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        prep.trainer.train()
        dtype = prep.resolved.dtype
        image_tokens = prep.resolved.image_tokens
        spec["checkpointing"] = prep.resolved.gradient_checkpointing
        spec["checkpointing_reason"] = prep.resolved.checkpointing_reason
        shape = train.shape_of(prep.trainer.model.get_base_model())
        if not train.is_tiny(prep.model_source):
            # synthetic rows: ~40 prompt + ~150 answer tokens (x3 with long_text)
            seq = image_tokens + 40 + (450 if spec.get("long_text") else 150)
            spec["estimate_gb"] = round(train.estimate_training_memory_gb(
                shape.params, shape.lora_params(16), dtype, spec["batch"], seq, shape.hidden,
                shape.layers, prep.resolved.gradient_checkpointing,
                intermediate=shape.intermediate), 2)
    if hw.device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {**spec, **timer.rates(spec["batch"]), "peak_gb": peak, "dtype": dtype,
            "image_tokens": image_tokens, "device": hw.gpu_name or "cpu"}


def _trl_default(spec, data, out, steps, timer, hw):
    """TRL's example: messages, SFTConfig defaults, max_length=None, all-linear LoRA."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTConfig, SFTTrainer

    from cotlib import train

    source = train.resolve_model(spec["model"])
    processor = AutoProcessor.from_pretrained(source)
    if not train.is_tiny(source) or spec.get("longest_edge"):
        train.set_image_size(processor, spec.get("longest_edge"), spec.get("splitting"))
    dtype = torch.bfloat16 if hw.device == "cuda" else torch.float32  # --dtype bfloat16
    model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype)
    cpu = {"bf16": False, "use_cpu": True} if hw.device == "cpu" else {}
    config = SFTConfig(output_dir=out, max_length=None, per_device_train_batch_size=spec["batch"],
                       max_steps=steps, report_to=[], save_strategy="no", disable_tqdm=True,
                       seed=0, **cpu)
    peft = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                      task_type="CAUSAL_LM")  # TRL's ModelConfig defaults with --use_peft
    return SFTTrainer(model=model, args=config, train_dataset=train.as_messages(data),
                      processing_class=processor, peft_config=peft, callbacks=[timer])


# --------------------------------------------------------------------------------------------
# The side-by-side driver
# --------------------------------------------------------------------------------------------


def plan(args, device: str, folders: dict[str, str]) -> list[dict]:
    if args.models:
        names = args.models
    else:
        names = ["tiny-idefics3", "tiny-qwen2_vl"] if device == "cpu" else list(SMOLVLM)
    specs = []
    for name in names:
        if name.startswith("tiny-"):
            settings = [("native", None, None)]
            if name == "tiny-idefics3":  # 192-px tiles: 384 px -> 2x2 tiles + global view
                settings = [("tiling 384px", 384, True), ("no tiling", None, False)]
        else:
            settings = [("tiling 1024px", 1024, True), ("no tiling 512px", 512, False)]
        settings = [s for s in settings if args.images == "both"
                    or (s[2] is True) == (args.images == "tiling")]
        for label, edge, split in settings:
            for recipe in args.recipes:
                specs.append({"model": folders.get(name, name), "name": name, "image": label,
                              "longest_edge": edge, "splitting": split, "recipe": recipe,
                              "batch": args.batch, "rows": args.rows, "steps": args.steps,
                              "warmup": args.warmup})
    if args.t4 and "smolvlm-500m" in folders:
        specs.append({"model": folders["smolvlm-500m"], "name": "smolvlm-500m",
                      "image": "T4 preset (1024px tiling)", "longest_edge": 1024,
                      "splitting": True, "recipe": "course", "batch": 8, "rows": args.rows,
                      "steps": args.steps, "warmup": args.warmup, "preset": "t4-16gb",
                      "dtype": "float16", "long_text": True})
    return specs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="tiny-idefics3, tiny-qwen2_vl, smolvlm-256m, "
                        "smolvlm-500m (default: tiny on CPU, SmolVLM sizes on GPU)")
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=RECIPES)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rows", type=int, default=240)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (CPU 12, GPU 8)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--images", choices=["both", "tiling", "no-tiling"], default="both")
    parser.add_argument("--t4", action="store_true", help="add SmolVLM-500M at the T4 preset")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print("RESULT " + json.dumps(run_one(json.loads(args.one))), flush=True)
        return 0

    import torch

    from cotlib import env

    device = "cuda" if torch.cuda.is_available() else "cpu"
    print("versions: " + ", ".join(f"{k} {v}" for k, v in env.versions().items()
                                   if k in ("python", "torch", "transformers", "trl", "peft")),
          flush=True)
    args.steps = args.steps or (8 if device == "cuda" else 12)
    folders: dict[str, str] = {}
    work = Path(tempfile.mkdtemp(prefix="bench-train-models-"))
    wanted = args.models or (list(SMOLVLM) if device == "cuda" else [])
    for name in wanted:
        if name in SMOLVLM:
            start = time.perf_counter()
            folders[name] = str(build_smolvlm(name, work / name, device))
            print(f"built {name} (random weights) in {time.perf_counter() - start:.0f} s",
                  flush=True)
        elif name.startswith("tiny-"):
            from cotlib import models

            folders[name] = str(models.tiny(name[5:]))  # build once, before the subprocesses
    if device == "cpu" and not args.models:
        from cotlib import models

        for family in models.FAMILIES:
            folders[f"tiny-{family}"] = str(models.tiny(family))
    results = []
    for spec in plan(args, device, folders):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)],
                              capture_output=True, text=True)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
        if done.returncode or not lines:
            tail = (done.stdout + done.stderr)[-1500:]
            oom = "out of memory" in tail.lower()
            print(f"!! {spec['name']} {spec['image']} {spec['recipe']} failed"
                  f"{' (out of memory)' if oom else ''}:\n{tail}", flush=True)
            results.append({**spec, "failed": "oom" if oom else "error"})
            continue
        result = json.loads(lines[-1][7:])
        result["wall_s"] = round(time.perf_counter() - start, 1)
        results.append(result)
        if args.json:  # after every run, so a cut-off benchmark keeps what it measured
            Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"{result['name']:>14} | {result['image']:<26} | {result['recipe']:<11} | "
              f"{result['samples_per_s']:7.2f} samples/s | {result['tokens_per_s']:9.0f} tok/s | "
              f"peak {result['peak_gb']:6.2f} GB | {result['wall_s']} s", flush=True)
    report(results, device)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def report(results: list[dict], device: str) -> None:
    memory = "peak GPU GB" if device == "cuda" else "peak RSS GB"
    device_name = next((r["device"] for r in results if "device" in r), device)
    print(f"\n## LoRA SFT: course recipe vs TRL default — {device_name}\n")
    print(f"| model | image | recipe | samples/s | tokens/s | {memory} | x samples/s | x memory |"
          " checkpointing | estimate GB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    base = {}
    for r in results:
        if r.get("recipe") == "trl-default" and "failed" not in r:
            base[(r["name"], r["image"])] = r
    for r in results:
        if "failed" in r:
            print(f"| {r['name']} | {r['image']} | {r['recipe']} | failed ({r['failed']}) |"
                  " | | | | | |")
            continue
        b = base.get((r["name"], r["image"]))
        speed = f"{r['samples_per_s'] / b['samples_per_s']:.2f}" if b else "-"
        mem = f"{r['peak_gb'] / b['peak_gb']:.2f}" if b else "-"
        ckpt = "whole model" if r["recipe"] == "trl-default" else (
            "language model" if r.get("checkpointing") else "off")
        recipe = r["recipe"] + (f" ({r['preset']}, {r['dtype']})" if r.get("preset") else "")
        print(f"| {r['name']} | {r['image']} | {recipe} | {r['samples_per_s']:.2f} | "
              f"{r['tokens_per_s']:.0f} | {r['peak_gb']:.2f} | {speed} | {mem} | {ckpt} | "
              f"{r.get('estimate_gb', '-')} |")
    print("\nx = ratio to trl-default on the same model and image setting. Same rows, batch, "
          "model folder; " + ("one torch thread per run on CPU (peak RSS includes ~1 GB of "
                              "imported libraries)." if device == "cpu" else "bf16."))


if __name__ == "__main__":
    if os.environ.get("COTLIB_BENCH_QUIET", "1") == "1":
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    sys.exit(main())

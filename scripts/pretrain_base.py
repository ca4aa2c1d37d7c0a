"""Pretrain the course's tiny base model: a SmolVLM-family (Idefics3) model, from scratch, on
synthetic tasks, answering *directly* (no reasoning stages) and captioning scenes.

It is the course's stand-in for the instruction-tuned base that LLaVA-CoT started from. The design
makes a ~4M-parameter model able to learn on 2 CPU cores:

* scenes are 192 px with a 3x3 grid of 64 px cells; vision patches are 32 px and the connector
  merges 2x2 patches, so each of the 9 image tokens sees exactly one grid cell;
* captions ("Describe the image.", 15% of samples) are mixed with the questions, so the model
  also learns to say what is where — which the CAPTION stage will build on;
* every sample is a fresh synthetic task (no example is seen twice); loss on the answer only.

    python scripts/pretrain_base.py --minutes 100 --out data/base     # the shipped model
    python scripts/pretrain_base.py --short --out /tmp/base-short     # a few minutes, for tests

Writes model + processor (``save_pretrained``), ``training_log.json`` and ``scores.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch

from cotlib import env, models, synth

SPEC = models.TinySpec(hidden=192, layers=4, heads=6, kv_heads=2, vision_hidden=192,
                       vision_layers=3, patch_size=32, vocab_size=1024)
CAPTION_QUESTION = "Describe the image."
TRAIN_SEED_BASE = 10_000_000  # shipped splits use seeds 1e6..3e6+; never overlap


def target_text(task: synth.Task) -> str:
    """What the base model is trained to say: the option letter for MC, else the answer."""
    return task.answer_letter if task.choices else task.answer


def sample(rng: random.Random, step_seed: int, caption_rate: float) -> tuple[synth.Task, str, str]:
    """One training example: (task, question text, target text)."""
    task = synth.make_task(step_seed)
    if rng.random() < caption_rate:
        return task, CAPTION_QUESTION, synth.describe(task.scene)
    return task, task.prompt_question(), target_text(task)


def pixel_batch(images: list) -> dict[str, torch.Tensor]:
    """Pixel values as the Idefics3 processor makes them for 192 px images (no resize needed)."""
    arr = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1) for im in images])
    arr = arr.float()
    pixel_values = (arr / 255.0 - 0.5) / 0.5
    return {
        "pixel_values": pixel_values[:, None],
        "pixel_attention_mask": torch.ones(len(images), 1, *arr.shape[-2:], dtype=torch.bool),
    }


def make_batch(processor, examples: list[tuple[synth.Task, str, str]]) -> dict[str, torch.Tensor]:
    tok = processor.tokenizer
    eos = tok.eos_token
    prompts = [models.chat_prompt(processor, q) for _, q, _ in examples]
    full = [p + " " + t + eos for p, (_, _, t) in zip(prompts, examples)]
    # Expand the image placeholder into image tokens exactly as the processor does.
    expanded_full = [_expand(processor, s) for s in full]
    expanded_prompt = [_expand(processor, s) for s in prompts]
    tok.padding_side = "right"
    batch = tok(expanded_full, return_tensors="pt", padding=True, add_special_tokens=False)
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = -100
    for i, p in enumerate(expanded_prompt):
        n = len(tok(p, add_special_tokens=False)["input_ids"])
        labels[i, :n] = -100
    batch["labels"] = labels
    batch.update(pixel_batch([task.get_image() for task, _, _ in examples]))
    return batch


def _expand(processor, text: str) -> str:
    image_seq = (
        "<fake_token_around_image><global-img>" + "<image>" * processor.image_seq_len
        + "<fake_token_around_image>"
    )
    return text.replace("<image>", image_seq, 1)


def per_sample_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy averaged per sample, then over the batch: a 1-token answer weighs as much as
    a 40-token caption (the default token average would let captions dominate)."""
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits[:, :-1].float()
    target = labels[:, 1:]
    token_loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100,
        reduction="none").view(target.shape)
    mask = (target != -100).float()
    return ((token_loss * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()


@torch.no_grad()
def answer(model, processor, tasks: list[synth.Task], max_new_tokens: int = 4) -> list[str]:
    """Greedy direct answers for ``tasks`` (batched)."""
    out = []
    for i in range(0, len(tasks), 32):
        chunk = tasks[i:i + 32]
        prompts = [models.chat_prompt(processor, t.prompt_question()) for t in chunk]
        batch = models.encode(processor, [t.get_image() for t in chunk], prompts)
        ids = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
        texts = processor.batch_decode(ids[:, batch["input_ids"].shape[1]:],
                                       skip_special_tokens=True)
        out += [t.strip() for t in texts]
    return out


def evaluate(model, processor, tasks: list[synth.Task], majority: dict[str, str]) -> dict:
    """Accuracy per task type against chance and the majority answer of the training split."""
    model.eval()
    preds = answer(model, processor, tasks)
    by_type: dict[str, list] = defaultdict(list)
    for task, pred in zip(tasks, preds):
        by_type[task.task_type].append((task, pred))
    scores = {}
    for kind, rows in sorted(by_type.items()):
        acc = sum(p.lower().rstrip(".") == target_text(t).lower() for t, p in rows) / len(rows)
        maj = sum(target_text(t) == majority[_key(t)][0] for t, _ in rows) / len(rows)
        chance = sum(1 / majority[_key(t)][1] for t, _ in rows) / len(rows)
        scores[kind] = {"n": len(rows), "accuracy": round(acc, 3), "majority": round(maj, 3),
                        "chance": round(chance, 3)}
    model.train()
    return scores


def _key(task: synth.Task) -> tuple[str, bool]:
    return task.task_type, bool(task.choices)


def majority_answers(tasks: list[synth.Task]) -> dict[tuple[str, bool], tuple[str, int]]:
    """For each (task type, multiple choice?): the most common target in ``tasks`` and the number
    of distinct targets (chance = 1 / that number; for multiple choice, the number of letters)."""
    counts: dict[tuple[str, bool], Counter] = defaultdict(Counter)
    for t in tasks:
        counts[_key(t)][target_text(t)] += 1
    out = {}
    for key, c in counts.items():
        n_options = max(len(c), max((len(t.choices) for t in tasks if _key(t) == key and
                                     t.choices), default=0))
        out[key] = (c.most_common(1)[0][0], n_options)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="data/base")
    ap.add_argument("--minutes", type=float, default=100.0, help="wall-clock training budget")
    ap.add_argument("--short", action="store_true", help="a few minutes: shows the curve")
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--caption-rate", type=float, default=0.15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.short:
        args.minutes = min(args.minutes, 4.0)
        args.eval_every = min(args.eval_every, 150)
    torch.set_num_threads(args.threads)
    env.seed_everything(args.seed)
    rng = random.Random(args.seed)
    out = Path(args.out)

    folder = models.tiny("idefics3", out, spec=SPEC, seed=args.seed, rebuild=True)
    model, processor = models.load(folder, dtype="float32", device="cpu")
    model.train()
    n_params = models.count_parameters(model)["total"]
    print(f"model: {n_params:,} parameters; {processor.image_seq_len} image tokens per image")

    # Baselines come from a large sample of the same generator (the 240-task train split is too
    # small to know every answer's frequency).
    majority = majority_answers(synth.make_tasks(3300, seed=5_000_000))
    heldout = synth.make_tasks(220 if not args.short else 110, seed=4_000_000)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01,
                            betas=(0.9, 0.98))
    budget = args.minutes * 60
    est_steps = None
    log = {"losses": [], "evals": [], "args": vars(args), "params": n_params,
           "versions": env.versions(), "hardware": env.hardware().__dict__}
    started = time.perf_counter()
    step, seen, running = 0, 0, None
    while True:
        elapsed = time.perf_counter() - started
        if elapsed > budget:
            break
        if step == 20:
            est_steps = int(budget / (elapsed / 20))
        # warmup then cosine over the estimated number of steps
        total = est_steps or 10**9
        lr = args.lr * min(1.0, (step + 1) / 100) * (
            0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, total)))))
        for group in opt.param_groups:
            group["lr"] = lr
        examples = [sample(rng, TRAIN_SEED_BASE + seen + i, args.caption_rate)
                    for i in range(args.batch)]
        seen += args.batch
        batch = make_batch(processor, examples)
        loss = per_sample_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        step += 1
        if step % 50 == 0:
            log["losses"].append({"step": step, "samples": seen, "loss": round(running, 4),
                                  "seconds": round(time.perf_counter() - started, 1)})
            print(f"step {step} samples {seen} loss {running:.3f} lr {lr:.2e} "
                  f"{time.perf_counter() - started:.0f}s", flush=True)
        if step % args.eval_every == 0:
            scores = evaluate(model, processor, heldout, majority)
            mean = sum(s["accuracy"] for s in scores.values()) / len(scores)
            log["evals"].append({"step": step, "samples": seen, "mean_accuracy": round(mean, 3),
                                 "scores": scores})
            print(f"  eval mean accuracy {mean:.3f}: " + ", ".join(
                f"{k} {v['accuracy']:.2f}/{v['majority']:.2f}" for k, v in scores.items()),
                flush=True)

    log["train_seconds"] = round(time.perf_counter() - started, 1)
    log["steps"], log["samples"] = step, seen
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    test = synth.load_split(env.DATA_DIR / "tasks" / "test")
    final = {"test": evaluate(model, processor, test, majority),
             "heldout": evaluate(model, processor, synth.make_tasks(660, seed=4_000_000),
                                 majority)}
    (folder / "training_log.json").write_text(json.dumps(log, indent=1))
    (folder / "scores.json").write_text(json.dumps(final, indent=1))
    print(json.dumps(final, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Pretrain the course's tiny base model: a SmolVLM-family (Idefics3) model, from scratch, on
synthetic tasks, answering *directly* (no reasoning stages) and captioning scenes.

It is the course's stand-in for the instruction-tuned base that LLaVA-CoT started from. The design
makes a few-million-parameter model learn on 2 CPU cores:

* scenes are 192 px with a 3x3 grid of 64 px cells; the vision patch is one cell (64 px) and the
  connector does not merge patches (``scale_factor=1``), so each of the 9 image tokens is exactly
  one grid cell (``--patch 32`` gives the SmolVLM layout: 32 px patches merged 2x2);
* the model answers with the answer text, also for multiple choice (the course's
  ``evaluate.is_correct`` accepts the option's letter or its text), so it need not learn the
  letter mapping;
* every ``--caption-every``-th batch is captions ("Describe the image."), so the model also learns
  to say what is where, which the CAPTION stage builds on; question batches and caption batches are
  kept apart so short answers are not padded to caption length;
* every sample is a fresh synthetic task (no example is seen twice); loss on the answer only;
* the run is a fixed number of steps with fixed seeds, so it is reproducible.

    python scripts/pretrain_base.py --out data/base   # the shipped model (1 thread, ~1 hour)
    python scripts/pretrain_base.py --short --out /tmp/base-short    # ~1.5 minutes, for tests

Writes model + processor (``save_pretrained``), ``training_log.json``, ``scores.json`` and
``SHA256SUMS`` (see ``cotlib.models.verify_checksum``).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from cotlib import env, evaluate, models, options, synth

CAPTION_QUESTION = "Describe the image."
#: Caption targets for CAPTION_QUESTION (``--caption-format``).
CAPTIONS = {"describe": synth.describe, "listing": synth.listing}
TRAIN_SEED_BASE = 10_000_000  # shipped splits use seeds 1e6..3e6+; never overlap
HELDOUT_SEED = 4  # make_tasks(seed=4) -> task seeds 4e6+i, also disjoint from training
MAJORITY_SEED = 5  # a large sample of the generator for the majority answers


def spec_for(patch: int) -> models.TinySpec:
    """The base model's sizes (text and vision widths 192, 4 + 3 layers)."""
    return models.TinySpec(hidden=192, layers=4, heads=6, kv_heads=2, vision_hidden=192,
                           vision_layers=3, patch_size=patch, vocab_size=1024)


def build(folder: Path, patch: int, seed: int, tiled: bool = False) -> Path:
    """A fresh random base in ``folder``: the course's tiny Idefics3 (same tokenizer, chat template
    and special tokens as ``models.tiny('idefics3')``) with one image token per grid cell.

    ``tiled``: the processor splits each 192 px scene into its nine 64 px cells (Idefics3's image
    splitting, each tile announced by its ``<row_r_col_c>`` text token) plus a 64 px global view,
    one image token each (needs ``patch=64``). Without it, the whole scene is one image whose
    nine 64 px patches become the nine tokens, with nothing in the text to say which is which.

    >>> build(Path("/tmp/base-build-doctest"), 64, 0).name
    'base-build-doctest'
    """
    from transformers import AutoProcessor, Idefics3Config, Idefics3ForConditionalGeneration

    folder = models.tiny("idefics3", folder, spec=spec_for(patch), seed=seed, rebuild=True)
    cell = synth.DEFAULT_CONFIG.cell
    if patch == cell // 2 and not tiled:
        return folder  # models.tiny's layout: 32 px patches merged 2x2 -> 9 tokens
    if patch != cell:
        raise ValueError(f"patch must be {cell} (one cell) or {cell // 2} (merged 2x2)")
    config = Idefics3Config.from_pretrained(folder)
    config.scale_factor = 1
    if tiled:  # one 64 px tile per grid cell (+ a 64 px global view), one token each
        config.vision_config.image_size = cell
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config)
    model.generation_config = Idefics3ForConditionalGeneration.from_pretrained(
        folder).generation_config
    processor = AutoProcessor.from_pretrained(folder)
    processor.image_seq_len = 1 if tiled else (synth.DEFAULT_CONFIG.image_size // patch) ** 2
    if tiled:  # SmolVLM's own image splitting, at the scene's scale: tiles of one grid cell
        processor.image_processor.do_image_splitting = True
        processor.image_processor.size = {"longest_edge": synth.DEFAULT_CONFIG.image_size}
        processor.image_processor.max_image_size = {"longest_edge": cell}
    for f in folder.glob("*.safetensors"):
        f.unlink()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def target_text(task: synth.Task) -> str:
    """What the base is trained to say: the answer text (for multiple choice too)."""
    return task.answer


def is_tiled(processor) -> bool:
    """Whether ``processor`` splits a scene into cell tiles (see :func:`build`)."""
    return bool(getattr(processor.image_processor, "do_image_splitting", False))


def pixel_batch(images: list, tiled: bool = False) -> dict[str, torch.Tensor]:
    """Pixel values as the Idefics3 processor makes them for 192 px images, without its (slow)
    per-image pipeline: the image itself, or (``tiled``) its nine 64 px cells row by row and a
    64 px global view (LANCZOS, as the processor; its pixels differ from the processor's by at
    most one grey level, the cells not at all)."""
    from PIL import Image

    def views(im):
        if not tiled:
            return [im]
        c = synth.DEFAULT_CONFIG.cell
        g = synth.DEFAULT_CONFIG.grid
        return ([im.crop((j * c, i * c, j * c + c, i * c + c)) for i in range(g) for j in range(g)]
                + [im.resize((c, c), Image.LANCZOS)])

    arr = torch.stack([torch.stack([torch.from_numpy(np.array(v)).permute(2, 0, 1)
                                    for v in views(im)]) for im in images]).float()
    return {
        "pixel_values": (arr / 255.0 - 0.5) / 0.5,
        "pixel_attention_mask": torch.ones(*arr.shape[:2], *arr.shape[-2:], dtype=torch.bool),
    }


def _expand(processor, text: str) -> str:
    g = synth.DEFAULT_CONFIG.grid if is_tiled(processor) else 0
    image_seq = processor.replace_image_token({"rows": [[g]], "cols": [[g]]}, 0)
    return text.replace("<image>", image_seq, 1)


def _tokenize(tok, prompts: list[str], targets: list[str]):
    """``prompt + " " + target + end`` for each row, right-padded, labels on the target only."""
    full = [p + " " + t + tok.eos_token for p, t in zip(prompts, targets, strict=True)]
    tok.padding_side = "right"
    batch = tok(full, return_tensors="pt", padding=True, add_special_tokens=False)
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = -100
    for i, p in enumerate(prompts):
        labels[i, :len(tok(p, add_special_tokens=False)["input_ids"])] = -100
    batch["labels"] = labels
    return batch


def make_batch(processor, examples: list[tuple[synth.Task, str, str]]) -> dict[str, torch.Tensor]:
    """Tokenized (prompt + target + end) with labels on the target only, plus pixels."""
    prompts = [_expand(processor, models.chat_prompt(processor, q)) for _, q, _ in examples]
    batch = _tokenize(processor.tokenizer, prompts, [t for _, _, t in examples])
    batch.update(pixel_batch([task.get_image() for task, _, _ in examples], is_tiled(processor)))
    return batch


def text_question(task: synth.Task, caption_format: str) -> str:
    """A text-only reasoning sample's question: the scene written out, then the task's question
    (no image, no stage tags)."""
    return f"Scene: {CAPTIONS[caption_format](task.scene)}\n{task.prompt_question()}"


def worked_answer(task: synth.Task) -> str:
    """A text-only reasoning sample's target: the solver's steps, then the answer (plain text)."""
    steps = synth.solve(task.prompt_question(), task.scene)[1]
    return " ".join(steps) + f" So the answer is {task.answer}."


def make_text_batch(processor, examples: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Tokenized text-only (question, target) pairs, labels on the target only, no pixels."""
    prompts = [processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": q}]}], add_generation_prompt=True)
        for q, _ in examples]
    return dict(_tokenize(processor.tokenizer, prompts, [t for _, t in examples]))


def per_sample_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy averaged over each sample's target tokens, then over the batch."""
    labels = batch["labels"]
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[:, :-1].float()
    target = labels[:, 1:]
    token_loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100,
        reduction="none").view(target.shape)
    mask = (target != -100).float()
    return ((token_loss * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()


@torch.no_grad()
def answer(model, processor, tasks: list[synth.Task], max_new_tokens: int = 4,
           images: list | None = None) -> list[str]:
    """Greedy direct answers for ``tasks`` (batched), with their own images or ``images``."""
    out = []
    for i in range(0, len(tasks), 32):
        chunk = tasks[i:i + 32]
        prompts = [models.chat_prompt(processor, t.prompt_question()) for t in chunk]
        pictures = images[i:i + 32] if images is not None else [t.get_image() for t in chunk]
        batch = models.encode(processor, pictures, prompts)
        ids = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
        out += [t.strip() for t in processor.batch_decode(
            ids[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)]
    return out


@torch.no_grad()
def caption_scores(model, processor, tasks: list[synth.Task], caption_format: str,
                   max_new_tokens: int = 96, after_question: bool = False) -> dict:
    """Per-item caption accuracy on ``tasks``' scenes, by kind (an item = one object's size,
    colour, shape and cell, or one bar's colour and height at its place):
    ``cotlib.attribution.score_caption`` of the greedy answer to CAPTION_QUESTION, or
    (``after_question``) to the task's own question followed by CAPTION_QUESTION — the context a
    CoT answer's CAPTION is written in (after the question, not after "Describe the image.")."""
    from cotlib import attribution

    model.eval()
    counts: dict[str, Counter] = defaultdict(Counter)
    for i in range(0, len(tasks), 16):
        chunk = tasks[i:i + 16]
        prompts = [models.chat_prompt(processor, f"{t.prompt_question()}\n{CAPTION_QUESTION}"
                                      if after_question else CAPTION_QUESTION) for t in chunk]
        batch = models.encode(processor, [t.get_image() for t in chunk], prompts)
        ids = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
        texts = processor.batch_decode(ids[:, batch["input_ids"].shape[1]:],
                                       skip_special_tokens=True)
        for task, text in zip(chunk, texts, strict=True):
            got = attribution.score_caption(text, task.scene)
            c = counts[task.scene["kind"]]
            c["items"] += got.right + got.missed
            c["right"] += got.right
            c["invented"] += got.invented
            c["scenes"] += 1
            c["exact"] += got.exact and text.strip() == CAPTIONS[caption_format](task.scene)
    model.train()
    return {kind: {"scenes": c["scenes"], "items": c["items"],
                   "item_accuracy": round(c["right"] / max(1, c["items"]), 3),
                   "invented": c["invented"], "exact_captions": c["exact"]}
            for kind, c in sorted(counts.items())}


def worked_answer_of(text: str) -> str | None:
    """The answer a text-only reasoning sample ends with ("... So the answer is X."), or None.

    >>> worked_answer_of("Blue: 2. So the answer is 2."), worked_answer_of("Blue: 2.")
    ('2', None)
    """
    import re

    found = re.search(r"So the answer is (.+?)\.?\s*$", text.strip())
    return found.group(1).strip() if found else None


@torch.no_grad()
def text_reasoning_scores(model, processor, tasks: list[synth.Task], caption_format: str,
                          max_new_tokens: int = 160) -> dict:
    """Text-only reasoning on ``tasks``: the true scene written out (as the caption format
    writes it) and the question, no image; greedy; right when the worked answer's last
    sentence ("So the answer is X.") holds the task's answer. What a CoT answer can reach when
    its CAPTION is exactly right: the ceiling the REASONING stage starts from."""
    tok = processor.tokenizer
    tok.padding_side = "left"
    model.eval()
    right: dict[str, list[bool]] = defaultdict(list)
    for i in range(0, len(tasks), 24):
        chunk = tasks[i:i + 24]
        prompts = [processor.apply_chat_template(
            [{"role": "user",
              "content": [{"type": "text", "text": text_question(t, caption_format)}]}],
            add_generation_prompt=True) for t in chunk]
        batch = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        ids = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
        for task, text in zip(chunk, tok.batch_decode(ids[:, batch["input_ids"].shape[1]:],
                                                      skip_special_tokens=True), strict=True):
            said = worked_answer_of(text)
            right[task.task_type].append(said is not None and evaluate.is_correct(task, said))
    tok.padding_side = "right"
    model.train()
    n = sum(len(v) for v in right.values())
    return {"tasks": n, "accuracy": round(sum(sum(v) for v in right.values()) / n, 4),
            "by_type": {k: round(sum(v) / len(v), 4) for k, v in sorted(right.items())}}


def baselines(tasks: list[synth.Task]) -> dict[str, tuple[str, float]]:
    """Per task type: the most common answer in ``tasks`` and the number of distinct answers."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for t in tasks:
        counts[t.task_type][t.answer] += 1
    return {k: (c.most_common(1)[0][0], len(c)) for k, c in counts.items()}


def evaluate_tasks(model, processor, tasks: list[synth.Task],
                   majority: dict[str, tuple[str, float]]) -> dict:
    """Accuracy per task type (``evaluate.is_correct``) against the majority answer and chance
    (1 / options for multiple choice, 1 / distinct answers of the type otherwise)."""
    model.eval()
    preds = answer(model, processor, tasks)
    model.train()
    rows: dict[str, list] = defaultdict(list)
    for task, pred in zip(tasks, preds, strict=True):
        maj, n_answers = majority[task.task_type]
        rows[task.task_type].append((
            evaluate.is_correct(task, pred), evaluate.is_correct(task, maj),
            1 / len(task.choices) if task.choices else 1 / n_answers))
    scores = {}
    for kind, r in sorted(rows.items()):
        acc, maj, chance = (sum(x[i] for x in r) / len(r) for i in range(3))
        scores[kind] = {"n": len(r), "accuracy": round(acc, 3), "majority": round(maj, 3),
                        "chance": round(chance, 3), "beats_majority_by_15": acc - maj >= 0.15}
    scores["mean"] = {"n": len(tasks), "accuracy": round(sum(x[0] for r in rows.values()
                                                             for x in r) / len(tasks), 3),
                      "majority": round(sum(x[1] for r in rows.values() for x in r)
                                        / len(tasks), 3)}
    return scores


def _table(scores: dict) -> list[str]:
    rows = ["| task type | n | accuracy | majority | chance | accuracy - majority |",
            "|---|---:|---:|---:|---:|---:|"]
    for kind, v in scores.items():
        if kind == "mean":
            continue
        mark = " (+15 met)" if v["beats_majority_by_15"] else ""
        rows.append(f"| {kind} | {v['n']} | {v['accuracy']:.3f} | {v['majority']:.3f} | "
                    f"{v['chance']:.3f} | {v['accuracy'] - v['majority']:+.3f}{mark} |")
    m = scores["mean"]
    rows.append(f"| **all** | {m['n']} | {m['accuracy']:.3f} | {m['majority']:.3f} | | "
                f"{m['accuracy'] - m['majority']:+.3f} |")
    return rows


def score_seeing(folder: Path, heldout: int = 330) -> dict:
    """Does the base in ``folder`` look at the image? On the held-out generated tasks: direct
    accuracy by task type with real, shuffled (same kind) and blank images and the majority
    answer (``cotlib.evaluate.controls``), and per-item caption accuracy for shapes and bars on
    the scenes of the first 110 (10 per task type). Adds them to ``scores.json`` as
    ``"seeing"``."""
    model, processor = models.load(folder, dtype="float32", device="cpu")
    model.eval()
    log = json.loads((folder / "training_log.json").read_text())
    tasks = synth.make_tasks(heldout, seed=HELDOUT_SEED)
    controls = evaluate.controls(
        lambda ts, ims: answer(model, processor, list(ts), images=list(ims)), tasks,
        name="base", majority_from=synth.make_tasks(5500, seed=MAJORITY_SEED))
    seeing = {
        "tasks": len(tasks),
        "controls": {k: {"accuracy": r.accuracy, "interval": evaluate.accuracy_interval(r),
                         "by_type": r.by_type} for k, r in controls.items()},
        "captions": caption_scores(model, processor, tasks[:110],  # 10 of each task type
                                   log["args"].get("caption_format", "describe")),
        # what a CoT answer needs beyond seeing: a caption in the question's context, and
        # reasoning over a (true) scene description
        "captions_after_question": caption_scores(
            model, processor, tasks[:110], log["args"].get("caption_format", "describe"),
            after_question=True),
        "text_reasoning": text_reasoning_scores(
            model, processor, tasks, log["args"].get("caption_format", "describe")),
    }
    path = folder / "scores.json"
    scores = json.loads(path.read_text())
    scores["seeing"] = seeing
    path.write_text(json.dumps(scores, indent=1))
    return seeing


def _seeing_lines(seeing: dict | None) -> list[str]:
    if not seeing:
        return ["(Not scored yet: `python scripts/pretrain_base.py --score --out FOLDER`.)", ""]
    c, cap = seeing["controls"], seeing["captions"]
    names = ("real", "shuffled", "blank", "majority")
    rows = ["| task type | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    rows.append("| **all** | " + " | ".join(
        f"{100 * c[k]['accuracy']:.1f} [{100 * c[k]['interval'][0]:.1f}, "
        f"{100 * c[k]['interval'][1]:.1f}]" for k in names) + " |")
    for kind in sorted(c["real"]["by_type"]):
        rows.append(f"| {kind} | " + " | ".join(f"{100 * c[k]['by_type'][kind]:.1f}"
                                                for k in names) + " |")
    gap = 100 * (c["real"]["accuracy"] - c["blank"]["accuracy"])
    caps = "; ".join(f"{kind}: {v['item_accuracy']:.1%} of {v['items']} items right on "
                     f"{v['scenes']} scenes ({v['invented']} invented, {v['exact_captions']} "
                     "captions exactly right)" for kind, v in cap.items())
    return [
        f"On the {seeing['tasks']} held-out generated tasks (`synth.make_tasks({seeing['tasks']}, "
        f"seed={HELDOUT_SEED})`), greedy direct answers with each task's own image (real), "
        "another task's image of the same kind (shuffled), a blank white image, and the majority "
        "answer of each type; accuracy in % [95% interval]:", "", *rows, "",
        f"Real minus blank images: {gap:+.1f} points.", "",
        f"Captions (\"{CAPTION_QUESTION}\", greedy; an item = one object's size, colour, shape and "
        f"cell, or one bar's colour and height at its place): {caps}.", "",
        *_skill_lines(seeing)]


def _skill_lines(seeing: dict) -> list[str]:
    """The card's lines on what a CoT answer needs beyond seeing (when scored)."""
    after, text = seeing.get("captions_after_question"), seeing.get("text_reasoning")
    if not after or not text:
        return []
    caps = "; ".join(f"{kind}: {v['item_accuracy']:.1%} of {v['items']} items"
                     for kind, v in after.items())
    types = ", ".join(f"{k} {100 * v:.0f}" for k, v in text["by_type"].items())
    return [
        "What a four-stage answer needs beyond seeing, measured on the same held-out tasks:", "",
        f"- a caption after the task's question (the question, then \"{CAPTION_QUESTION}\"; a "
        f"CoT answer's CAPTION comes after the question): {caps} right;",
        f"- reasoning over the true scene written out, no image (the text-only samples' form): "
        f"{text['accuracy']:.1%} of {text['tasks']} tasks reach the right answer (by type, %: "
        f"{types}). That is the reasoning a CoT answer starts from before any CoT SFT, even "
        "when its caption is perfect.", ""]


def mark_course_model(folder: Path, log: dict) -> Path:
    """Replace ``models.tiny``'s marker with ``cotlib_base.json``: training then keeps the base's
    image layout (``cotlib.train.is_tiny``), and nothing mistakes it for a random twin."""
    (folder / "cotlib_tiny.json").unlink(missing_ok=True)
    path = folder / "cotlib_base.json"
    path.write_text(json.dumps({
        "what": "cotlib tiny base, pretrained by scripts/pretrain_base.py",
        "image_size": synth.DEFAULT_CONFIG.image_size,
        "image_tokens": 10 if log["args"].get("tiled") else 9,
        "layout": "nine cell tiles + a global view" if log["args"].get("tiled") else "one view",
        "steps": log.get("steps"), "seed": log["args"]["seed"]}, indent=1))
    return path


def write_base_card(folder: Path, note: str = "") -> Path:
    """Write ``folder/README.md`` (the model card) from its ``training_log.json`` and
    ``scores.json``: every figure in it is what the run measured."""
    log = json.loads((folder / "training_log.json").read_text())
    final = json.loads((folder / "scores.json").read_text())
    a, hw = log["args"], log["hardware"]
    test = final["test"]
    met = [k for k, v in test.items() if k != "mean" and v["beats_majority_by_15"]]
    size = (folder / "model.safetensors").stat().st_size / 2**20
    flags = " ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
                     for k, v in a.items()
                     if k not in ("out", "short", "max_minutes", "card", "score", "note")
                     and v is not None and v is not False)
    curve = ", ".join(f"{e['samples'] // 1000}k: {e['scores']['mean']['accuracy']:.3f}"
                      for e in log["evals"])
    lines = [
        "# cotlib tiny base (Idefics3 / SmolVLM family, pretrained from scratch)", "",
        "The course's stand-in for an instruction-tuned vision-language base: it captions the "
        "course's synthetic scenes and answers their questions *directly* (no reasoning stages). "
        "Later lessons LoRA-fine-tune it on four-stage traces (`cotlib.train`).", "",
        "```python", "from cotlib import models",
        "model, processor = models.load_base()  # verifies SHA256SUMS, then from_pretrained",
        "```", "",
        "## Model", "",
        f"- Idefics3ForConditionalGeneration, {log['params']:,} parameters, float32 safetensors "
        f"({size:.1f} MiB).",
        "- Text: Llama-style decoder, 4 layers, width 192, 6 heads (2 KV heads). Vision: "
        "SigLIP-style encoder, 3 layers, width 192, 64 px patches, connector without pixel "
        "shuffle (`scale_factor=1`): "
        + ("each 192 px scene is split into its nine 64 px cells (Idefics3's image splitting, "
           "each tile announced by its `<row_r_col_c>` text token) plus a 64 px global view, one "
           "image token each (10 per scene)." if a.get("tiled") else
           "9 image tokens per 192 px image (one patch per grid cell)."),
        "- Tokenizer and chat template: the course's tiny Idefics3 tokenizer "
        "(`models.tiny('idefics3')`: byte-level BPE, 1,024 entries, trained on `course_corpus()`), "
        "so stage-tagged traces encode exactly as for the other tiny models.", "",
        "## Recipe (`scripts/pretrain_base.py`)", "",
        f"- `python scripts/pretrain_base.py {flags}`",
        "- Data: a fresh `synth.make_task(10_000_000 + i)` per sample (all 11 task types, 30% "
        "multiple choice; never a test, validation or train task). "
        + (f"The first {a['caption_first']} batches and then " if a.get("caption_first") else
           "") + f"every {a['caption_every']}-th batch ask \"{CAPTION_QUESTION}\" with "
        f"`synth.{a.get('caption_format', 'describe')}(scene)` as the target"
        + (f"; of the other batches every {a['text_every']}-th is text only: the scene written "
           "out (the same caption format) and the question, with the solver's steps and \"So "
           "the answer is X.\" as the target (no image, no stage tags)" if a.get("text_every")
           else "")
        + "; the rest ask the task's question about the image. Target: the answer text, for "
        "multiple choice too (`evaluate.is_correct` accepts the option text or its letter). No "
        "sample has the four-stage format.",
        "- Loss: cross-entropy on the target tokens only, averaged per sample. AdamW (betas 0.9, "
        f"0.98; weight decay 0.01), peak lr {a['lr']}, {a['warmup']} warm-up steps, cosine to 5%; "
        "gradient clipping 1.0; batch "
        f"{a['batch']}; seed {a['seed']}.",
        f"- Trained {log['steps']:,} steps = {log['samples']:,} samples in "
        f"{log['train_seconds'] / 60:.1f} min ({log['samples'] / log['train_seconds']:.0f} "
        f"samples/s) on {hw['device']} ({hw['cpu_count']} cores), {a['threads']} thread(s)"
        + (f"; {note}" if note else "") + ("; stopped early by --max-minutes (truncated)"
                                           if log.get("truncated") else "") + ".",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in log["versions"].items()) + "; synth "
        f"generator version {log['generator_version']}.", "",
        "## Does it look at the image?", "", *_seeing_lines(final.get("seeing")),
        "## Scores", "",
        "Greedy direct answers (`max_new_tokens=4`), scored with `cotlib.evaluate.is_correct`. "
        "Majority = always giving the type's most common answer (from 5,500 generated tasks); "
        "chance = 1 / options for multiple choice, else 1 / distinct answers of the type.", "",
        f"### Test split (`data/tasks/test`, {test['mean']['n']} tasks)", "",
        *_table(test), "",
        f"Task types at least 15 points above the majority answer: {len(met)} of "
        f"{len(test) - 1} ({', '.join(met) or 'none'}). With about 11 tasks per type one task "
        "is 9 points, so single types on the test split are noisy (a standard error of about "
        "14 points at 50%); the larger held-out set below is the steadier estimate.", "",
        f"### Held-out generated tasks (`synth.make_tasks({a['heldout']}, seed={HELDOUT_SEED})`)",
        "", *_table(final["heldout"]), "",
        f"Learning curve (held-out mean accuracy by samples seen): {curve}.", "",
        "## Files", "",
        "`config.json`, `generation_config.json`, `model.safetensors`, tokenizer and processor "
        "files (`from_pretrained`), `training_log.json` (losses, evaluations, arguments, "
        "versions, hardware), `scores.json`, `cotlib_base.json` (marks a course model: "
        "training keeps its image layout), and `SHA256SUMS` (all files but this card; "
        "`sha256sum -c SHA256SUMS` or `cotlib.models.verify_checksum`).", "",
    ]
    path = folder / "README.md"
    path.write_text("\n".join(lines))
    return path


@dataclass
class PretrainSettings:
    """The run's settings, one option each (``--caption-every`` sets ``caption_every``; help in
    :data:`HELP`); ``training_log.json`` records them as run (``--short`` applied) under
    ``args``, in this order, and the model card's recipe line is built from them."""

    out: str = str(env.BASE_DIR)
    steps: int = 4500
    short: bool = False
    batch: int = 48
    lr: float = 2e-3
    warmup: int = 200
    patch: Literal[32, 64] = 64
    caption_every: int = 6
    caption_format: str = "describe"
    text_every: int = 0
    caption_first: int = 0
    tiled: bool = False
    threads: int = 1
    eval_every: int = 500
    heldout: int = 330
    seed: int = 0
    card: bool = False
    score: bool = False
    note: str = ""
    max_minutes: float = 0.0


HELP = {
    "out": "folder of the model, its logs and card",
    "steps": "optimizer steps",
    "short": "200 steps of 16 samples (~1.5 min, 1 thread): the learning curve",
    "batch": "samples per step",
    "lr": "peak learning rate (AdamW, cosine to 5%%)",
    "warmup": "linear warm-up steps",
    "patch": "vision patch in pixels: 64 (one grid cell) or 32 (merged 2x2, SmolVLM's layout)",
    "caption_every": "0: no captions",
    "caption_format": "describe: synth.describe (object by object); listing: synth.listing (cell "
                      "by cell, the place before the content)",
    "text_every": "of the other batches, every k-th is text-only reasoning: the scene written out "
                  "+ the question -> the solver's steps and the answer (no image, no stage "
                  "tags); 0: none",
    "caption_first": "the first N steps are all captions: learning to read the cells before "
                     "anything else (mixed from the start, a tiled base's captions stayed at 5%% "
                     "of items right after 1,000 steps; captions alone got going within 300)",
    "tiled": "split each scene into its nine cells (<row_r_col_c> tiles, SmolVLM's image "
             "splitting) plus a global view: see build()",
    "threads": "torch threads",
    "eval_every": "score the held-out tasks every N steps",
    "heldout": "held-out generated tasks scored during and after training",
    "seed": "seed of the initial weights and of the order within each batch",
    "card": "only (re)write --out's model card from its logs",
    "score": "only score --out's model for seeing (controls, captions on held-out scenes: "
             "scores.json) and rewrite its card",
    "note": "a line for the model card (e.g. machine load)",
    "max_minutes": "safety stop: end early (logged as truncated) after this long; 0 = off",
}
OPTIONS = options.field_options(PretrainSettings, HELP,
                                more={"caption_format": {"choices": tuple(CAPTIONS)}})


def build_parser() -> argparse.ArgumentParser:
    """The script's options, one per :class:`PretrainSettings` field, defaults in ``--help``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_options(ap, PretrainSettings, OPTIONS, show_defaults=True)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = options.from_args(build_parser().parse_args(argv), PretrainSettings, OPTIONS)
    if args.card or args.score:
        if args.score:
            score_seeing(Path(args.out))
            mark_course_model(Path(args.out), json.loads(
                (Path(args.out) / "training_log.json").read_text()))
        write_base_card(Path(args.out), args.note)
        models.write_checksum(Path(args.out))
        return 0
    if args.short:  # measured: question loss 0.18x, caption loss 0.32x of the first logged, 98 s
        args.steps, args.batch, args.eval_every, args.heldout = min(args.steps, 200), 16, 100, 66
    torch.set_num_threads(args.threads)
    env.seed_everything(args.seed)
    rng = random.Random(args.seed)
    folder = build(Path(args.out), args.patch, args.seed, tiled=args.tiled)
    caption_of = CAPTIONS[args.caption_format]
    model, processor = models.load(folder, dtype="float32", device="cpu")
    model.train()
    n_params = models.count_parameters(model)["total"]
    print(f"model: {n_params:,} parameters; {processor.image_seq_len} image tokens", flush=True)

    majority = baselines(synth.make_tasks(5500, seed=MAJORITY_SEED))
    heldout = synth.make_tasks(args.heldout, seed=HELDOUT_SEED)
    caption_heldout = heldout[: max(22, len(heldout) // 4)]  # every type: both scene kinds
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    log: dict = {"losses": [], "evals": [], "args": vars(args), "params": n_params,
                 "versions": env.versions(), "hardware": env.hardware().__dict__,
                 "generator_version": synth.GENERATOR_VERSION}
    started = time.perf_counter()
    seen, run_q, run_c, run_t = 0, None, None, None
    step, log["truncated"] = 0, False
    for step in range(1, args.steps + 1):
        if args.max_minutes and time.perf_counter() - started > args.max_minutes * 60:
            step, log["truncated"] = step - 1, True
            break
        progress = step / args.steps
        lr = args.lr * min(1.0, step / args.warmup) * (0.05 + 0.95 * 0.5 * (
            1 + math.cos(math.pi * progress)))
        for group in opt.param_groups:
            group["lr"] = lr
        caption = args.caption_every > 0 and (step % args.caption_every == 0
                                              or step <= args.caption_first)
        text = not caption and args.text_every > 0 and step % args.text_every == 1
        examples = []
        for _ in range(args.batch):
            task = synth.make_task(TRAIN_SEED_BASE + seen)
            seen += 1
            if text:
                examples.append((text_question(task, args.caption_format), worked_answer(task)))
            else:
                examples.append((task, CAPTION_QUESTION, caption_of(task.scene)) if caption
                                else (task, task.prompt_question(), target_text(task)))
        rng.shuffle(examples)
        batch = make_text_batch(processor, examples) if text else make_batch(processor, examples)
        loss = per_sample_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if text:
            run_t = loss.item() if run_t is None else 0.9 * run_t + 0.1 * loss.item()
        elif caption:
            run_c = loss.item() if run_c is None else 0.9 * run_c + 0.1 * loss.item()
        else:
            run_q = loss.item() if run_q is None else 0.97 * run_q + 0.03 * loss.item()
        if step % 25 == 0:
            secs = time.perf_counter() - started
            log["losses"].append({"step": step, "samples": seen,
                                  "question_loss": run_q and round(run_q, 4),
                                  "caption_loss": run_c and round(run_c, 4),
                                  "text_loss": run_t and round(run_t, 4),
                                  "seconds": round(secs, 1)})
            print(f"step {step} samples {seen} q-loss {run_q or 0:.3f} c-loss {run_c or 0:.3f} "
                  f"t-loss {run_t or 0:.3f} "
                  f"lr {lr:.2e} {secs:.0f}s {seen / secs:.1f} samples/s", flush=True)
        if step % args.eval_every == 0:
            scores = evaluate_tasks(model, processor, heldout, majority)
            captions = caption_scores(model, processor, caption_heldout, args.caption_format)
            log["evals"].append({"step": step, "samples": seen, "scores": scores,
                                 "captions": captions})
            print("  captions: " + ", ".join(f"{k} items {v['item_accuracy']:.3f} (invented "
                                             f"{v['invented']})" for k, v in captions.items()),
                  flush=True)
            print(f"  heldout mean {scores['mean']['accuracy']:.3f}: " + ", ".join(
                f"{k} {v['accuracy']:.2f}/{v['majority']:.2f}" for k, v in scores.items()
                if k != "mean"), flush=True)

    if not log["evals"] or log["evals"][-1]["step"] != step:
        log["evals"].append({"step": step, "samples": seen,
                             "scores": evaluate_tasks(model, processor, heldout, majority)})
    log["train_seconds"] = round(time.perf_counter() - started, 1)
    log["steps"], log["samples"] = step, seen
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    mark_course_model(folder, log)
    test = synth.load_split(env.DATA_DIR / "tasks" / "test")
    final = {"test": evaluate_tasks(model, processor, test, majority),
             "heldout": log["evals"][-1]["scores"]}
    (folder / "training_log.json").write_text(json.dumps(log, indent=1))
    (folder / "scores.json").write_text(json.dumps(final, indent=1))
    score_seeing(folder, args.heldout)
    write_base_card(folder, args.note)
    models.write_checksum(folder)
    print(json.dumps(final["test"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

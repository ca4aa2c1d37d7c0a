"""The training card written next to every adapter (``training_card.json``/``.md``) and its loss
plot (``loss.png``).

>>> import tempfile
>>> read_card(tempfile.mkdtemp())
Traceback (most recent call last):
...
cotlib.train.settings.TrainError: no training card in ...
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cotlib import env
from cotlib.train.dataset import data_stats
from cotlib.train.memory import HARDWARE_PRESETS
from cotlib.train.settings import TrainError
from cotlib.train.targets import family_of, target_regex

if TYPE_CHECKING:
    from cotlib.train.trainer import Prepared

def training_card(prep: Prepared, output, seconds: float, peak_gb: float, peak_source: str,
                  resumed_from: str | None) -> dict[str, Any]:
    """The card's content: data, settings, loss curve, time, peak memory, versions."""
    s, r = prep.settings, prep.resolved
    state = prep.trainer.state
    metrics = dict(output.metrics) if output is not None else {}
    return {
        "model": s.model,
        "model_source": prep.model_source,
        "family": family_of(prep.trainer.model.get_base_model()),
        "parameters": prep.parameters,
        "data": {**data_stats(prep.dataset, prep.processor.tokenizer),
                 "skipped_unreadable_images": len(prep.skipped_images),
                 "skipped_ids": list(map(str, prep.skipped_images))[:50]},
        "settings": {k: v for k, v in asdict(s).items() if k != "extra"} | {"extra": str(s.extra)},
        "resolved": asdict(r),
        "lora": {"r": s.lora_r, "alpha": s.lora_alpha or 2 * s.lora_r,
                 "dropout": s.lora_dropout, "target_modules": target_regex(s.adapt_vision),
                 "modules_to_save": s.modules_to_save},
        "preset_rationale": HARDWARE_PRESETS[r.preset].rationale,
        "loss_curve": [[step, round(loss, 5)] for step, loss in prep.recorder.losses],
        "steps": int(state.global_step),
        "epochs_done": round(float(state.epoch or 0), 3),
        "resumed_from": resumed_from,
        "distributed": str(prep.trainer.accelerator.distributed_type).split(".")[-1],
        "wall_seconds": round(seconds, 2),
        "train_samples_per_second": metrics.get("train_samples_per_second"),
        "peak_memory_gb": round(peak_gb, 3),
        "peak_memory_source": peak_source,
        "hardware": asdict(env.hardware()),
        "versions": env.versions(),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def write_training_card(card: dict, folder: str | os.PathLike) -> Path:
    """Write ``training_card.json``, ``training_card.md`` and ``loss.png`` into ``folder``."""
    folder = Path(folder)
    (folder / "training_card.json").write_text(json.dumps(card, indent=2, default=str))
    curve = card.get("loss_curve") or []
    if curve:
        # matplotlib's own backend choice (Agg where there is no display; the notebook's inline
        # backend in Jupyter): switching it here hid every later plot of a notebook.
        import matplotlib.pyplot as plt

        fig = plot_loss(curve)
        fig.savefig(folder / "loss.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
    r, d = card["resolved"], card["data"]
    first = f"{curve[0][1]:.3f}" if curve else "-"
    last = f"{curve[-1][1]:.3f}" if curve else "-"
    lines = [
        f"# Training card: LoRA on {card['model']}",
        "",
        f"- created: {card['created']}; {card['steps']} steps, {card['epochs_done']} epochs, "
        f"{card['wall_seconds']} s wall time, peak memory {card['peak_memory_gb']} GB "
        f"({card['peak_memory_source']})",
        f"- data: {d['rows']} rows ({d['skipped_unreadable_images']} skipped: unreadable image); "
        f"task types {d.get('task_types', {})}; completion ~{d.get('completion_tokens_mean')} "
        "tokens",
        f"- model: {card['model_source']} ({card['family']}), {card['parameters']['total']:,} "
        f"parameters, {card['parameters']['trainable']:,} trainable",
        f"- LoRA: r={card['lora']['r']}, alpha={card['lora']['alpha']}, dropout "
        f"{card['lora']['dropout']}, targets `{card['lora']['target_modules']}`",
        f"- hardware: {r['device']}, {r['dtype']}, preset {r['preset']}, batch {r['batch_size']} x "
        f"accumulation {r['grad_accum']} x {r['world_size']} process(es), "
        f"{r['image_tokens']} image tokens per image, gradient checkpointing "
        f"{r['gradient_checkpointing']} ({r['checkpointing_reason']})",
        f"- loss: {first} -> {last} (see loss.png)",
        f"- resumed from: {card['resumed_from']}; distributed: {card['distributed']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in card["versions"].items()),
        "",
        "## Preset rationale",
        "",
        card["preset_rationale"],
        "",
    ]
    (folder / "training_card.md").write_text("\n".join(lines))
    return folder / "training_card.json"


def read_card(folder: str | os.PathLike) -> dict:
    """The training card written next to an adapter."""
    path = Path(folder) / "training_card.json"
    if not path.exists():
        raise TrainError(f"no training card in {folder}: is it an adapter folder written by "
                         "cotlib.train.train?")
    return json.loads(path.read_text())


def plot_loss(curve, ax=None, smooth: int = 0, label: str = "training loss"):
    """Plot ``[(step, loss), ...]`` (or a card / folder). ``smooth`` = moving-average window."""
    import matplotlib.pyplot as plt

    if isinstance(curve, (str, os.PathLike)):
        curve = read_card(curve)["loss_curve"]
    elif isinstance(curve, dict):
        curve = curve["loss_curve"]
    steps = [c[0] for c in curve]
    losses = [c[1] for c in curve]
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, losses, marker="." if len(steps) < 50 else None, alpha=0.5 if smooth else 1,
            label=label)
    if smooth and len(losses) >= smooth:
        avg = [sum(losses[i - smooth + 1:i + 1]) / smooth for i in range(smooth - 1, len(losses))]
        ax.plot(steps[smooth - 1:], avg, label=f"{label} (mean of {smooth})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (completion tokens)")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig if fig is not None else ax.figure

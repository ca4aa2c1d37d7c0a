"""Using a trained adapter: load it onto its base for inference, or merge it into a standalone
model."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from cotlib import models
from cotlib.train.card import read_card
from cotlib.train.settings import TrainError


def load_adapter(folder: str | os.PathLike, *, base: str | None = None, dtype: str | None = None,
                 device: str | None = None, merge: bool = False):
    """Load base model + adapter for inference: ``(model, processor)``.

    The processor is the one saved with the adapter (same image size as in training). The base
    model comes from the training card (or ``adapter_config.json``) unless ``base`` is given.
    ``merge=True`` folds the adapter into the base weights (``merge_and_unload``): a plain model
    that answers the same and generates faster (no LoRA branch per layer; with the demo's tiny
    base on a CPU, 1.4x in batched free generation and 1.6x in stage beam search), but one whose
    adapter can no longer be switched off.
    """
    from peft import PeftModel
    from transformers import AutoProcessor

    folder = Path(folder)
    if not (folder / "adapter_config.json").exists():
        raise TrainError(f"no adapter in {folder} (adapter_config.json missing).")
    if base is None:
        if (folder / "training_card.json").exists():
            base = read_card(folder)["model_source"]
        else:
            base = json.loads((folder / "adapter_config.json").read_text())[
                "base_model_name_or_path"]
    model, _ = models.load(base, dtype=dtype, device=device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        model = PeftModel.from_pretrained(model, str(folder))
    if merge:
        model = model.merge_and_unload()
    model.eval()
    return model, AutoProcessor.from_pretrained(str(folder))


def merge(folder: str | os.PathLike, out: str | os.PathLike, **load_kwargs) -> Path:
    """Merge an adapter into its base model and save a standalone model (+ processor) in ``out``.

    The result loads with ``cotlib.models.load(out)`` — no PEFT needed.
    """
    merged, processor = load_adapter(folder, merge=True, **load_kwargs)
    out = Path(out)
    merged.save_pretrained(str(out))
    processor.save_pretrained(str(out))
    card = Path(folder) / "training_card.json"
    if card.exists():
        (out / "training_card.json").write_text(card.read_text())
    return out

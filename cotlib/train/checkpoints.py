"""Trainer checkpoints: whether one is complete and loadable, and the newest complete one to
resume from (a kill during a save leaves a partial folder behind)."""

from __future__ import annotations

import json
import os
from pathlib import Path

#: Files the Trainer writes into every checkpoint (besides the weights) that resuming reads.
CHECKPOINT_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt")
#: Weight files, one of which a checkpoint must hold (a LoRA adapter, or a whole model).
CHECKPOINT_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors",
                      "pytorch_model.bin", "model.safetensors.index.json")


def checkpoint_problem(folder: str | os.PathLike) -> str | None:
    """Why ``folder`` is not a complete, loadable Trainer checkpoint (None when it is): empty,
    a file missing, ``trainer_state.json`` unreadable, a safetensors file whose header does not
    match its size, or a torch file that is not a whole zip archive (a save cut short by a kill
    loses the archive's directory, which is written last). Reads headers only, not tensors.

    >>> import tempfile; checkpoint_problem(tempfile.mkdtemp())
    'empty (a save was interrupted)'
    """
    import struct
    import zipfile

    folder = Path(folder)
    if not folder.is_dir():
        return "not a folder"
    names = {p.name for p in folder.iterdir()}
    if not names:
        return "empty (a save was interrupted)"
    missing = [n for n in CHECKPOINT_FILES if n not in names]
    weights = [n for n in CHECKPOINT_WEIGHTS if n in names]
    if not weights:
        missing.insert(0, "model weights (" + " or ".join(CHECKPOINT_WEIGHTS[:2]) + ")")
    if missing:
        return f"incomplete: no {', '.join(missing)}"
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
        int(state["global_step"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"trainer_state.json is unreadable ({type(err).__name__})"
    for name in sorted(names):
        path = folder / name
        if name.endswith(".safetensors"):
            try:
                with open(path, "rb") as f:
                    (n,) = struct.unpack("<Q", f.read(8))
                    header = json.loads(f.read(n))
                end = max((v["data_offsets"][1] for k, v in header.items()
                           if k != "__metadata__"), default=0)
                if path.stat().st_size != 8 + n + end:
                    return f"{name} is cut short ({path.stat().st_size} bytes, header says " \
                           f"{8 + n + end})"
            except (OSError, ValueError, KeyError, TypeError, struct.error):
                return f"{name} is unreadable (not a whole safetensors file)"
        elif name.endswith((".pt", ".pth", ".bin")) and not zipfile.is_zipfile(path):
            return f"{name} is unreadable (not a whole torch file)"
    return None


def latest_checkpoint(folder: Path, say=print) -> str | None:
    """The newest COMPLETE ``checkpoint-<step>`` in ``folder`` (:func:`checkpoint_problem`);
    newer ones that are not (a kill during a save) are skipped, each named with why."""
    points = [p for p in Path(folder).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    for point in sorted(points, key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        problem = checkpoint_problem(point)
        if problem is None:
            return str(point)
        say(f"resume: skipping {point.name}: {problem}")
    return None

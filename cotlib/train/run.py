"""Running a training: :func:`train` builds the trainer, resumes from the newest complete
checkpoint on request, turns a CUDA out-of-memory error into the next setting to try, and saves
adapter, processor and training card."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from cotlib import env
from cotlib.train.card import read_card, training_card, write_training_card
from cotlib.train.checkpoints import latest_checkpoint
from cotlib.train.oom import next_settings_to_try, peak_memory_gb
from cotlib.train.settings import TrainError, TrainSettings, is_tiny
from cotlib.train.trainer import build_trainer


@dataclass
class TrainResult:
    """What a run produced: the adapter folder (with processor and card) and its numbers."""

    output_dir: Path
    losses: list[tuple[int, float]]
    seconds: float
    peak_memory_gb: float
    card: dict

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> TrainResult:
        """The result of a finished run, read back from its training card (e.g. a run that
        another process trained)."""
        card = read_card(folder)
        return cls(Path(folder), [(int(s), float(v)) for s, v in card["loss_curve"]],
                   card["wall_seconds"], card["peak_memory_gb"], card)


def train(dataset, settings: TrainSettings | None = None, *, callbacks=None,
          verbose: bool = True, **overrides) -> TrainResult:
    """Train a LoRA adapter; save adapter + processor + training card in ``output_dir``.

    ``train(synthetic_traces(), model="tiny-idefics3", output_dir="runs/x/adapter",
    learning_rate=5e-3)`` trains the tiny model for one epoch on the shipped traces (about 10 s
    on 2 CPU cores). A CUDA out-of-memory error becomes a :class:`TrainError` naming the next
    setting to try; ``resume=True`` continues from the newest checkpoint in
    ``output_dir/checkpoints``.
    """
    import torch

    prep = build_trainer(dataset, settings, callbacks=callbacks, verbose=verbose, **overrides)
    trainer, s, r = prep.trainer, prep.settings, prep.resolved
    resume = None
    if s.resume:
        talk = verbose and trainer.is_world_process_zero()
        resume = s.resume if isinstance(s.resume, str) else latest_checkpoint(
            Path(s.output_dir) / "checkpoints", say=print if talk else lambda _: None)
        if talk:
            print(f"resume: from {Path(resume).name}" if resume else
                  "resume: no complete checkpoint found; starting from scratch")
    if verbose and trainer.is_world_process_zero():
        print(f"training {s.model} on {len(prep.dataset)} rows: preset {r.preset}, {r.dtype}, "
              f"batch {r.batch_size}x{r.grad_accum}, {r.image_tokens} image tokens/image, "
              f"checkpointing {'on' if r.gradient_checkpointing else 'off'}")
    # On a CPU, tiny matrices: one thread beats two (measured 9.6 s vs 84 s per epoch on a busy
    # 2-core machine), and leaves the other core to the data loader and the notebook. None: as is.
    threads = (s.cpu_threads or (1 if is_tiny(prep.model_source) else None)
               if r.device == "cpu" else None)
    start = time.perf_counter()
    try:
        with env.torch_threads(threads):
            output = trainer.train(resume_from_checkpoint=resume)
    except torch.cuda.OutOfMemoryError as err:
        tries = next_settings_to_try(s, r)
        raise TrainError(
            f"CUDA out of memory at batch {r.batch_size}, image tokens {r.image_tokens}, "
            f"checkpointing {'on' if r.gradient_checkpointing else 'off'}. Next setting to try: "
            f"{tries[0]}. Then: {'; '.join(tries[1:])}.") from err
    seconds = time.perf_counter() - start
    peak, peak_source = peak_memory_gb(r.device)
    out = Path(s.output_dir)
    card = {}
    if trainer.is_world_process_zero():
        out.mkdir(parents=True, exist_ok=True)
        trainer.save_model(str(out))
        prep.processor.save_pretrained(str(out))
        card = training_card(prep, output, seconds, peak, peak_source, resume)
        write_training_card(card, out)
    trainer.accelerator.wait_for_everyone()
    return TrainResult(out, list(prep.recorder.losses), seconds, peak, card)

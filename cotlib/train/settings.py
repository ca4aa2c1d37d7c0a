"""Training settings: what decides a run (:class:`TrainSettings`), what it became on this machine
(:class:`Resolved`), the model argument, and the error every training step raises.

>>> TrainSettings(lora_r=8).lora_r
8
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cotlib import models


class TrainError(RuntimeError):
    """Training cannot start or stopped; the message names the fix or the next setting to try."""


@dataclass
class TrainSettings:
    """Everything that decides a training run (written into the training card).

    ``None`` means "from the preset" (batch size, accumulation, image size, QLoRA) and
    ``gradient_checkpointing="auto"`` means "from the memory estimate".
    """

    model: str = "smolvlm-256m"  # preset name, hub id, folder, or "tiny-<family>"
    output_dir: str = "runs/course/adapter"
    preset: str = "auto"
    epochs: float = 1.0
    max_steps: int = -1
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"
    warmup: float = 0.03  # fraction of the steps (or a step count if >= 1)
    batch_size: int | None = None
    grad_accum: int | None = None
    longest_edge: int | None = None
    do_image_splitting: bool | None = None
    gradient_checkpointing: bool | str = "auto"
    qlora: bool | None = None
    dtype: str | None = None  # None: by hardware (bf16 Ampere+, fp16 T4, fp32 CPU)
    lora_r: int = 16
    lora_alpha: int | None = None
    lora_dropout: float = 0.05
    adapt_vision: bool = False
    modules_to_save: list[str] | None = None  # trained in full, e.g. ["lm_head"]
    max_length: int | None = None
    #: Batch rows of similar length (transformers' LengthGroupedSampler on :func:`row_lengths`):
    #: less padding, so fewer tokens per step; batches are then less mixed.
    group_by_length: bool = False
    logging_steps: int = 5
    save_steps: int = 100
    save_total_limit: int = 2
    resume: bool | str = False
    seed: int = 0
    on_bad_image: str = "skip"  # or "raise"
    dataloader_workers: int | None = None  # None: 0 on CPU, up to 4 on a GPU
    cpu_threads: int | None = None  # None: 1 for tiny models on a CPU (faster), else torch's
    extra: dict[str, Any] = field(default_factory=dict)  # more SFTConfig fields


@dataclass
class Resolved:
    """Settings after the preset, the hardware and the memory estimate have been applied."""

    preset: str
    device: str
    dtype: str
    batch_size: int
    grad_accum: int
    longest_edge: int | None
    do_image_splitting: bool | None
    gradient_checkpointing: bool
    checkpointing_reason: str
    qlora: bool
    image_tokens: int
    world_size: int = 1


def resolve_model(name: str | os.PathLike) -> str:
    """A model argument as ``from_pretrained`` takes it; ``tiny-<family>`` builds the tiny model.

    >>> resolve_model("smolvlm-500m")
    'HuggingFaceTB/SmolVLM-500M-Instruct'
    """
    text = str(name)
    if text.startswith("tiny-") and text[5:] in models.FAMILIES:
        return str(models.tiny(text[5:]))
    return models.resolve(text)


#: Marker files of the course's own small models, whose image layout is fixed by design (9 image
#: tokens per 192 px scene): a twin from :func:`cotlib.models.tiny` or the shipped base.
COURSE_MODEL_MARKERS = ("cotlib_tiny.json", "cotlib_base.json")


def is_tiny(model_source: str) -> bool:
    """True for a course model (:func:`cotlib.models.tiny` or the shipped ``data/base``): presets
    then leave its image size alone.

    >>> is_tiny(str(models.tiny("idefics3"))), is_tiny("HuggingFaceTB/SmolVLM-256M-Instruct")
    (True, False)
    """
    return any((Path(model_source) / name).exists() for name in COURSE_MODEL_MARKERS)

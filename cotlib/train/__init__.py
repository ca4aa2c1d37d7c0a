"""LoRA fine-tuning of a vision-language model on four-stage traces, with TRL's ``SFTTrainer``.

LLaVA-CoT fully fine-tuned an 11B model on 8×H100. The course trains a LoRA adapter on one GPU
(a Colab T4 at the low end) — or on a CPU for the tiny offline model — with the same data shape:
``prompt`` (the user turn: image + question), ``completion`` (the four-stage answer) and
``images``. The recipe, and why:

* **LoRA on the language model only** (``target_regex``): the vision tower stays frozen, so it
  runs forward-only with no activations kept for a backward pass (``adapt_vision=True`` adapts it
  too, at a price).
* **Completion-only loss**: TRL's vision collator masks the prompt and every image token
  (label ``-100``); only the answer and its end-of-turn token are trained.
* **No truncation** (``max_length=None``): cutting a sequence could cut image tokens, which fails
  with an image-token mismatch. A limit you set is checked against the longest prompt.
* **dtype by hardware**: bf16 on Ampere and newer, fp16 on a T4, fp32 on a CPU.
* **Image size is the main memory lever** (``longest_edge`` and ``do_image_splitting``): SmolVLM
  spends 64 tokens per 512-px tile, so 2048 px with tiling is 17 tiles = 1088 tokens per image.
* **Gradient checkpointing only when the memory estimate needs it**
  (:func:`estimate_training_memory_gb`), and then on the language model alone.
* **Presets** (``HARDWARE_PRESETS``) for T4 / L4 / A100 / H100, each sized with that estimate.

>>> from cotlib import train
>>> train.is_language_model_target("model.text_model.layers.0.self_attn.q_proj")
True
>>> train.is_language_model_target("model.vision_model.encoder.layers.0.self_attn.q_proj")
False

Run it from the command line, on one device or several (DDP through accelerate)::

    python -m cotlib.train --dataset runs/course/dataset --model smolvlm-256m \\
        --output runs/course/adapter
    accelerate launch --num_processes 4 -m cotlib.train --dataset ... --model ... --output ...

The package, read in this order (each module imports only the ones above it):
:mod:`~cotlib.train.settings` (:class:`TrainSettings`, :class:`Resolved`, :class:`TrainError`),
:mod:`~cotlib.train.targets` (which modules LoRA adapts), :mod:`~cotlib.train.memory` (the memory
estimate and the hardware presets), :mod:`~cotlib.train.dataset` (loading, format and image
checks, statistics, synthetic traces), :mod:`~cotlib.train.image_size` (processor image size and
image tokens), :mod:`~cotlib.train.trainer` (settings resolved, ``SFTConfig``, the model,
:func:`build_trainer`), :mod:`~cotlib.train.oom` (out-of-memory advice),
:mod:`~cotlib.train.checkpoints` (complete checkpoints to resume from), :mod:`~cotlib.train.card`
(the training card and loss plot), :mod:`~cotlib.train.run` (:func:`train`),
:mod:`~cotlib.train.adapters` (load and merge an adapter), :mod:`~cotlib.train.cli` (the command
line). Every public name is re-exported here: ``from cotlib import train; train.X``.
"""

from cotlib.train.adapters import adapter_base, load_adapter, merge
from cotlib.train.card import plot_loss, read_card, training_card, write_training_card
from cotlib.train.checkpoints import (
    CHECKPOINT_FILES,
    CHECKPOINT_WEIGHTS,
    checkpoint_problem,
    latest_checkpoint,
)
from cotlib.train.cli import build_parser, main
from cotlib.train.dataset import (
    EXPECTED_COLUMNS,
    as_messages,
    check_dataset_format,
    check_images,
    data_stats,
    load_dataset_any,
    synthetic_traces,
)
from cotlib.train.image_size import (
    count_image_tokens,
    processor_family,
    row_lengths,
    set_image_size,
)
from cotlib.train.memory import (
    BYTES,
    HARDWARE_PRESETS,
    MODEL_SHAPES,
    PRESET_TEXT_TOKENS,
    PRESETS,
    QWEN25_VL_3B,
    SMOLVLM_256M,
    SMOLVLM_500M,
    ModelShape,
    TrainPreset,
    auto_checkpointing,
    estimate_training_memory_gb,
    lora_memory_gb,
    pick_preset,
    plan_batch,
    shape_of,
    smolvlm_image_tokens,
)
from cotlib.train.oom import next_settings_to_try, peak_memory_gb
from cotlib.train.run import TrainResult, train
from cotlib.train.settings import (
    COURSE_MODEL_MARKERS,
    Resolved,
    TrainError,
    TrainSettings,
    is_tiny,
    resolve_model,
)
from cotlib.train.targets import (
    FAMILY_PARTS,
    LM_PROJECTIONS,
    LM_TARGET_REGEX,
    QLORA_SKIP,
    VISION_PROJECTIONS,
    VISION_TARGET_REGEX,
    family_of,
    is_language_model_target,
    language_model_of,
    lora_config,
    lora_targets,
    target_regex,
)
from cotlib.train.trainer import (
    EndOfTurnMask,
    Prepared,
    build_trainer,
    end_of_turn_ids,
    load_model,
    precision_flags,
    resolve_settings,
    sft_config,
)

__all__ = [
    "BYTES", "CHECKPOINT_FILES", "CHECKPOINT_WEIGHTS", "COURSE_MODEL_MARKERS", "EXPECTED_COLUMNS",
    "FAMILY_PARTS", "HARDWARE_PRESETS", "LM_PROJECTIONS", "LM_TARGET_REGEX", "PRESETS",
    "MODEL_SHAPES", "PRESET_TEXT_TOKENS", "QLORA_SKIP", "QWEN25_VL_3B", "SMOLVLM_256M",
    "SMOLVLM_500M", "VISION_PROJECTIONS",
    "VISION_TARGET_REGEX", "EndOfTurnMask", "ModelShape", "Prepared", "Resolved", "TrainError",
    "TrainPreset", "TrainResult", "TrainSettings", "adapter_base", "as_messages", "build_parser",
    "build_trainer", "check_dataset_format", "check_images", "checkpoint_problem",
    "auto_checkpointing", "count_image_tokens", "data_stats", "end_of_turn_ids",
    "estimate_training_memory_gb", "lora_memory_gb",
    "family_of", "is_language_model_target", "is_tiny", "language_model_of", "latest_checkpoint",
    "load_adapter", "load_dataset_any", "load_model", "lora_config", "lora_targets", "main",
    "merge", "next_settings_to_try", "peak_memory_gb", "pick_preset", "plan_batch", "plot_loss",
    "precision_flags", "processor_family", "read_card", "resolve_model", "resolve_settings",
    "row_lengths", "set_image_size", "sft_config", "shape_of", "smolvlm_image_tokens",
    "synthetic_traces", "target_regex", "train", "training_card", "write_training_card",
]

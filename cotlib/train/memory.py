"""The GPU memory model and the hardware presets sized with it.

:func:`estimate_training_memory_gb` estimates the peak memory of LoRA training from a model's
shape; :func:`plan_batch` picks the largest batch (and whether to checkpoint) that fits a card;
:data:`HARDWARE_PRESETS` holds one preset per GPU (T4 / L4 / A100 / H100, and the CPU for the
tiny models), each with the rationale that sized it.

>>> HARDWARE_PRESETS["t4-16gb"].dtype
'float16'
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cotlib import env
from cotlib.train.settings import TrainError

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class ModelShape:
    """The numbers the memory estimate needs (language model part; params = whole model)."""

    name: str
    params: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tile: int = 512  # SmolVLM: 512-px tiles, 64 tokens each
    tokens_per_tile: int = 64

    def lora_params(self, r: int = 16) -> int:
        """Trainable parameters of language-model-only LoRA with rank ``r``: r·(in+out) per matrix.

        >>> SMOLVLM_256M.lora_params(16)
        4884480
        """
        h, i, kv = self.hidden, self.intermediate, self.kv_heads * self.head_dim
        pairs = [(h, self.heads * self.head_dim), (h, kv), (h, kv), (self.heads * self.head_dim, h),
                 (h, i), (h, i), (i, h)]
        return self.layers * r * sum(a + b for a, b in pairs)

    def training_memory_gb(self, dtype: str, batch: int, seq_len: int,
                           gradient_checkpointing: bool, *, r: int = 16,
                           qlora: bool = False) -> float:
        """:func:`estimate_training_memory_gb` for this shape with rank-``r`` LoRA.

        >>> round(SMOLVLM_500M.training_memory_gb("float16", 8, 832, False), 1)
        10.2
        """
        return estimate_training_memory_gb(
            self.params, self.lora_params(r), dtype, batch, seq_len, self.hidden, self.layers,
            gradient_checkpointing, intermediate=self.intermediate, qlora=qlora)


#: SmolVLM shapes from the public configs (see REFERENCE.md); params counted with random init.
SMOLVLM_256M = ModelShape("SmolVLM-256M", 256_500_000, 576, 1536, 30, 9, 3, 64)
SMOLVLM_500M = ModelShape("SmolVLM-500M", 507_500_000, 960, 2560, 32, 15, 5, 64)
#: Qwen2.5-VL-3B-Instruct's language model (its public config.json: hidden 2048, MLP 11008, 36
#: layers, 16 heads, 2 kv heads); params = the whole model with its vision tower.
QWEN25_VL_3B = ModelShape("Qwen2.5-VL-3B", 3_755_000_000, 2048, 11008, 36, 16, 2, 128)
#: The shape of each model :data:`cotlib.models.PRESETS` recommends, by its preset name.
MODEL_SHAPES: dict[str, ModelShape] = {
    "smolvlm-256m": SMOLVLM_256M, "smolvlm-500m": SMOLVLM_500M, "qwen2.5-vl-3b": QWEN25_VL_3B,
}


def estimate_training_memory_gb(
    params: int,
    trainable: int,
    dtype: str,
    batch: int,
    seq_len: int,
    hidden: int,
    layers: int,
    gradient_checkpointing: bool,
    *,
    intermediate: int | None = None,
    qlora: bool = False,
) -> float:
    """Peak GPU memory (GiB) of LoRA training, estimated from the model's shape.

    The formula (bytes; ``b`` = bytes per element of ``dtype``, tokens = batch × seq_len with the
    image tokens included, ``i`` = MLP width, default 8/3·hidden)::

        weights      = params × b                  (QLoRA: 0.55 bytes/param: 4-bit + scales)
        adapter      = trainable × 16              (fp32 weight 4 + grad 4 + AdamW m, v 8)
        per layer A  = tokens × (8·hidden + 4·i) × b
                       (saved for backward: norm outputs, q/k/v/o inputs and outputs, residuals,
                        gate/up/act/product of the SwiGLU MLP)
        activations  = layers × A                                    (no checkpointing)
                     = layers × tokens × hidden × b  +  A            (checkpointing: layer inputs,
                                                                      one layer recomputed)
        total        = 1.15 × (weights + adapter + activations) + 0.75 GiB  (allocator slack,
                                                                            CUDA context)

    Not counted: the frozen vision tower's forward (it keeps no activations in the course recipe;
    its transient peak is under the 15 % slack at the presets' image sizes) and the logits (TRL's
    fused LM head never builds the full ``tokens × vocab`` matrix).

    >>> round(estimate_training_memory_gb(507_500_000, 8_683_520, "float16", 4, 832,
    ...                                   960, 32, False, intermediate=2560), 1)
    6.1
    """
    if dtype not in BYTES:
        raise ValueError(f"dtype must be one of {sorted(BYTES)}, got {dtype!r}")
    b = BYTES[dtype]
    i = intermediate if intermediate is not None else (8 * hidden) // 3
    tokens = batch * seq_len
    weights = params * (0.55 if qlora else b)
    adapter = trainable * 16
    per_layer = tokens * (8 * hidden + 4 * i) * b
    if gradient_checkpointing:
        activations = layers * tokens * hidden * b + per_layer
    else:
        activations = layers * per_layer
    return (1.15 * (weights + adapter + activations)) / 2**30 + 0.75


def smolvlm_image_tokens(longest_edge: int, do_image_splitting: bool, width: int = 1,
                         height: int = 1, tile: int = 512, tokens_per_tile: int = 64) -> int:
    """Image tokens SmolVLM's processor spends on one image (mirrors Idefics3's tiling).

    Without splitting: one ``tile`` px view. With splitting: the image is resized so its longest
    side is ``longest_edge``, cut into ``tile`` px tiles, plus one global view.

    >>> smolvlm_image_tokens(2048, True), smolvlm_image_tokens(1024, True)
    (1088, 320)
    >>> smolvlm_image_tokens(2048, False), smolvlm_image_tokens(512, True)
    (64, 64)
    """
    if not do_image_splitting:
        return tokens_per_tile
    scale = longest_edge / max(width, height)
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    rows, cols = math.ceil(h / tile), math.ceil(w / tile)
    tiles = rows * cols + 1 if rows * cols > 1 else 1
    return tiles * tokens_per_tile


#: Text tokens per row the presets are sized for (LLaVA-CoT answers run to a few hundred tokens).
PRESET_TEXT_TOKENS = 512


@dataclass(frozen=True)
class TrainPreset:
    """Settings for one GPU, and how they were worked out (``rationale``). ``memory_gb`` is the
    memory torch reports for that card (GiB, e.g. 14.7 for a 16 GB T4)."""

    name: str
    gpu: str
    memory_gb: float
    dtype: str
    batch_size: int
    grad_accum: int
    longest_edge: int | None
    do_image_splitting: bool | None
    gradient_checkpointing: bool
    qlora: bool
    rationale: str


def plan_batch(shape: ModelShape, memory_gb: float, dtype: str, longest_edge: int,
               do_image_splitting: bool, *, qlora: bool = False, r: int = 16,
               text_tokens: int = PRESET_TEXT_TOKENS, budget: float = 0.8,
               effective_batch: int = 16) -> tuple[int, bool, float]:
    """Pick (batch size, gradient checkpointing, estimate GiB) for a GPU and an image size.

    Prefers no checkpointing (faster) at the largest batch in 16, 8, 4, 2, 1 that fits
    ``budget`` × memory; then checkpointing; raises :class:`TrainError` when nothing fits.

    >>> plan_batch(SMOLVLM_500M, 16, "float16", 1024, True)[:2]
    (8, False)
    """
    seq = smolvlm_image_tokens(longest_edge, do_image_splitting, tile=shape.tile,
                               tokens_per_tile=shape.tokens_per_tile) + text_tokens
    limit = budget * memory_gb
    for checkpointing in (False, True):
        for batch in (16, 8, 4, 2, 1):
            if batch > effective_batch:
                continue
            est = shape.training_memory_gb(dtype, batch, seq, checkpointing, r=r, qlora=qlora)
            if est <= limit:
                return batch, checkpointing, est
    raise TrainError(f"{shape.name} does not fit {memory_gb} GB even at batch 1 with "
                     "checkpointing; use QLoRA or a smaller image size.")


def _gpu_preset(name: str, gpu: str, memory_gb: float, dtype: str, longest_edge: int,
                do_image_splitting: bool, shape: ModelShape = SMOLVLM_500M,
                qlora: bool = False) -> TrainPreset:
    batch, checkpointing, est = plan_batch(shape, memory_gb, dtype, longest_edge,
                                           do_image_splitting, qlora=qlora)
    image = smolvlm_image_tokens(longest_edge, do_image_splitting)
    seq = image + PRESET_TEXT_TOKENS
    other = shape.training_memory_gb(dtype, batch, seq, not checkpointing, qlora=qlora)
    est_small = SMOLVLM_256M.training_memory_gb(dtype, batch, seq, checkpointing, qlora=qlora)
    tiling = (f"{longest_edge} px with tiling = {image // 64 - 1} tiles + 1 global view"
              if do_image_splitting and image > 64 else "one 512-px view, no tiling")
    rationale = (
        f"Sized for {shape.name} in {dtype}, LoRA r=16 on the language model "
        f"({shape.lora_params(16) / 1e6:.1f}M trainable). Images: {tiling} -> {image} image "
        f"tokens; + {PRESET_TEXT_TOKENS} text tokens = {seq} per row. "
        f"Batch {batch}: estimate {est:.1f} GB with checkpointing "
        f"{'on' if checkpointing else 'off'} ({other:.1f} GB {'off' if checkpointing else 'on'}) "
        f"against a budget of 80% of the card's {memory_gb:g} GB = {0.8 * memory_gb:.1f} GB; "
        f"SmolVLM-256M at the same settings: {est_small:.1f} GB. "
        f"Gradient accumulation {max(1, 16 // batch)} keeps the effective batch at 16."
    )
    return TrainPreset(name, gpu, memory_gb, dtype, batch, max(1, 16 // batch), longest_edge,
                       do_image_splitting, checkpointing, qlora, rationale)


def _presets() -> dict[str, TrainPreset]:
    cpu = TrainPreset(
        "cpu", "CPU (tiny models)", 0.0, "float32", 8, 1, None, None, False, False,
        "For the tiny offline models (about 0.3M parameters, 36-49 image tokens at 192 px): "
        "fp32, batch 8, the processor's own image size, no checkpointing (RAM is not the limit; "
        "speed is). Real models on a CPU are impractically slow: use a GPU preset.",
    )
    gpus = [
        _gpu_preset("t4-16gb", "Colab T4 16 GB", 14.7, "float16", 1024, True),
        _gpu_preset("l4-24gb", "L4 24 GB", 22.0, "bfloat16", 1536, True),
        _gpu_preset("a100-40gb", "A100 40 GB", 39.4, "bfloat16", 2048, True),
        _gpu_preset("a100-80gb", "A100 80 GB", 79.1, "bfloat16", 2048, True),
        _gpu_preset("h100-80gb", "H100 80 GB", 79.1, "bfloat16", 2048, True),
    ]
    return {p.name: p for p in [cpu, *gpus]}


#: Hardware presets; ``rationale`` says how each batch size and image size was worked out.
HARDWARE_PRESETS: dict[str, TrainPreset] = _presets()
#: The former name of :data:`HARDWARE_PRESETS` (notebook 05 names it); ``cotlib.models.PRESETS``
#: is another thing (model names).
PRESETS = HARDWARE_PRESETS


def auto_checkpointing(shape: ModelShape, dtype: str, batch: int, seq_len: int,
                       memory_gb: float, *, r: int = 16, qlora: bool = False,
                       budget: float = 0.8) -> tuple[bool, float]:
    """``gradient_checkpointing="auto"``'s rule: on when the estimate without it exceeds
    ``budget`` x ``memory_gb``. Returns (on, the estimate without it in GiB).

    >>> auto_checkpointing(SMOLVLM_500M, "float16", 8, 832, 14.7)[0]
    False
    """
    est = shape.training_memory_gb(dtype, batch, seq_len, False, r=r, qlora=qlora)
    return est > budget * memory_gb, est


def lora_memory_gb(model: str, preset: str = "t4-16gb", *, r: int = 16) -> float:
    """Estimated peak GiB of LoRA training of a recommended model (a name in
    :data:`cotlib.models.PRESETS`) at a hardware preset's settings: its dtype, image size (as many
    image tokens as its SmolVLM setting, which is what a Qwen-VL model gets too), batch, and the
    checkpointing ``"auto"`` would pick on its card. Notebook 00's table shows it.

    >>> round(lora_memory_gb("smolvlm-500m"), 1), round(lora_memory_gb("smolvlm-256m"), 1)
    (10.2, 6.0)
    """
    if model not in MODEL_SHAPES:
        raise ValueError(f"no shape for {model!r}; known: {sorted(MODEL_SHAPES)}")
    if preset not in HARDWARE_PRESETS or not HARDWARE_PRESETS[preset].memory_gb:
        gpus = sorted(k for k, p in HARDWARE_PRESETS.items() if p.memory_gb)
        raise ValueError(f"{preset!r} is not a GPU preset; choose one of {gpus}")
    shape, p = MODEL_SHAPES[model], HARDWARE_PRESETS[preset]
    seq = smolvlm_image_tokens(p.longest_edge, bool(p.do_image_splitting)) + PRESET_TEXT_TOKENS
    on, without = auto_checkpointing(shape, p.dtype, p.batch_size, seq, p.memory_gb, r=r,
                                     qlora=p.qlora)
    if not on:
        return without
    return shape.training_memory_gb(p.dtype, p.batch_size, seq, True, r=r, qlora=p.qlora)


def pick_preset(hw: env.Hardware | None = None) -> TrainPreset:
    """The preset for this machine: ``cpu``, else the largest GPU preset that fits its memory.

    >>> pick_preset(env.Hardware("cuda", "Tesla T4", 14.7, False, "float16", 2)).name
    't4-16gb'
    """
    hw = hw or env.hardware()
    if hw.device != "cuda" or not hw.gpu_memory_gb:
        return HARDWARE_PRESETS["cpu"]
    name = (hw.gpu_name or "").upper()
    if "H100" in name or "H200" in name:
        return HARDWARE_PRESETS["h100-80gb"]
    fits = [p for p in HARDWARE_PRESETS.values()
            if p.memory_gb and p.memory_gb <= hw.gpu_memory_gb + 0.5]
    return max(fits, key=lambda p: p.memory_gb) if fits else HARDWARE_PRESETS["t4-16gb"]


def shape_of(model) -> ModelShape:
    """The :class:`ModelShape` of a loaded model, read from its text config."""
    text = model.config.get_text_config()
    heads = text.num_attention_heads
    return ModelShape(
        getattr(model.config, "_name_or_path", "") or type(model).__name__,
        sum(p.numel() for p in model.parameters()), text.hidden_size, text.intermediate_size,
        text.num_hidden_layers, heads, getattr(text, "num_key_value_heads", None) or heads,
        getattr(text, "head_dim", None) or text.hidden_size // heads)

"""Which modules LoRA adapts: the language model's linear layers (and, on request, the vision
encoder's), found by one regex per part over every registered family (:mod:`cotlib.families`).

>>> is_language_model_target("model.text_model.layers.0.self_attn.q_proj")
True
>>> is_language_model_target("model.vision_model.encoder.layers.0.self_attn.q_proj")
False
"""

from __future__ import annotations

import re

from cotlib import families, models
from cotlib.train.settings import TrainError

#: Linear layers of a Llama/Qwen-style decoder block (attention and SwiGLU MLP).
LM_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: Linear layers of the vision encoders: SigLIP (Idefics3/SmolVLM) and Qwen-VL's ViT.
VISION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj", "qkv", "proj", "fc1", "fc2",
                      "gate_proj", "up_proj", "down_proj")

#: Language-model-only LoRA targets; matches every registered family's module names
#: (Idefics3: ``model.text_model...``, Qwen2-VL and LLaVA: ``model.language_model...``; see
#: :mod:`cotlib.families`). PEFT applies a string ``target_modules`` with ``re.fullmatch``.
LM_TARGET_REGEX = (r".*(" + "|".join(families.part_names("language")) + r").*\.("
                   + "|".join(LM_PROJECTIONS) + ")")
VISION_TARGET_REGEX = (r".*(" + "|".join(families.part_names("vision")) + r")\..*\.("
                       + "|".join(VISION_PROJECTIONS) + ")")

#: Where each family keeps its parts (module paths inside ``...ForConditionalGeneration``).
FAMILY_PARTS: dict[str, dict[str, str]] = {f.name: f.parts for f in families.REGISTRY.values()}
#: Modules QLoRA keeps unquantised, besides ``lm_head``: every family's vision tower.
QLORA_SKIP = families.part_names("vision")


def is_language_model_target(name: str) -> bool:
    """True when LoRA (language-model-only recipe) adapts the module called ``name``.

    >>> is_language_model_target("model.language_model.layers.3.mlp.down_proj")
    True
    >>> is_language_model_target("lm_head")
    False
    >>> is_language_model_target("model.visual.blocks.0.attn.qkv")
    False
    """
    return re.fullmatch(LM_TARGET_REGEX, name) is not None


def target_regex(adapt_vision: bool = False) -> str:
    """The ``target_modules`` regex: language model only, or language model + vision encoder.

    >>> bool(re.fullmatch(target_regex(True), "model.vision_model.encoder.layers.0.mlp.fc1"))
    True
    """
    if not adapt_vision:
        return LM_TARGET_REGEX
    return f"({LM_TARGET_REGEX})|({VISION_TARGET_REGEX})"


def family_of(model_or_config) -> str:
    """The registered family (:mod:`cotlib.families`) of a model or config, by its model type.

    >>> from transformers import Qwen2VLConfig
    >>> family_of(Qwen2VLConfig())
    'qwen2_vl'
    """
    family = families.find(model_or_config)
    if family is None:
        config = getattr(model_or_config, "config", model_or_config)
        labels = ", ".join(f.label for f in families.REGISTRY.values())
        raise TrainError(f"unknown model family {getattr(config, 'model_type', '')!r}; the "
                         f"course supports {models.FAMILIES} ({labels}). A new family is one "
                         "entry in cotlib.families.REGISTRY.")
    return family.name


def lora_targets(model, adapt_vision: bool = False) -> list[str]:
    """Names of the modules a LoRA config built by :func:`lora_config` would adapt in ``model``.

    >>> m, _ = models.load(models.tiny("qwen2_vl"))
    >>> lora_targets(m)[0]
    'model.language_model.layers.0.self_attn.q_proj'
    """
    pattern = re.compile(target_regex(adapt_vision))
    return [name for name, _ in model.named_modules() if pattern.fullmatch(name)]


def lora_config(r: int = 16, alpha: int | None = None, dropout: float = 0.05,
                adapt_vision: bool = False, modules_to_save: list[str] | None = None):
    """A PEFT ``LoraConfig`` for a causal VLM (alpha defaults to 2·r).

    ``modules_to_save`` names modules trained in full and saved with the adapter, e.g.
    ``["lm_head"]`` when the answers use tokens the base model never wrote (a tiny base learning
    the stage tags).

    >>> lora_config(8).target_modules == LM_TARGET_REGEX
    True
    """
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha if alpha is not None else 2 * r,
                      lora_dropout=dropout, target_modules=target_regex(adapt_vision),
                      modules_to_save=list(modules_to_save) if modules_to_save else None,
                      bias="none", task_type="CAUSAL_LM")


def language_model_of(model):
    """The decoder (language model) module of a VLM, PEFT-wrapped or not: where its family's
    registry entry says, else a submodule named as some family's is."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    family = families.find(base)
    if family is not None:
        return base.get_submodule(family.language)
    inner = getattr(base, "model", base)
    for name in families.part_names("language"):
        if hasattr(inner, name):
            return getattr(inner, name)
    raise TrainError(f"cannot find the language model inside {type(base).__name__}")

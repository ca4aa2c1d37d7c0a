"""The model families the library knows: one :class:`Family` entry each, holding everything that
differs between them — which ``model_type``/processor classes belong to it, where its language
model, vision tower and connector live, how its processor's image size is set, what decoding must
carry along (Qwen-VL's 3-D rotary offsets and per-token inputs), and how to build a tiny random
twin offline. ``models``, ``train`` and ``infer`` read this registry; adding a family is one
entry in ``REGISTRY`` (plus its tests, which the family-parametrised tests already are).

>>> from cotlib import families
>>> list(families.REGISTRY)
['idefics3', 'qwen2_vl', 'llava']
>>> families.REGISTRY["llava"].vision
'model.vision_tower'
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Family:
    """One model family: what the library needs to know to load, train and decode it.

    ``build_tiny(spec, tokenizer_object)`` returns a random ``(model, processor)`` pair sized by
    ``spec`` (a ``models.TinySpec``) around a byte-level BPE tokenizer trained on the course text
    with ``specials``. ``set_image_size(processor, longest_edge, do_image_splitting)`` applies the
    size (``None``: leave as is) and returns what is now in effect; it raises ``ValueError`` for a
    size the family cannot take. ``preset_edge(smolvlm_edge, smolvlm_tokens)`` is the
    ``longest_edge`` giving this family as many image tokens as a SmolVLM preset sized at
    ``smolvlm_edge`` (``smolvlm_tokens`` tokens) spends; ``None`` for a fixed image size.
    """

    name: str
    label: str  # the models it covers, for messages
    model_types: tuple[str, ...]  # ``config.model_type`` values
    processors: tuple[str, ...]  # processor class names
    language: str  # module paths inside ``...ForConditionalGeneration``
    vision: str
    connector: str
    specials: tuple[str, ...]  # the tiny tokenizer's special tokens
    build_tiny: Callable[[Any, Any], tuple[Any, Any]]
    set_image_size: Callable[[Any, int | None, bool | None], dict[str, Any]]
    preset_edge: Callable[[int, int], int | None]
    #: Keeps 3-D rotary offsets in a submodule's ``rope_deltas`` (Qwen-VL): decoding saves and
    #: restores them and continues from the positions the model computed.
    rope_deltas: bool = False
    #: Per-token processor outputs besides ``input_ids``/``attention_mask``: decoding extends them
    #: with zeros for every token it appends.
    token_inputs: tuple[str, ...] = ()

    @property
    def parts(self) -> dict[str, str]:
        """``{"language": ..., "vision": ..., "connector": ...}`` module paths."""
        return {"language": self.language, "vision": self.vision, "connector": self.connector}


# --------------------------------------------------------------------------------------------
# Idefics3 / SmolVLM
# --------------------------------------------------------------------------------------------

IDEFICS3_SPECIALS = (
    ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>",
     "<image>", "<global-img>"]
    + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
)

# SmolVLM's chat template shape: "<|im_start|>User:<image>question<end_of_utterance>\nAssistant:"
IDEFICS3_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}{% else %}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def _build_idefics3(spec, tokenizer_object):
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    tok = TokenizersBackend(
        tokenizer_object=tokenizer_object,
        bos_token="<|im_start|>", eos_token="<end_of_utterance>",
        pad_token="<|endoftext|>", unk_token="<|endoftext|>",
    )
    scale = 2
    patches = (spec.image_size // spec.patch_size) ** 2
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": spec.image_size},
        max_image_size={"longest_edge": spec.image_size},
        do_image_splitting=False,
    )
    processor = Idefics3Processor(
        image_processor=image_processor, tokenizer=tok,
        image_seq_len=patches // scale**2, chat_template=IDEFICS3_CHAT_TEMPLATE,
    )
    config = Idefics3Config(
        text_config=dict(
            model_type="llama", vocab_size=len(tok), hidden_size=spec.hidden,
            intermediate_size=spec.hidden * 2, num_hidden_layers=spec.layers,
            num_attention_heads=spec.heads, num_key_value_heads=spec.kv_heads,
            max_position_embeddings=4096, pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
            tie_word_embeddings=False,
        ),
        vision_config=dict(
            hidden_size=spec.vision_hidden, intermediate_size=spec.vision_hidden * 2,
            num_hidden_layers=spec.vision_layers, num_attention_heads=spec.heads,
            image_size=spec.image_size, patch_size=spec.patch_size,
        ),
        scale_factor=scale,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    return Idefics3ForConditionalGeneration(config), processor


def _tiles_image_size(processor, longest_edge: int | None,
                      do_image_splitting: bool | None) -> dict[str, Any]:
    """Idefics3/SmolVLM: ``longest_edge`` is the resize target before tiling (at least one tile)
    and ``do_image_splitting`` switches tiling on/off."""
    ip = processor.image_processor
    if longest_edge is not None:
        tile = ip.max_image_size["longest_edge"]
        if longest_edge < tile:
            raise ValueError(f"longest_edge {longest_edge} is below this model's tile size "
                             f"{tile}; use >= {tile} (or turn tiling off).")
        ip.size = {"longest_edge": int(longest_edge)}
    if do_image_splitting is not None:
        ip.do_image_splitting = bool(do_image_splitting)
    return {"longest_edge": ip.size["longest_edge"], "do_image_splitting": ip.do_image_splitting}


# --------------------------------------------------------------------------------------------
# Qwen2-VL / Qwen2.5-VL
# --------------------------------------------------------------------------------------------

QWEN2_VL_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>",
]

# Qwen2-VL's chat template shape (no default system prompt in the tiny twin).
QWEN2_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% elif part['type'] == 'text' %}"
    "{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _build_qwen2_vl(spec, tokenizer_object):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    try:
        from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

        Qwen2VLVideoProcessor()
    except ImportError as err:  # torchvision missing
        raise ImportError(
            "Qwen-VL processors need torchvision in transformers 5. Install it: "
            "pip install torchvision (a build matching your torch)."
        ) from err

    tok = TokenizersBackend(
        tokenizer_object=tokenizer_object,
        eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
    )
    pixels = dict(min_pixels=56 * 56, max_pixels=(spec.image_size + 28) ** 2)
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=14, merge_size=2, temporal_patch_size=2, **pixels
    )
    video_processor = Qwen2VLVideoProcessor(
        patch_size=14, merge_size=2, temporal_patch_size=2, **pixels
    )
    processor = Qwen2VLProcessor(
        image_processor=image_processor, tokenizer=tok, video_processor=video_processor,
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )
    head_dim = spec.hidden // spec.heads
    half = head_dim // 2  # mrope_section must sum to head_dim / 2
    section = [half - 2 * (half // 3), half // 3, half // 3]
    ids = {name: tok.convert_tokens_to_ids(tokn) for name, tokn in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"),
        ("vision_end_token_id", "<|vision_end|>"))}
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tok), hidden_size=spec.hidden, intermediate_size=spec.hidden * 2,
            num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
            num_key_value_heads=spec.kv_heads, max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "mrope_section": section,
                             "rope_theta": 10000.0},
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
            tie_word_embeddings=False,
        ),
        vision_config=dict(
            depth=spec.vision_layers, embed_dim=spec.vision_hidden, hidden_size=spec.hidden,
            mlp_ratio=2, num_heads=spec.heads, patch_size=14, spatial_merge_size=2,
            temporal_patch_size=2, in_chans=3,
        ),
        tie_word_embeddings=False,
        **ids,
    )
    return Qwen2VLForConditionalGeneration(config), processor


def _pixels_image_size(processor, longest_edge: int | None,
                       do_image_splitting: bool | None) -> dict[str, Any]:
    """Qwen-VL: ``longest_edge``² is the pixel cap (``max_pixels``); there is no tiling."""
    ip = processor.image_processor
    if longest_edge is not None:
        size = dict(ip.size)
        size["longest_edge"] = int(longest_edge) ** 2
        ip.size = size
        if hasattr(ip, "max_pixels"):
            ip.max_pixels = int(longest_edge) ** 2
    return {"longest_edge": int(math.isqrt(ip.size["longest_edge"])), "do_image_splitting": None}


# --------------------------------------------------------------------------------------------
# LLaVA (a SigLIP vision tower, a two-layer projector, a Llama language model)
# --------------------------------------------------------------------------------------------

LLAVA_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"]

# The ChatML shape of llava-interleave / LLaVA-OneVision (no default system prompt).
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _build_llava(spec, tokenizer_object):
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    tok = TokenizersBackend(
        tokenizer_object=tokenizer_object,
        eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
    )
    # LLaVA keeps one token per patch (no pixel shuffle): patches twice Idefics3's size give the
    # same 36 image tokens per 192 px scene as its 16 px patches merged 2x2.
    patch = 2 * spec.patch_size
    image_processor = SiglipImageProcessorPil(
        size={"height": spec.image_size, "width": spec.image_size})
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tok, patch_size=patch,
        vision_feature_select_strategy="full", num_additional_image_tokens=0,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    config = LlavaConfig(
        text_config=dict(
            model_type="llama", vocab_size=len(tok), hidden_size=spec.hidden,
            intermediate_size=spec.hidden * 2, num_hidden_layers=spec.layers,
            num_attention_heads=spec.heads, num_key_value_heads=spec.kv_heads,
            max_position_embeddings=4096, pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id, bos_token_id=None, tie_word_embeddings=False,
        ),
        vision_config=dict(
            model_type="siglip_vision_model", hidden_size=spec.vision_hidden,
            intermediate_size=spec.vision_hidden * 2, num_hidden_layers=spec.vision_layers,
            num_attention_heads=spec.heads, image_size=spec.image_size, patch_size=patch,
        ),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="full", vision_feature_layer=-1,
        pad_token_id=tok.pad_token_id, tie_word_embeddings=False,
    )
    return LlavaForConditionalGeneration(config), processor


def _fixed_image_size(processor, longest_edge: int | None,
                      do_image_splitting: bool | None) -> dict[str, Any]:
    """LLaVA: the vision tower's position embeddings fix the image size; there is no tiling."""
    size = processor.image_processor.size
    edge = max(size.get("height", 0), size.get("width", 0), size.get("shortest_edge", 0))
    if longest_edge is not None and longest_edge != edge:
        raise ValueError(f"this model's vision tower takes {edge} px images only; leave "
                         "longest_edge unset (the processor resizes every image to it).")
    return {"longest_edge": edge, "do_image_splitting": None}


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------

REGISTRY: dict[str, Family] = {f.name: f for f in (
    Family(
        name="idefics3", label="SmolVLM/Idefics3", model_types=("idefics3", "smolvlm"),
        processors=("Idefics3Processor", "SmolVLMProcessor"),
        language="model.text_model", vision="model.vision_model", connector="model.connector",
        specials=tuple(IDEFICS3_SPECIALS), build_tiny=_build_idefics3,
        set_image_size=_tiles_image_size, preset_edge=lambda edge, tokens: edge,
    ),
    Family(
        name="qwen2_vl", label="Qwen2-VL/Qwen2.5-VL",
        model_types=("qwen2_vl", "qwen2_5_vl", "qwen3_vl"),
        processors=("Qwen2VLProcessor", "Qwen2_5_VLProcessor", "Qwen3VLProcessor"),
        language="model.language_model", vision="model.visual", connector="model.visual.merger",
        specials=tuple(QWEN2_VL_SPECIALS), build_tiny=_build_qwen2_vl,
        # one token per 28x28 px: the pixel budget giving as many tokens as the SmolVLM preset
        set_image_size=_pixels_image_size, preset_edge=lambda edge, tokens: 28 * math.isqrt(tokens),
        rope_deltas=True, token_inputs=("mm_token_type_ids",),
    ),
    Family(
        name="llava", label="LLaVA", model_types=("llava",), processors=("LlavaProcessor",),
        language="model.language_model", vision="model.vision_tower",
        connector="model.multi_modal_projector",
        specials=tuple(LLAVA_SPECIALS), build_tiny=_build_llava,
        set_image_size=_fixed_image_size, preset_edge=lambda edge, tokens: None,
    ),
)}


def names() -> tuple[str, ...]:
    """The registered families' names, in registry order.

    >>> names()[:2]
    ('idefics3', 'qwen2_vl')
    """
    return tuple(REGISTRY)


def get(name: str) -> Family:
    """The family called ``name``; ``KeyError`` naming the known ones otherwise."""
    if name not in REGISTRY:
        raise KeyError(f"unknown model family {name!r}; choose one of {names()}")
    return REGISTRY[name]


def find(model_or_config) -> Family | None:
    """The family of a model (or its config) by ``config.model_type``; ``None`` if unregistered.

    >>> from transformers import Qwen2VLConfig
    >>> find(Qwen2VLConfig()).name
    'qwen2_vl'
    """
    config = getattr(model_or_config, "config", model_or_config)
    kind = getattr(config, "model_type", "")
    return next((f for f in REGISTRY.values() if kind in f.model_types), None)


def for_processor(processor) -> Family | None:
    """The family of a processor by its class name; ``None`` if unregistered."""
    kind = type(processor).__name__
    return next((f for f in REGISTRY.values() if kind in f.processors), None)


def part_names(part: str) -> list[str]:
    """The last path component of ``part`` ("language", "vision" or "connector") over all
    families, sorted and without repeats: what the LoRA target regexes match on.

    >>> part_names("language")
    ['language_model', 'text_model']
    """
    return sorted({getattr(f, part).rsplit(".", 1)[-1] for f in REGISTRY.values()})


def token_inputs(model) -> tuple[str, ...]:
    """Per-token inputs decoding must extend for ``model``: its family's, or every family's for
    a model no entry covers (extending an absent input is a no-op)."""
    family = find(model)
    if family is not None:
        return family.token_inputs
    return tuple(dict.fromkeys(n for f in REGISTRY.values() for n in f.token_inputs))

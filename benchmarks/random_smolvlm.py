"""SmolVLM at its real sizes with random weights, for the benchmarks (bench_infer, bench_train).

Idefics3 built from SmolVLM-256M / -500M-Instruct's configs (see REFERENCE.md): the text model's
sizes below, vision SigLIP-B/16 at 512 px, scale factor 4 -> 64 tokens per tile, image splitting
on (a 512 px image becomes 4x4 tiles + a global view = 1088 image tokens), and the course's tiny
tokenizer and chat template. Nothing is downloaded.
"""

from __future__ import annotations

SMOLVLM = {  # text sizes
    "smolvlm-256m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3),
    "smolvlm-500m": dict(hidden_size=960, intermediate_size=2560, num_hidden_layers=32,
                         num_attention_heads=15, num_key_value_heads=5),
}


def smolvlm_processor_and_config(name: str):
    """(processor, Idefics3Config) of SmolVLM ``name`` ("smolvlm-256m" or "smolvlm-500m")."""
    from transformers import Idefics3Config, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    from cotlib import models

    if name not in SMOLVLM:
        raise ValueError(f"unknown SmolVLM size {name!r}; known: {list(SMOLVLM)}")
    _, tiny = models.load(models.tiny("idefics3"), device="cpu", dtype="float32")
    tok = tiny.tokenizer
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessorPil(
            size={"longest_edge": 2048}, max_image_size={"longest_edge": 512},
            do_image_splitting=True),
        tokenizer=tok, image_seq_len=64, chat_template=tiny.chat_template)
    config = Idefics3Config(
        text_config=dict(
            model_type="llama", vocab_size=49280, head_dim=64, max_position_embeddings=8192,
            rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
            pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id, tie_word_embeddings=False, **SMOLVLM[name]),
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                           num_attention_heads=12, image_size=512, patch_size=16),
        scale_factor=4, image_token_id=tok.convert_tokens_to_ids("<image>"),
        pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    return processor, config


def build_random_smolvlm(name: str, device: str, dtype):
    """(model, processor): SmolVLM ``name`` with random weights (``torch.manual_seed(0)``) made on
    ``device`` and cast to ``dtype``, in eval mode."""
    import torch
    from transformers import Idefics3ForConditionalGeneration

    processor, config = smolvlm_processor_and_config(name)
    torch.manual_seed(0)
    with torch.device(device):
        model = Idefics3ForConditionalGeneration(config)
    model.to(dtype=dtype).eval()
    return model, processor

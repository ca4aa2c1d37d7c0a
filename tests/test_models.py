"""Tiny models of every family: build, save, reload, generate from an image, train a step."""

from __future__ import annotations

import socket

import pytest
import torch
from PIL import Image

from cotlib import models, stages, train


def _inputs(processor, family: str, question: str, answer: str | None = None):
    text = models.chat_prompt(processor, question) + (answer or "")
    return models.encode(processor, [Image.new("RGB", (192, 192), "white")], [text])


@pytest.fixture(scope="module", params=models.FAMILIES)
def tiny_model(request, tiny_cache):
    folder = models.tiny(request.param)
    model, processor = models.load(folder)
    return request.param, folder, model, processor


def test_tiny_folder_is_a_pretrained_folder(tiny_model):
    family, folder, model, processor = tiny_model
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert model.config.model_type == family
    assert models.count_parameters(model)["total"] < 2_000_000


def test_tiny_is_cached_and_deterministic(tiny_model, tmp_path):
    family, folder, model, _ = tiny_model
    assert models.tiny(family) == folder  # cache hit
    other = models.tiny(family, tmp_path / "again")
    again, _ = models.load(other)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name


def test_tokenizer_knows_stage_tags_and_specials(tiny_model):
    family, _, _, processor = tiny_model
    tok = processor.tokenizer
    text = stages.render("plan", "a red circle", "one red object", "1")
    assert tok.decode(tok(text)["input_ids"]) == text
    # Stage tags are plain text (not special tokens), as in LLaVA-CoT.
    assert not any(tag in tok.all_special_tokens for tag in ("<SUMMARY>", "</CONCLUSION>"))
    image_token = {"idefics3": "<image>", "qwen2_vl": "<|image_pad|>", "llava": "<image>"}[family]
    assert len(tok(image_token, add_special_tokens=False)["input_ids"]) == 1
    specials = {t.content for t in tok.added_tokens_decoder.values() if t.special}
    assert image_token in specials


def test_generate_from_an_image(tiny_model):
    family, _, model, processor = tiny_model
    inputs = _inputs(processor, family, "How many red objects are there?")
    image_id = model.config.image_token_id
    assert (inputs["input_ids"] == image_id).sum() > 0
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1]:]
    assert 1 <= len(new) <= 6
    assert isinstance(processor.decode(new), str)


def test_one_training_step_changes_weights_and_loss_is_finite(tiny_model):
    family, folder, _, _ = tiny_model
    model, processor = models.load(folder)  # a fresh copy to train
    model.train()
    inputs = _inputs(processor, family, "How many red objects?", "<CONCLUSION> 2 </CONCLUSION>")
    labels = inputs["input_ids"].clone()
    labels[labels == model.config.image_token_id] = -100
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = model(**inputs, labels=labels).loss
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert any(("vision" in n or "visual" in n) for n in changed)
    assert any("lm_head" in n for n in changed)


def test_unknown_model_offline_gives_a_clear_error():
    with pytest.raises(models.ModelLoadError) as info:
        models.load("no-such-org/no-such-vlm-123")
    message = str(info.value)
    assert "HF_HUB_OFFLINE" in message and "tiny" in message
    assert "Traceback" not in message


def test_missing_local_folder_gives_a_clear_error(tmp_path):
    with pytest.raises(models.ModelLoadError, match="No model folder"):
        models.load(tmp_path / "nope")


def test_presets_name_real_models():
    assert {"smolvlm-256m", "smolvlm-500m", "qwen2.5-vl-3b"} <= set(models.PRESETS)
    for preset in models.PRESETS.values():
        assert preset.family in models.FAMILIES
        assert preset.inference_gb > 0
        assert train.lora_memory_gb(preset.name) > preset.inference_gb  # every one has a shape
    assert models.resolve("smolvlm-256m") == "HuggingFaceTB/SmolVLM-256M-Instruct"


def test_network_is_blocked_in_tests():
    with pytest.raises(RuntimeError, match="offline"):
        socket.create_connection(("93.184.216.34", 80), timeout=1)


def test_tiny_cache_builds_by_renaming_into_place(tmp_path, monkeypatch):
    """Cache builds are staged next to the target and renamed in: no half-written folder is
    ever visible to a parallel worker, a rebuild replaces the folder, nothing is left behind."""
    monkeypatch.setenv("COTLIB_CACHE", str(tmp_path))
    folder = models.tiny("idefics3")
    first = (folder / "model.safetensors").stat().st_mtime_ns
    (folder / "stale.txt").write_text("from an older build")
    assert models.tiny("idefics3", rebuild=True) == folder
    assert not (folder / "stale.txt").exists()
    assert (folder / "model.safetensors").stat().st_mtime_ns >= first
    (folder / "cotlib_tiny.json").unlink()  # a build killed before its marker: built again
    assert models.tiny("idefics3") == folder and (folder / "cotlib_tiny.json").exists()
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no staging folders

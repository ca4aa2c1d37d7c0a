"""LoRA SFT with TRL: targets, masking in a real collated batch, the tiny run, save/load/merge,
resume, bad input, memory estimate and presets, and a 2-process accelerate run on CPU."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from cotlib import env, models, train

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny matrices train far faster on one thread (and the other core stays free)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def traces():
    """The shipped training split as four-stage traces (rendered from the tasks' own solver)."""
    return train.synthetic_traces()


def _mean(xs):
    return sum(xs) / len(xs)


# --------------------------------------------------------------------------------------------
# Which modules LoRA adapts
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", models.FAMILIES)
def test_lm_targets_are_exactly_the_language_model_projections(family, tiny_cache):
    model, _ = models.load(models.tiny(family))
    linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    language = train.FAMILY_PARTS[family]["language"] + "."
    expected = [n for n in linear if n.startswith(language)
                and n.rsplit(".", 1)[-1] in train.LM_PROJECTIONS]
    assert train.lora_targets(model) == expected
    assert len(expected) == 7 * model.config.get_text_config().num_hidden_layers
    vision = train.FAMILY_PARTS[family]["vision"] + "."
    with_vision = train.lora_targets(model, adapt_vision=True)
    added = set(with_vision) - set(expected)
    assert added and all(n.startswith(vision) for n in added)
    assert "lm_head" not in with_vision
    assert train.family_of(model) == family


def test_lm_regex_on_real_architectures_built_on_meta():
    """Module names of the real SmolVLM-256M and Qwen2-VL layouts (no weights allocated)."""
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
    )

    smol = Idefics3Config(
        text_config=dict(model_type="llama", hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         vocab_size=49280),
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                           num_attention_heads=12, image_size=512, patch_size=16),
        scale_factor=4)
    with torch.device("meta"):
        for model in (Idefics3ForConditionalGeneration(smol),
                      Qwen2VLForConditionalGeneration(Qwen2VLConfig())):
            targets = train.lora_targets(model)
            layers = model.config.get_text_config().num_hidden_layers
            assert len(targets) == 7 * layers
            assert all(("text_model" in t) or ("language_model" in t) for t in targets)


# --------------------------------------------------------------------------------------------
# The recipe: config, masking in a real batch, frozen vision tower
# --------------------------------------------------------------------------------------------


def test_sft_config_overrides_trl_defaults_by_hardware(tmp_path):
    settings = train.TrainSettings(output_dir=str(tmp_path))
    cpu = train.Resolved("cpu", "cpu", "float32", 8, 1, None, None, False, "", False, 36)
    cfg = train.sft_config(settings, cpu)
    assert (cfg.bf16, cfg.fp16) == (False, False)  # TRL's default bf16=True would fail here
    assert cfg.max_length is None and cfg.completion_only_loss is True
    assert not cfg.packing and not cfg.padding_free and not cfg.gradient_checkpointing
    t4 = train.Resolved("t4-16gb", "cuda", "float16", 8, 2, 1024, True, True, "", False, 320)
    cfg = train.sft_config(settings, t4)
    assert (cfg.bf16, cfg.fp16) == (False, True)
    # Language-model-only checkpointing is applied by build_trainer, not by the Trainer.
    assert not cfg.gradient_checkpointing
    assert train.sft_config(replace_adapt(settings), t4).gradient_checkpointing
    assert train.precision_flags("bfloat16") == {"bf16": True, "fp16": False}


def replace_adapt(settings):
    from dataclasses import replace

    return replace(settings, adapt_vision=True)


@pytest.mark.parametrize("family", models.FAMILIES)
def test_completion_only_loss_masks_prompt_and_image_tokens(family, traces, tiny_cache, tmp_path):
    prep = train.build_trainer(traces.select(range(6)), model=f"tiny-{family}",
                               output_dir=str(tmp_path), batch_size=3, verbose=False)
    batch = next(iter(prep.trainer.get_train_dataloader()))  # TRL's collator, real rows
    tok = prep.processor.tokenizer
    image_id = prep.processor.image_token_id if hasattr(prep.processor, "image_token_id") \
        else tok.convert_tokens_to_ids(prep.processor.image_token)
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert (ids == image_id).sum() == 3 * prep.resolved.image_tokens > 0
    assert (labels[ids == image_id] == -100).all()
    assert (labels[mask == 0] == -100).all()
    completions = {row["completion"][0]["content"][0]["text"].strip() for row in traces}
    for row_ids, row_labels in zip(ids, labels):
        trained = (row_labels != -100).nonzero().flatten()
        first = int(trained[0])
        # one contiguous trained span, after everything the prompt holds
        assert trained.tolist() == list(range(first, int(trained[-1]) + 1))
        assert (row_ids[:first] == image_id).any()
        text = tok.decode(row_ids[trained])
        assert text.strip().startswith("<SUMMARY>") and tok.eos_token in text
        assert text.replace(tok.eos_token, "").strip() in completions


def _padding_share(prep, epochs: int = 3) -> float:
    """Padded positions / all positions over ``epochs`` passes of the trainer's dataloader."""
    padded = total = 0
    loader = prep.trainer.get_train_dataloader()
    for _ in range(epochs):
        for batch in loader:
            mask = batch["attention_mask"]
            padded += int((mask == 0).sum())
            total += mask.numel()
    return padded / total


def test_group_by_length_batches_similar_rows_with_less_padding(traces, tiny_cache, tmp_path):
    from transformers.trainer_pt_utils import LengthGroupedSampler

    rows = traces.select(range(96))
    common = dict(model="tiny-idefics3", batch_size=4, verbose=False)
    grouped = train.build_trainer(rows, output_dir=str(tmp_path / "g"), group_by_length=True,
                                  **common)
    plain = train.build_trainer(rows, output_dir=str(tmp_path / "p"), **common)
    loader = grouped.trainer.get_train_dataloader()
    sampler = loader.batch_sampler.sampler  # accelerate's wrapper keeps the Trainer's sampler
    assert isinstance(sampler, LengthGroupedSampler)
    torch.manual_seed(0)
    order = list(sampler)
    assert sorted(order) == list(range(len(rows)))  # every row once per epoch
    # the sort key is the collated length (text + image tokens) up to the end-of-turn tokens
    # TRL's collator appends to every row
    lengths = train.row_lengths(rows, grouped.processor)
    some = [0, 5, 17, 42]
    batch = grouped.trainer.data_collator([grouped.trainer.train_dataset[i] for i in some])
    collated = batch["attention_mask"].sum(dim=1).tolist()
    assert len({n - lengths[i] for n, i in zip(collated, some)}) == 1, (collated, lengths)
    batch = next(iter(loader))
    assert set(batch) >= {"input_ids", "labels", "pixel_values"} and "length" not in batch
    assert _padding_share(grouped) < 0.5 * _padding_share(plain)
    result = train.train(rows.select(range(16)), output_dir=str(tmp_path / "run"),
                         group_by_length=True, max_steps=2, **common)
    assert result.card["settings"]["group_by_length"] is True and result.card["steps"] == 2


def _vision_output_requires_grad(prep) -> bool:
    model = prep.trainer.model
    vision = train.FAMILY_PARTS[train.family_of(model.get_base_model())]["vision"]
    module = model.get_base_model().get_submodule(vision)
    seen = []
    handle = module.register_forward_hook(
        lambda m, i, o: seen.append((o[0] if isinstance(o, tuple) else
                                     getattr(o, "last_hidden_state", o)).requires_grad))
    batch = next(iter(prep.trainer.get_train_dataloader()))
    model.train()
    loss = model(**batch).loss
    loss.backward()
    handle.remove()
    assert any(p.grad is not None for n, p in model.named_parameters() if "lora_" in n)
    return seen[0]


def test_frozen_vision_tower_builds_no_graph_and_checkpointing_trains_the_same(
        traces, tiny_cache, tmp_path):
    rows = traces.select(range(4))
    common = dict(model="tiny-idefics3", batch_size=2, verbose=False, lora_dropout=0.0)
    plain = train.build_trainer(rows, output_dir=str(tmp_path / "a"), **common)
    ckpt = train.build_trainer(rows, output_dir=str(tmp_path / "b"), gradient_checkpointing=True,
                               **common)
    assert not _vision_output_requires_grad(plain)
    assert not _vision_output_requires_grad(ckpt)  # checkpointing on the language model only
    layers = [m for m in ckpt.trainer.model.modules() if hasattr(m, "gradient_checkpointing")]
    assert any(m.gradient_checkpointing for m in layers)
    grads = []
    for prep in (plain, ckpt):
        grads.append({n: p.grad.clone() for n, p in prep.trainer.model.named_parameters()
                      if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), (
            name, (grads[0][name] - grads[1][name]).abs().max().item())
    vision = train.build_trainer(rows, output_dir=str(tmp_path / "c"), adapt_vision=True,
                                 **common)
    assert _vision_output_requires_grad(vision)


# --------------------------------------------------------------------------------------------
# The tiny run (1 epoch over the shipped traces), card, load, merge, resume
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(traces, tiny_cache, tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("adapter")
    result = train.train(traces, model="tiny-idefics3", output_dir=str(out), epochs=1,
                         learning_rate=5e-3, logging_steps=2, save_steps=1000, verbose=False)
    return result


def test_tiny_run_loss_falls(tiny_run, traces):
    losses = [loss for _, loss in tiny_run.losses]
    assert len(losses) == 15  # 240 rows / batch 8 = 30 steps, logged every 2
    assert _mean(losses[-5:]) < _mean(losses[:5]) - 0.15, losses
    assert tiny_run.card["steps"] == 30 and tiny_run.card["data"]["rows"] == len(traces)


def test_training_card_files_and_content(tiny_run):
    out = tiny_run.output_dir
    for name in ("adapter_model.safetensors", "adapter_config.json", "processor_config.json",
                 "tokenizer.json", "training_card.json", "training_card.md", "loss.png"):
        assert (out / name).exists(), name
    card = train.read_card(out)
    assert card["loss_curve"] == [[s, round(v, 5)] for s, v in tiny_run.losses]
    again = train.TrainResult.from_folder(out)  # as a run trained in another process is read
    assert again.losses == [(s, round(v, 5)) for s, v in tiny_run.losses] and again.card == card
    assert again.seconds == card["wall_seconds"] and again.output_dir == out
    assert card["resolved"]["dtype"] == "float32" and card["resolved"]["preset"] == "cpu"
    assert card["data"]["task_types"] and card["data"]["completion_tokens_mean"] > 50
    assert card["parameters"]["trainable"] < card["parameters"]["total"]
    assert card["wall_seconds"] > 0 and card["peak_memory_gb"] > 0
    assert card["versions"]["trl"] == env.versions()["trl"]
    md = (out / "training_card.md").read_text()
    assert "loss" in md and "LoRA: r=16" in md


def test_lora_init_is_the_seeds_whether_or_not_the_tiny_model_was_cached(
        traces, tmp_path, monkeypatch):
    """The seed is set just before the adapter's random init: the first run on an empty cache
    (which builds the tiny twin, drawing random numbers) starts from the same LoRA weights as
    the next one (it did not: the seed was set before the twin was built)."""
    monkeypatch.setenv("COTLIB_CACHE", str(tmp_path / "empty-cache"))
    rows = traces.select(range(2))
    runs = [train.build_trainer(rows, output_dir=str(tmp_path / name), model="tiny-idefics3",
                                batch_size=2, verbose=False) for name in ("cold", "warm")]
    weights = [{n: p.detach().clone() for n, p in run.trainer.model.named_parameters()
                if "lora_" in n} for run in runs]
    assert weights[0] and all(torch.equal(weights[0][n], weights[1][n]) for n in weights[0])


def test_lora_memory_of_the_recommended_models_is_the_presets_own_estimate():
    """Notebook 00's LoRA column and notebook 05's preset rationale come from one estimate: at
    the T4 preset, SmolVLM-500M's figure is the one the rationale prints, SmolVLM-256M's too, and
    a model whose estimate without checkpointing exceeds the budget gets the one with it."""
    t4 = train.HARDWARE_PRESETS["t4-16gb"]
    said = re.search(r"Batch \d+: estimate ([\d.]+) GB.*256M at the same settings: ([\d.]+) GB",
                     t4.rationale)
    assert f"{train.lora_memory_gb('smolvlm-500m'):.1f}" == said.group(1)
    assert f"{train.lora_memory_gb('smolvlm-256m'):.1f}" == said.group(2)
    qwen = train.MODEL_SHAPES["qwen2.5-vl-3b"]
    on, without = train.auto_checkpointing(qwen, "float16", t4.batch_size, 832, t4.memory_gb)
    assert on and train.lora_memory_gb("qwen2.5-vl-3b") < without
    assert set(train.MODEL_SHAPES) == set(models.PRESETS)
    with pytest.raises(ValueError, match="not a GPU preset"):
        train.lora_memory_gb("smolvlm-256m", "cpu")


def test_writing_a_card_leaves_matplotlibs_backend_alone(tiny_run, tmp_path):
    """A notebook's plots show through its backend (Jupyter's inline one): writing the card's
    loss.png must not switch it, as ``matplotlib.use("Agg")`` did (05's loss curve and 07's
    overhead plot then showed nothing). Checked in a fresh process whose backend is svg; and no
    cotlib module switches the backend."""
    script = (
        "import json, sys, matplotlib\n"
        "from cotlib.train.card import write_training_card\n"
        "card = json.load(open(sys.argv[1]))\n"
        "write_training_card(card, sys.argv[2])\n"
        "print(matplotlib.get_backend())\n")
    out = subprocess.run([sys.executable, "-c", script,
                          str(tiny_run.output_dir / "training_card.json"), str(tmp_path)],
                         env={**os.environ, "MPLBACKEND": "svg"}, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip().lower() == "svg", out.stdout + out.stderr
    assert (tmp_path / "loss.png").stat().st_size > 0
    root = Path(train.__file__).resolve().parents[1]
    switching = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if "matplotlib.use(" in p.read_text() or "switch_backend(" in p.read_text()]
    assert not switching, switching


def test_load_adapter_and_merge_give_the_same_model(tiny_run, traces, tmp_path):
    model, processor = train.load_adapter(tiny_run.output_dir)
    row = traces[0]
    text = models.chat_prompt(processor, row["prompt"][0]["content"][1]["text"])
    batch = models.encode(processor, row["images"], [text])
    with torch.no_grad():
        adapted = model(**batch).logits
        with model.disable_adapter():
            base = model(**batch).logits
    assert not torch.allclose(adapted, base, atol=1e-4)  # training changed something
    merged_dir = train.merge(tiny_run.output_dir, tmp_path / "merged")
    assert not (merged_dir / "adapter_config.json").exists()
    merged, merged_processor = models.load(merged_dir)
    with torch.no_grad():
        again = merged(**models.encode(merged_processor, row["images"], [text])).logits
    assert torch.allclose(adapted, again, atol=1e-4)
    in_memory, _ = train.load_adapter(tiny_run.output_dir, merge=True)
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    assert not isinstance(in_memory, PeftModel)  # a plain transformers model, no LoRA layers left
    assert not any(isinstance(m, LoraLayer) for m in in_memory.modules())
    with torch.no_grad():
        assert torch.allclose(adapted, in_memory(**batch).logits, atol=1e-4)



def test_load_adapter_rebuilds_a_tiny_base_whose_folder_is_gone(tiny_run, traces, tmp_path):
    """The card names the tiny base by a folder in a (pytest) cache that may be deleted; the
    adapter then loads onto the tiny model rebuilt from the card's ``tiny-<family>``, and answers
    as it did on the original folder."""
    import shutil

    moved = shutil.copytree(tiny_run.output_dir, tmp_path / "adapter")
    card = json.loads((moved / "training_card.json").read_text())
    assert card["model"] == "tiny-idefics3" and Path(card["model_source"]).exists()
    card["model_source"] = str(tmp_path / "gone" / Path(card["model_source"]).name)
    (moved / "training_card.json").write_text(json.dumps(card))
    assert train.adapter_base(moved) == str(models.tiny("idefics3"))
    row = traces[0]
    logits = []
    for folder in (tiny_run.output_dir, moved):
        model, processor = train.load_adapter(folder)
        text = models.chat_prompt(processor, row["prompt"][0]["content"][1]["text"])
        with torch.no_grad():
            logits.append(model(**models.encode(processor, row["images"], [text])).logits)
    assert torch.equal(logits[0], logits[1])
    card["model"] = "HuggingFaceTB/SmolVLM-256M-Instruct"  # not a tiny model: no rebuild
    (moved / "training_card.json").write_text(json.dumps(card))
    assert train.adapter_base(moved) == card["model_source"]

def test_resume_from_checkpoint(traces, tiny_cache, tmp_path):
    rows = traces.select(range(16))
    common = dict(model="tiny-idefics3", output_dir=str(tmp_path), batch_size=2, logging_steps=1,
                  save_steps=2, learning_rate=5e-3, lr_scheduler="constant", verbose=False)
    first = train.train(rows, max_steps=4, **common)
    assert (tmp_path / "checkpoints" / "checkpoint-4").exists()
    second = train.train(rows, max_steps=6, resume=True, **common)
    assert second.card["resumed_from"].endswith("checkpoint-4")
    assert second.card["steps"] == 6
    assert [s for s, _ in second.losses] == [5, 6]
    assert [s for s, _ in first.losses] == [1, 2, 3, 4]


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def _with_broken_images(traces, n=4):
    from datasets import Dataset, Features, List
    from datasets import Image as HFImage

    rows = [dict(traces[i]) for i in range(n)]
    buf = io.BytesIO()
    rows[0]["images"][0].save(buf, format="PNG")
    good = {"bytes": buf.getvalue(), "path": None}
    for row in rows:
        row["images"] = [good]
    rows[1]["images"] = [{"bytes": b"this is not an image", "path": None}]
    rows[2]["images"] = [{"bytes": None, "path": "/nonexistent/picture.png"}]
    features = Features({**traces.features, "images": List(HFImage())})
    return Dataset.from_list(rows, features=features)


def test_unloadable_images_are_skipped_and_counted_or_fail_clearly(traces):
    ds = _with_broken_images(traces)
    with pytest.warns(UserWarning, match="skipped 2 of 4 rows"):
        kept, skipped = train.check_images(ds, "skip")
    assert len(kept) == 2 and skipped == [traces[1]["task_id"], traces[2]["task_id"]]
    assert all(isinstance(row["images"][0], Image.Image) for row in kept)
    with pytest.raises(train.TrainError, match="cannot be loaded.*row 1"):
        train.check_images(ds, "raise")


def test_wrong_format_names_the_expected_columns(traces):
    with pytest.raises(train.TrainError, match="expected prompt, completion, images.*messages"):
        train.check_dataset_format(train.as_messages(traces.select(range(2))))
    with pytest.raises(train.TrainError, match="missing: images"):
        train.check_dataset_format(traces.select(range(2)).remove_columns("images"))
    llava = traces.select(range(1)).map(
        lambda r: {"conversations": [{"from": "human", "value": "<image>q"}]},
        remove_columns=["prompt", "completion"])
    with pytest.raises(train.TrainError, match="LLaVA"):
        train.check_dataset_format(llava)
    with pytest.raises(train.TrainError, match="no dataset at"):
        train.load_dataset_any("/nonexistent/dataset")


def test_out_of_memory_names_the_next_setting(traces, tiny_cache, tmp_path):
    from transformers import TrainerCallback

    class FakeOOM(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(train.TrainError, match=r"Next setting to try: batch_size=2, grad_accum=2"):
        train.train(traces.select(range(8)), model="tiny-idefics3", output_dir=str(tmp_path),
                    batch_size=4, callbacks=[FakeOOM()], verbose=False)



def test_training_runs_on_its_cpu_threads_and_restores_them(traces, tiny_cache, tmp_path):
    """cpu_threads holds while the trainer runs; the count before comes back, also on an error."""
    from transformers import TrainerCallback

    seen = []

    class Stop(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            seen.append(torch.get_num_threads())
            raise torch.cuda.OutOfMemoryError("stopped by the test")

    assert torch.get_num_threads() == 1  # the module's fixture
    with pytest.raises(train.TrainError):
        train.train(traces.select(range(4)), model="tiny-idefics3", output_dir=str(tmp_path),
                    batch_size=4, cpu_threads=2, callbacks=[Stop()], verbose=False)
    assert seen == [2] and torch.get_num_threads() == 1

def test_max_length_that_would_cut_image_tokens_is_refused(traces, tiny_cache, tmp_path):
    with pytest.raises(train.TrainError, match="image-token mismatch"):
        train.build_trainer(traces.select(range(2)), model="tiny-idefics3",
                            output_dir=str(tmp_path), max_length=40, verbose=False)


# --------------------------------------------------------------------------------------------
# Memory estimate, image tokens, presets
# --------------------------------------------------------------------------------------------


def test_memory_estimate_follows_the_documented_formula():
    gib = 2**30
    # weights 100e6*2, adapter 1e6*16, activations 4 layers * (2*100 tokens) * (8*64+4*128) * 2
    act = 4 * 200 * (8 * 64 + 4 * 128) * 2
    expected = 1.15 * (100e6 * 2 + 1e6 * 16 + act) / gib + 0.75
    got = train.estimate_training_memory_gb(100_000_000, 1_000_000, "bfloat16", 2, 100, 64, 4,
                                            False, intermediate=128)
    assert got == pytest.approx(expected)
    ckpt = train.estimate_training_memory_gb(100_000_000, 1_000_000, "bfloat16", 2, 100, 64, 4,
                                             True, intermediate=128)
    assert ckpt == pytest.approx(1.15 * (100e6 * 2 + 1e6 * 16 + 4 * 200 * 64 * 2 + act / 4)
                                 / gib + 0.75)
    shape = train.SMOLVLM_500M
    args = (shape.params, shape.lora_params(), "float16", 8, 1600, shape.hidden, shape.layers)
    assert train.estimate_training_memory_gb(*args, True) < train.estimate_training_memory_gb(
        *args, False)
    assert train.estimate_training_memory_gb(*args, True, qlora=True) < \
        train.estimate_training_memory_gb(*args, True)
    with pytest.raises(ValueError, match="dtype"):
        train.estimate_training_memory_gb(1, 1, "int8", 1, 1, 1, 1, False)


def test_lora_parameter_count_matches_peft(tiny_cache):
    from peft import get_peft_model

    model, _ = models.load(models.tiny("qwen2_vl"))
    shape = train.shape_of(model)
    peft_model = get_peft_model(model, train.lora_config(8))
    assert models.count_parameters(peft_model)["trainable"] == shape.lora_params(8)


def test_smolvlm_image_token_formula_matches_a_smolvlm_processor(tiny_cache):
    from transformers import Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    _, tiny = models.load(models.tiny("idefics3"))
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessorPil(
            size={"longest_edge": 2048}, max_image_size={"longest_edge": 512},
            do_image_splitting=True),
        tokenizer=tiny.tokenizer, image_seq_len=64, chat_template=tiny.chat_template)
    for edge, split in [(2048, True), (1024, True), (1536, True), (512, True), (2048, False)]:
        train.set_image_size(processor, edge, split)
        for w, h in [(192, 192), (640, 480), (300, 900)]:
            assert train.count_image_tokens(processor, w, h) == train.smolvlm_image_tokens(
                edge, split, w, h), (edge, split, w, h)
    with pytest.raises(train.TrainError, match="tile size"):
        train.set_image_size(processor, 256)


def test_image_size_lever_on_qwen(tiny_cache):
    _, processor = models.load(models.tiny("qwen2_vl"))
    before = train.count_image_tokens(processor, 192, 192)
    train.set_image_size(processor, 112)  # a 112² pixel budget: at most (112 / 28)² tokens
    assert 0 < train.count_image_tokens(processor, 192, 192) <= 16 < before


def test_presets_fit_their_budget_and_explain_themselves():
    t4 = train.PRESETS["t4-16gb"]
    assert t4.dtype == "float16" and not t4.qlora
    for preset in train.PRESETS.values():
        assert preset.rationale and preset.batch_size >= 1
        if preset.memory_gb:
            est = float(re.search(r"estimate ([\d.]+) GB", preset.rationale).group(1))
            assert est <= 0.8 * preset.memory_gb
            assert preset.batch_size * preset.grad_accum == 16
            assert f"Batch {preset.batch_size}" in preset.rationale
    assert train.PRESETS["a100-80gb"].batch_size >= train.PRESETS["a100-40gb"].batch_size
    hw = env.Hardware("cuda", "NVIDIA L4", 22.0, True, "bfloat16", 8)
    assert train.pick_preset(hw).name == "l4-24gb"
    assert train.pick_preset(env.Hardware("cpu", None, None, False, "float32", 2)).name == "cpu"


def test_resolve_sizes_a_t4_run_and_decides_checkpointing(tiny_cache):
    _, qwen = models.load(models.tiny("qwen2_vl"))
    t4 = env.Hardware("cuda", "Tesla T4", 14.7, False, "float16", 2)
    shape = train.SMOLVLM_500M
    r = train.resolve_settings(train.TrainSettings(), qwen, None, t4, shape)
    assert (r.preset, r.dtype, r.batch_size, r.grad_accum) == ("t4-16gb", "float16", 8, 2)
    assert r.longest_edge == 28 * 17  # Qwen: the pixel budget of SmolVLM's 320 image tokens
    assert not r.gradient_checkpointing and "vs 80% of 14.7 GB -> off" in r.checkpointing_reason
    big = train.resolve_settings(train.TrainSettings(batch_size=16), qwen, None, t4, shape)
    assert big.gradient_checkpointing and big.grad_accum == 1
    cpu = env.Hardware("cpu", None, None, False, "float32", 2)
    with pytest.raises(train.TrainError, match="QLoRA.*CUDA"):
        train.resolve_settings(train.TrainSettings(qlora=True), qwen, None, cpu, shape)
    with pytest.raises(train.TrainError, match="unknown preset"):
        train.resolve_settings(train.TrainSettings(preset="v100"), qwen, None, cpu, shape)


def test_out_of_memory_ladder():
    r = train.Resolved("t4-16gb", "cuda", "float16", 1, 16, 2048, True, True, "", False, 1088)
    tries = train.next_settings_to_try(train.TrainSettings(), r)
    assert tries[0].startswith("longest_edge=1024")
    assert any("do_image_splitting=False" in t for t in tries)
    assert any("qlora=True" in t for t in tries)


# --------------------------------------------------------------------------------------------
# Command line, accelerate launch with 2 processes
# --------------------------------------------------------------------------------------------


def test_cli_reports_a_bad_dataset(tmp_path, capsys):
    assert train.main(["--dataset", str(tmp_path / "missing"), "--model", "tiny-idefics3"]) == 1
    assert "no dataset at" in capsys.readouterr().err


def test_accelerate_launch_two_cpu_processes(traces, tiny_cache, tmp_path):
    """The same entry point under DDP: 2 processes, gloo on CPU (about 15-30 s), with
    length-grouped batches (the sampler is then sharded across the ranks)."""
    data = tmp_path / "dataset"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traces.select(range(16)).save_to_disk(str(data))
    folder = models.tiny("idefics3")  # built before the launch, so the ranks share it
    launcher = Path(sys.executable).parent / "accelerate"
    cmd = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(29500 + os.getpid() % 1000),
           "-m", "cotlib.train", "--dataset", str(data), "--model", str(folder),
           "--output", str(tmp_path / "adapter"), "--max-steps", "2", "--batch-size", "2",
           "--logging-steps", "1", "--group-by-length"]
    environ = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    done = subprocess.run(cmd, capture_output=True, text=True, env=environ, timeout=300,
                          cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    card = json.loads((tmp_path / "adapter" / "training_card.json").read_text())
    assert card["resolved"]["world_size"] == 2 and card["distributed"] == "MULTI_CPU"
    assert card["steps"] == 2 and "2 process(es)" in done.stdout
    assert card["settings"]["group_by_length"] is True


def test_resume_skips_checkpoints_a_kill_left_incomplete(traces, tiny_cache, tmp_path, capsys):
    """A kill during a save leaves an empty or half-written checkpoint beside a complete one:
    resume takes the newest complete one, says which it skipped and why, and goes on."""
    import shutil

    rows = traces.select(range(8))
    common = dict(model="tiny-idefics3", output_dir=str(tmp_path), batch_size=2, logging_steps=1,
                  save_steps=2, learning_rate=5e-3, lr_scheduler="constant", verbose=False)
    train.train(rows, max_steps=2, **common)
    folder = tmp_path / "checkpoints"
    good = folder / "checkpoint-2"
    assert train.checkpoint_problem(good) is None
    (folder / "checkpoint-3").mkdir()  # killed right after mkdir
    half = folder / "checkpoint-4"  # killed mid-save: weights written, state not yet
    shutil.copytree(good, half)
    (half / "trainer_state.json").unlink()
    cut = folder / "checkpoint-5"  # killed while writing the optimizer state
    shutil.copytree(good, cut)
    data = (cut / "optimizer.pt").read_bytes()
    (cut / "optimizer.pt").write_bytes(data[: len(data) // 2])
    torn = folder / "checkpoint-6"  # killed while writing the weights
    shutil.copytree(good, torn)
    weights = next(torn.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-16])
    (folder / "checkpoint-final").mkdir()  # not a step number: ignored
    assert train.checkpoint_problem(folder / "checkpoint-3") == "empty (a save was interrupted)"
    assert "trainer_state.json" in train.checkpoint_problem(half)
    assert "optimizer.pt" in train.checkpoint_problem(cut)
    assert "cut short" in train.checkpoint_problem(torn)
    said: list[str] = []
    assert train.latest_checkpoint(folder, say=said.append) == str(good)
    assert [line.split(": ")[1] for line in said] == [
        f"skipping checkpoint-{n}" for n in (6, 5, 4, 3)]
    capsys.readouterr()
    again = train.train(rows, max_steps=3, resume=True, **{**common, "verbose": True})
    out = capsys.readouterr().out
    assert "skipping checkpoint-4: incomplete: no trainer_state.json" in out
    assert "skipping checkpoint-3: empty" in out and "resume: from checkpoint-2" in out
    assert again.card["resumed_from"].endswith("checkpoint-2") and again.card["steps"] == 3
    assert [s for s, _ in again.losses] == [3]
    assert train.latest_checkpoint(tmp_path / "nothing-here", say=said.append) is None


def _step0_token_losses(variant: str, out: Path, n: int = 22):
    """Per-token loss of the training targets under the shipped base at step 0 (LoRA's B is zero,
    so the model is the base), with the labels exactly as the trainer's collator makes them."""
    import torch

    from cotlib import env, synth

    tasks = synth.load_split(env.DATA_DIR / "tasks" / "train")[:n]
    prep = train.build_trainer(train.synthetic_traces(tasks, variant=variant), model=str(
        env.BASE_DIR), output_dir=str(out), max_steps=1, verbose=False, lora_r=8,
        modules_to_save=None)
    rows = [prep.trainer.train_dataset[i] for i in range(len(prep.trainer.train_dataset))]
    batch = prep.trainer.data_collator(rows)
    with torch.no_grad():
        logits = prep.trainer.model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    labels = batch["labels"][:, 1:]
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), labels, ignore_index=-100, reduction="none")
    ends = train.end_of_turn_ids(prep.trainer.model, prep.processor)
    return labels, loss, ends, tasks


@pytest.mark.parametrize("variant", ["direct", "cot"])
def test_step0_targets_are_tokens_the_base_can_generate(variant, tmp_path):
    """No trained token after the end-of-turn token (decoding stops there: the template's ``\\n``
    cost 19-26 nats at step 0 on every row), and direct targets are in the form the base answers
    in (the option *text* for multiple choice: the letter cost 15-24 nats)."""
    labels, loss, ends, tasks = _step0_token_losses(variant, tmp_path)
    assert any(t.choices for t in tasks)  # multiple-choice rows are among them
    for row in range(labels.shape[0]):
        trained = (labels[row] != -100).nonzero().flatten().tolist()
        assert trained, "a row with nothing to learn"
        last = trained[-1]
        assert labels[row, last].item() in ends  # the answer ends with the end-of-turn token ...
        assert all(labels[row, i].item() not in ends for i in trained[:-1])  # ... only once, last
    if variant == "direct":
        worst = loss[labels != -100].max().item()
        assert worst < 5.0, f"a direct target token costs {worst:.1f} nats under the base"


def test_the_package_reexports_its_names_and_keeps_modules_short():
    """cotlib.train is a package of short modules; callers keep writing ``train.X``. The
    train-side names that clashed with other modules' (check_format, write_card, resolve,
    PRESETS) now say what they do; PRESETS stays as an alias because notebook 05 uses it."""
    import cotlib.train as package

    folder = Path(package.__file__).parent
    lengths = {p.name: len(p.read_text().splitlines()) for p in folder.glob("*.py")}
    assert max(lengths.values()) <= 600, lengths
    assert all(hasattr(train, name) for name in train.__all__)
    assert train.PRESETS is train.HARDWARE_PRESETS
    for old in ("check_format", "write_card", "resolve"):
        assert not hasattr(train, old), old
    assert train.check_dataset_format.__module__ == "cotlib.train.dataset"


def test_cli_options_are_the_settings_fields():
    """One option per TrainSettings field (but the Python-only ``extra``), with the field's type
    and default: bare options give TrainSettings(), and --help shows every default."""
    import dataclasses

    from cotlib.train.cli import SETTINGS_OPTIONS, settings_from_args

    fields = {f.name for f in dataclasses.fields(train.TrainSettings)}
    assert {name for _, name, _, _ in SETTINGS_OPTIONS} == fields - {"extra"}
    parser = train.build_parser()
    assert settings_from_args(parser.parse_args(["--dataset", "d"])) == train.TrainSettings()
    chosen = settings_from_args(parser.parse_args([
        "--dataset", "d", "--output", "o", "--epochs", "2", "--lora-r", "8", "--qlora",
        "--image-splitting", "off", "--gradient-checkpointing", "on", "--resume",
        "--modules-to-save", "lm_head", "embed_tokens", "--group-by-length", "--dtype",
        "float32", "--cpu-threads", "2"]))
    assert chosen == train.TrainSettings(
        output_dir="o", epochs=2.0, lora_r=8, qlora=True, do_image_splitting=False,
        gradient_checkpointing=True, resume=True, modules_to_save=["lm_head", "embed_tokens"],
        group_by_length=True, dtype="float32", cpu_threads=2)
    args = parser.parse_args(["--dataset", "d", "--resume", "ckpt/checkpoint-4",
                              "--gradient-checkpointing", "auto", "--qlora", "off"])
    assert (args.resume, args.gradient_checkpointing, args.qlora) == (
        "ckpt/checkpoint-4", "auto", False)
    with pytest.raises(SystemExit):
        parser.parse_args(["--dataset", "d", "--image-splitting", "maybe"])
    text = parser.format_help()
    assert text.count("(default:") == len(SETTINGS_OPTIONS) + 2  # and --dataset, --rows
    assert all(flag in text for flag, _, _, _ in SETTINGS_OPTIONS)
    assert "LoRA rank (default: 16)" in text and "(default: 100)" in text

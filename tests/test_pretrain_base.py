"""scripts/pretrain_base.py (the tiny base's recipe) and the shipped base in data/base."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch

from cotlib import env, evaluate, models, stages, synth, train

sys.path.insert(0, str(env.REPO_ROOT / "scripts"))
import pretrain_base as pb  # noqa: E402


def test_one_image_token_per_grid_cell_and_a_training_batch_runs(tmp_path):
    folder = pb.build(tmp_path / "base", 64, seed=0)
    model, processor = models.load(folder, dtype="float32", device="cpu")
    assert processor.image_seq_len == 9 and model.config.scale_factor == 1
    tasks = synth.make_tasks(4, seed=7)
    batch = pb.make_batch(processor, [(t, t.prompt_question(), pb.target_text(t)) for t in tasks])
    # labels cover exactly the answer tokens and the end token
    tok = processor.tokenizer
    for i, t in enumerate(tasks):
        target = batch["labels"][i][batch["labels"][i] != -100]
        assert tok.decode(target).strip() == t.answer + tok.eos_token
    loss = pb.per_sample_loss(model, batch)
    assert torch.isfinite(loss) and loss.item() > 1.0  # untrained: far from certain


def test_tiled_layout_matches_the_processor_and_names_each_cell(tmp_path):
    """The tiled base: nine cell tiles announced by <row_r_col_c> + a global view, one token each;
    the script's fast pixels and prompt expansion equal what the processor makes."""
    folder = pb.build(tmp_path / "tiled", 64, seed=0, tiled=True)
    model, processor = models.load(folder, dtype="float32", device="cpu")
    assert pb.is_tiled(processor) and processor.image_seq_len == 1
    tasks = synth.make_tasks(3, seed=7)
    prompts = [models.chat_prompt(processor, t.prompt_question()) for t in tasks]
    ref = processor(text=prompts, images=[[t.get_image()] for t in tasks], return_tensors="pt",
                    padding=True)
    mine = pb.pixel_batch([t.get_image() for t in tasks], tiled=True)
    assert mine["pixel_values"].shape == ref["pixel_values"].shape == (3, 10, 3, 64, 64)
    assert torch.allclose(mine["pixel_values"][:, :9], ref["pixel_values"][:, :9], atol=1e-6)
    assert (mine["pixel_values"] - ref["pixel_values"]).abs().max() <= 1 / 127.5 + 1e-6
    tok = processor.tokenizer
    expanded = tok(pb._expand(processor, prompts[0]), add_special_tokens=False)["input_ids"]
    assert expanded == ref["input_ids"][0][ref["attention_mask"][0] == 1].tolist()
    names = tok.convert_ids_to_tokens(expanded)
    assert [n for n in names if n.startswith("<row_")] == [
        f"<row_{r}_col_{c}>" for r in (1, 2, 3) for c in (1, 2, 3)]
    assert names.count("<image>") == 10
    batch = pb.make_batch(processor, [(t, t.prompt_question(), pb.target_text(t)) for t in tasks])
    assert torch.isfinite(pb.per_sample_loss(model, batch))


def test_text_only_reasoning_samples_have_no_image_and_no_stage_tags():
    _, processor = models.load(models.tiny("idefics3"))
    for t in synth.make_tasks(22, seed=7, mc_fraction=0.5):
        question, target = pb.text_question(t, "listing"), pb.worked_answer(t)
        assert question.startswith("Scene: " + synth.listing(t.scene))
        assert target.endswith(f"So the answer is {t.answer}.")
        assert not any(tag in question + target for tag in stages.STAGES)
    batch = pb.make_text_batch(processor, [(pb.text_question(t, "describe"), pb.worked_answer(t))
                                           for t in synth.make_tasks(3, seed=8)])
    assert "pixel_values" not in batch and (batch["labels"] != -100).any()


def test_targets_are_answer_texts_that_the_course_evaluation_accepts():
    for t in synth.make_tasks(60, seed=8, mc_fraction=0.5):
        assert evaluate.is_correct(t, pb.target_text(t))
        if t.choices:  # text, not the letter, for multiple choice
            assert pb.target_text(t) == t.choices["ABCDEF".index(t.answer_letter)]


def test_baselines_count_answers_per_type():
    tasks = synth.make_tasks(220, seed=9)
    base = pb.baselines(tasks)
    assert set(base) == set(synth.TASK_TYPES)
    assert base["compare_counts"][1] == 2 and base["compare_counts"][0] in ("yes", "no")


def test_checksum_detects_a_changed_a_missing_and_an_added_file(tmp_path):
    folder = shutil.copytree(models.tiny("idefics3"), tmp_path / "m")
    models.write_checksum(folder)
    models.verify_checksum(folder)
    (folder / "README.md").write_text("model card edits are allowed")
    models.verify_checksum(folder)
    (folder / "extra.bin").write_bytes(b"x")
    with pytest.raises(models.ModelLoadError, match="unlisted extra.bin"):
        models.verify_checksum(folder)
    (folder / "extra.bin").unlink()
    config = folder / "config.json"
    config.write_text(config.read_text().replace("}", " }", 1))
    with pytest.raises(models.ModelLoadError, match="changed config.json"):
        models.verify_checksum(folder)
    config.unlink()
    with pytest.raises(models.ModelLoadError, match="missing config.json"):
        models.verify_checksum(folder)
    with pytest.raises(models.ModelLoadError, match="No SHA256SUMS"):
        models.verify_checksum(tmp_path)


@pytest.mark.skipif(not (env.BASE_DIR / "model.safetensors").exists(),
                    reason="no shipped base in data/base")
def test_shipped_base_loads_verified_and_answers_as_its_card_says():
    model, processor = models.load_base(dtype="float32", device="cpu")
    assert model.config.model_type == "idefics3" and train.is_tiny(str(env.BASE_DIR))
    assert (env.BASE_DIR / "model.safetensors").stat().st_size <= 25 * 2**20
    # the course's tokenizer: stage-tagged traces encode as for every other tiny model
    _, course = models.load(models.tiny("idefics3"))
    trace = stages.render("plan", "caption", "reasoning", "3")
    assert processor.tokenizer(trace)["input_ids"] == course.tokenizer(trace)["input_ids"]
    scores = json.loads((env.BASE_DIR / "scores.json").read_text())["test"]
    good = [k for k, v in scores.items() if k != "mean" and v["beats_majority_by_15"]]
    assert len(good) >= 3, scores
    # re-score a few test tasks now: the weights give the accuracy the card reports
    test = synth.load_split(env.DATA_DIR / "tasks" / "test")
    kind = max(good, key=lambda k: scores[k]["accuracy"])
    tasks = [t for t in test if t.task_type == kind]
    preds = pb.answer(model, processor, tasks)
    acc = sum(evaluate.is_correct(t, p) for t, p in zip(tasks, preds, strict=True)) / len(tasks)
    assert acc == pytest.approx(scores[kind]["accuracy"], abs=0.001)


def test_the_skills_a_cot_answer_needs_are_measured_as_the_card_says():
    """Captions after the task's question and text-only reasoning over the true scene: what a
    four-stage answer needs beyond seeing, measured for the card."""
    assert pb.worked_answer_of("Red: none. So the answer is 0.") == "0"
    assert pb.worked_answer_of("So the answer is") is None
    model, processor = models.load_base(dtype="float32", device="cpu")
    tasks = synth.make_tasks(22, seed=pb.HELDOUT_SEED)
    text = pb.text_reasoning_scores(model, processor, tasks, "listing")
    assert text["tasks"] == 22 and set(text["by_type"]) == {t.task_type for t in tasks}
    assert 0.0 <= text["accuracy"] <= 1.0
    after = pb.caption_scores(model, processor, tasks[:11], "listing", after_question=True)
    alone = pb.caption_scores(model, processor, tasks[:11], "listing")
    assert set(after) == set(alone) and all(v["items"] > 0 for v in after.values())
    seeing = json.loads((env.BASE_DIR / "scores.json").read_text())["seeing"]
    assert seeing["text_reasoning"]["tasks"] == 330  # the shipped card reports both
    assert set(seeing["captions_after_question"]) == {"bars", "shapes"}


@pytest.mark.slow
def test_short_mode_shows_a_falling_learning_curve(tmp_path):
    assert pb.main(["--short", "--out", str(tmp_path / "short")]) == 0
    folder = tmp_path / "short"
    log = json.loads((folder / "training_log.json").read_text())
    losses = log["losses"]
    assert losses[-1]["question_loss"] < 0.3 * losses[0]["question_loss"]
    captions = [x["caption_loss"] for x in losses if x["caption_loss"]]
    assert captions[-1] < 0.5 * captions[0]  # it learns to describe scenes
    assert log["evals"] and set(log["evals"][-1]["scores"]) >= set(synth.TASK_TYPES)
    models.verify_checksum(folder)
    assert train.is_tiny(str(folder))  # cotlib_base.json: presets keep its 9-token layout
    assert not (folder / "cotlib_tiny.json").exists()
    from transformers import AutoModelForImageTextToText

    assert AutoModelForImageTextToText.from_pretrained(folder).config.scale_factor == 1

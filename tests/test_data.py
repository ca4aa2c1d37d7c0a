"""Kept traces → a TRL prompt/completion vision dataset; splits, files, card, LLaVA-CoT import."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from PIL import Image

from cotlib import data, filtering, stages, synth
from cotlib.data import DatasetError


def _text(task, conclusion=None):
    answer, steps = synth.solve(task.prompt_question(), task.scene)
    return stages.render("I will look at the image and answer step by step.",
                         synth.describe(task.scene), " ".join(steps),
                         conclusion or task.answer_letter or answer, sep="\n")


@pytest.fixture(scope="module")
def pipeline():
    """22 tasks (two of each type, some multiple choice), one wrong trace, all filtered."""
    tasks = synth.make_tasks(22, seed=9, mc_fraction=0.3)
    records = [{"task_id": t.id, "status": "done", "text": _text(t)} for t in tasks]
    records[3]["text"] = _text(tasks[3], conclusion="banana")
    verdicts = filtering.filter_traces(records, tasks)
    return tasks, records, verdicts


def test_rows_have_trls_prompt_completion_vision_shape(pipeline):
    tasks, records, verdicts = pipeline
    ds = data.build_dataset(records, verdicts, tasks)
    assert len(ds) == 21 and tasks[3].id not in ds["task_id"]
    assert {"prompt", "completion", "images"} <= set(ds.column_names)
    row = ds[0]
    task = tasks[0]
    assert row["prompt"] == [{"role": "user", "content": [
        {"type": "image", "text": None}, {"type": "text", "text": task.prompt_question()}]}]
    (turn,) = row["completion"]
    assert turn["role"] == "assistant" and turn["content"][0]["type"] == "text"
    assert turn["content"][0]["text"] == stages.render_dict(stages.parse(records[0]["text"]).stages)
    assert stages.is_valid(turn["content"][0]["text"])
    (image,) = row["images"]
    assert isinstance(image, Image.Image) and image.size == (192, 192)
    assert synth.scene_from_image(image.convert("RGB")) == task.scene
    assert row["task_type"] == task.task_type and row["answer"] == task.answer


def test_direct_variant_has_the_same_rows_and_the_answer_alone(pipeline):
    tasks, records, verdicts = pipeline
    cot = data.build_dataset(records, verdicts, tasks)
    direct = data.build_dataset(records, verdicts, tasks, variant="direct")
    assert direct["task_id"] == cot["task_id"] and direct["prompt"] == cot["prompt"]
    by_id = {t.id: t for t in tasks}
    for task_id, completion in zip(direct["task_id"], direct["completion"]):
        task = by_id[task_id]
        assert completion[0]["content"][0]["text"] == task.answer  # the option text for MC
    with pytest.raises(ValueError, match="variant"):
        data.build_dataset(records, verdicts, tasks, variant="short")


def test_build_refuses_empty_or_all_rejected_or_mismatched(pipeline):
    tasks, records, verdicts = pipeline
    with pytest.raises(DatasetError, match="No traces"):
        data.build_dataset([], [], tasks)
    rejected = [filtering.Verdict(False, ["refusal"]) for _ in records]
    with pytest.raises(DatasetError, match=r"Top reasons: refusal \(22\)"):
        data.build_dataset(records, rejected, tasks)
    with pytest.raises(DatasetError, match="verdicts"):
        data.build_dataset(records, verdicts[:-1], tasks)
    with pytest.raises(DatasetError, match="No task for kept trace"):
        data.build_dataset(records, verdicts, tasks[1:])


def test_split_is_stratified_seeded_and_saves_and_loads(pipeline, tmp_path):
    tasks, records, verdicts = pipeline
    ds = data.build_dataset(records, verdicts, tasks)
    parts = data.split_dataset(ds, val_fraction=0.3, seed=1)
    assert len(parts["validation"]) == round(len(ds) * 0.3)
    assert len(parts["train"]) + len(parts["validation"]) == len(ds)
    assert not set(parts["train"]["task_id"]) & set(parts["validation"]["task_id"])
    assert set(parts["train"]["task_type"]) == set(ds["task_type"])  # no type lost to validation
    again = data.split_dataset(ds, val_fraction=0.3, seed=1)
    assert again["validation"]["task_id"] == parts["validation"]["task_id"]
    other = data.split_dataset(ds, val_fraction=0.3, seed=2)
    assert other["validation"]["task_id"] != parts["validation"]["task_id"]
    half = data.split_dataset(ds, val_fraction=0.5)  # 2 rows per type (one type has 1): 1 each
    counts = Counter(half["validation"]["task_type"])
    assert all(n == 1 for n in counts.values()) and len(counts) == 10
    assert list(data.split_dataset(ds, val_fraction=0)) == ["train"]
    direct = data.build_dataset(records, verdicts, tasks, variant="direct")
    assert data.split_dataset(direct, 0.3, seed=1)["validation"]["task_id"] == \
        parts["validation"]["task_id"]

    folder = data.save(parts, tmp_path / "dataset")
    loaded = data.load(folder)
    assert loaded["validation"]["task_id"] == parts["validation"]["task_id"]
    assert loaded["train"][0]["images"][0].size == (192, 192)
    assert loaded["train"].features == ds.features

    stats = {**data.dataset_stats(loaded), "variant": "cot", "teacher": "local"}
    card = data.write_card(folder, stats).read_text()
    assert card.startswith("---\n") and "image-text-to-text" in card
    assert f"| **total** | {len(parts['train'])} | {len(parts['validation'])} |" in card
    assert "push_to_hub" in card


def test_save_and_load_explain_their_errors(pipeline, tmp_path):
    tasks, records, verdicts = pipeline
    ds = data.build_dataset(records, verdicts, tasks)
    with pytest.raises(DatasetError, match="Empty split"):
        data.save(ds.select([]), tmp_path / "empty")
    with pytest.raises(DatasetError, match="notebook 04"):
        data.load(tmp_path / "nothing")


def test_split_needs_a_type_with_two_rows(pipeline):
    tasks, records, verdicts = pipeline
    ds = data.build_dataset(records, verdicts, tasks).select(range(6))  # 6 different types
    with pytest.raises(DatasetError, match="at least 2 rows"):
        data.split_dataset(ds, val_fraction=0.3)


# -----------------------------------------------------------------------------
# LLaVA-CoT-100k layout


def _llava_fixture(root):
    """A miniature of LLaVA-CoT-100k: train.jsonl plus images in dataset sub-folders."""
    (root / "chartqa/train/png").mkdir(parents=True)
    (root / "ai2d/images").mkdir(parents=True)
    Image.new("RGB", (64, 48), "red").save(root / "chartqa/train/png/a.png")
    Image.new("RGB", (40, 40), "blue").convert("P").save(root / "ai2d/images/b.png")  # palette
    trace = stages.render("I will read the chart.", "A red bar chart.", "The bar reads 12.",
                          "12")
    items = [
        {"id": "a1", "image": "chartqa/train/png/a.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat is the value?"},
            {"from": "gpt", "value": trace}]},
        {"id": "b1", "image": "ai2d/images/b.png", "conversations": [
            {"from": "human", "value": "What colour?\n<image>"},
            {"from": "gpt", "value": "<SUMMARY>s</SUMMARY><CONCLUSION>blue</CONCLUSION>"},
            {"from": "human", "value": "And the shape?"},
            {"from": "gpt", "value": stages.render("I will name the shape.", "A blue square.",
                                                   "It has four equal sides.", "square")}]},
        {"id": "c1", "image": "sqa/missing.png", "conversations": [
            {"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": trace}]},
    ]
    path = root / "train.jsonl"
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def test_import_llava_cot_layout_into_the_same_pipeline(tmp_path):
    path = _llava_fixture(tmp_path)
    with pytest.raises(DatasetError, match="sqa/missing.png"):
        data.import_llava_cot(path, tmp_path)
    records, tasks = data.import_llava_cot(path, tmp_path, missing_images="skip")
    assert [r["task_id"] for r in records] == ["a1", "b1", "b1-1"]
    assert [t.task_type for t in tasks] == ["chartqa", "ai2d", "ai2d"]
    assert tasks[0].question == "What is the value?" and tasks[1].question == "What colour?"
    assert records[0]["final_answer"] == "12"

    verdicts = filtering.filter_traces(records, tasks)
    assert [v.reason for v in verdicts] == ["kept", "format:missing", "kept"]
    ds = data.build_dataset(records, verdicts, tasks)
    assert ds["task_id"] == ["a1", "b1-1"]
    assert ds[0]["images"][0].size == (64, 48)
    assert [row[0].mode for row in ds["images"]] == ["RGB", "RGB"]  # the palette PNG converted
    assert ds[0]["prompt"][0]["content"][1]["text"] == "What is the value?"
    direct = data.build_dataset(records, verdicts, tasks, variant="direct")
    assert [c[0]["content"][0]["text"] for c in direct["completion"]] == ["12", "square"]
    assert data.import_llava_cot(path, tmp_path, limit=1, missing_images="skip")[0][0][
        "task_id"] == "a1"


def test_the_dataset_stores_each_image_once_and_a_file_unchanged(tmp_path):
    """build_dataset makes each row's stored bytes directly: an imported RGB JPEG's own bytes
    (checked by one decode, no PIL image kept on the task), else the PNG a PIL image would be
    encoded to; build_row keeps the PIL image, and both give the same dataset."""
    from datasets import Dataset, List
    from datasets import Image as ImageFeature

    from cotlib import images

    Image.new("RGB", (30, 20), "green").save(tmp_path / "photo.jpg", quality=80)
    photo = data.ImportedTask("p1", "photos", "What colour?", str(tmp_path / "photo.jpg"))
    trace = stages.render("I will name the colour.", "A green square.", "It is green.", "green")
    ds = data.build_dataset([{"task_id": "p1", "text": trace}], [filtering.Verdict(True, [])],
                            [photo])
    stored = ds.cast_column("images", List(ImageFeature(decode=False)))[0]["images"][0]
    assert stored == {"bytes": (tmp_path / "photo.jpg").read_bytes(), "path": None}
    assert photo.image is None  # no second representation made on the way

    task = synth.make_task(3, "count_color")
    built = data.build_dataset([{"task_id": task.id, "text": _text(task)}],
                               [filtering.Verdict(True, [])], [task])
    row = data.build_row(task, _text(task))
    assert isinstance(row["images"][0], Image.Image)
    from_rows = Dataset.from_list([row], features=data.features())
    raw = List(ImageFeature(decode=False))
    assert from_rows.cast_column("images", raw)[0] == built.cast_column("images", raw)[0]

    (tmp_path / "cut.jpg").write_bytes((tmp_path / "photo.jpg").read_bytes()[:200])
    cut = data.ImportedTask("c1", "photos", "What colour?", str(tmp_path / "cut.jpg"))
    with pytest.raises(images.ImageError, match="cut.jpg"):
        data.build_dataset([{"task_id": "c1", "text": trace}], [filtering.Verdict(True, [])],
                           [cut])
    (tmp_path / "note.png").write_text("not an image")
    note = data.ImportedTask("n1", "photos", "What colour?", str(tmp_path / "note.png"))
    with pytest.raises(images.ImageError, match="note.png"):
        data.build_dataset([{"task_id": "n1", "text": trace}], [filtering.Verdict(True, [])],
                           [note])


def test_untagged_completion_is_the_cot_completion_without_its_tags(pipeline):
    tasks, records, _ = pipeline
    for task, record in zip(tasks, records):
        cot = data.completion_text(task, record["text"])
        if stages.parse(record["text"]).ok:
            assert data.completion_text(task, record["text"], "untagged") == stages.untag(
                stages.parse(cot).stages)
    with pytest.raises(ValueError, match="variant must be one of"):
        data.completion_text(tasks[0], records[0]["text"], "plain")


def test_imported_records_are_results_lines(tmp_path):
    from cotlib.teacher.store import Trace

    records, _ = data.import_llava_cot(_llava_fixture(tmp_path), tmp_path,
                                       missing_images="skip")
    for record in records:
        assert Trace.from_json(record).to_json() == record  # the trace type's own line
        assert record["model"] == "llava-cot-100k" and record["mode"] == "import"
    assert records[1]["problems"] == ["missing", "missing"]  # CAPTION and REASONING
    assert [r["task_type"] for r in records] == ["chartqa", "ai2d", "ai2d"]


def test_import_explains_bad_input(tmp_path):
    with pytest.raises(DatasetError, match="No file"):
        data.import_llava_cot(tmp_path / "none.jsonl", tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "question": "no conversations"}\n')
    with pytest.raises(DatasetError, match="LLaVA layout"):
        data.import_llava_cot(bad, tmp_path)
    bad.write_text("{not json\n")
    with pytest.raises(DatasetError, match=r"bad.jsonl:1"):
        data.import_llava_cot(bad, tmp_path)


# -----------------------------------------------------------------------------
# TRL: the dataset goes into SFTTrainer unchanged, and only the completion is learned


def test_sft_trainer_takes_the_dataset_and_masks_prompt_and_image_tokens(
    pipeline, tiny_cache, tmp_path
):
    from trl import SFTConfig, SFTTrainer
    from trl.data_utils import apply_chat_template, prepare_multimodal_messages

    from cotlib import models

    tasks, records, verdicts = pipeline
    ds = data.build_dataset(records, verdicts, tasks)
    model, processor = models.load(models.tiny("idefics3"), device="cpu")
    config = SFTConfig(output_dir=str(tmp_path / "out"), report_to="none", max_length=None,
                       bf16=False, per_device_train_batch_size=3,
                       use_cpu=True, dataloader_num_workers=0, seed=0)
    trainer = SFTTrainer(model=model, args=config, train_dataset=ds, processing_class=processor)
    assert trainer._is_vision_dataset and trainer.completion_only_loss

    batch = next(iter(trainer.get_train_dataloader()))
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert "pixel_values" in batch and ids.shape == labels.shape
    image_token = processor.tokenizer.convert_tokens_to_ids("<image>")
    tok = processor.tokenizer
    completions = {}
    for i in range(len(ds)):
        ex = {"prompt": prepare_multimodal_messages(ds[i]["prompt"], ds[i]["images"]),
              "completion": prepare_multimodal_messages(ds[i]["completion"])}
        out = apply_chat_template(ex, processor)
        completions[out["completion"]] = out["prompt"]
    for row in range(ids.shape[0]):
        learned = labels[row] != -100
        assert (ids[row][learned] == labels[row][learned]).all()
        assert (ids[row] == image_token).sum() == 36  # the image is in the input...
        assert not (learned & (ids[row] == image_token)).any()  # ...and never learned
        # the learned tokens are exactly the completion: every prompt token is masked
        target = tok.decode(ids[row][learned])
        assert target in completions, target[:80]
        assert target.startswith(" <SUMMARY>") and target.rstrip().endswith("<end_of_utterance>")
        first = int(learned.nonzero()[0])
        prompt_text = tok.decode(ids[row][:first][mask[row][:first] == 1])
        assert prompt_text.endswith("Assistant:") and "User:" in prompt_text
        assert int(learned.sum()) == len(tok(target, add_special_tokens=False)["input_ids"])

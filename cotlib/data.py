"""Kept traces → a Hugging Face ``datasets.Dataset`` in TRL's prompt/completion vision format.

One row per kept trace::

    prompt     = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": Q}]}]
    completion = [{"role": "assistant", "content": [{"type": "text", "text": "<SUMMARY> …"}]}]
    images     = [image]     (a datasets Image feature: the bytes stored once, PIL when read)
    task_id, task_type, answer, choices, answer_letter   (kept for evaluation; TRL ignores them)

This is the shape TRL 1.16's ``SFTTrainer`` recognises as a vision prompt/completion dataset: an
``images`` column makes it use ``DataCollatorForVisionLanguageModeling``, which applies the
processor's chat template to the prompt (with the generation prompt) and to prompt+completion,
and with ``completion_only_loss`` (the default for prompt/completion data) sets the labels of
every prompt token — the image tokens included — to -100 (and ``cotlib.train`` masks the
``\\n`` the template writes after the end-of-turn token: generation never writes it). So the model
learns only to write the answer. No system prompt: LLaVA-CoT needs none at inference.

``variant="direct"`` builds the same rows with the answer alone as the completion (the option's
text for multiple choice, as in the CoT CONCLUSION and the base's pretraining), for the "does
reasoning help?" comparison in notebook 07.

Share a dataset on the Hugging Face hub (needs ``huggingface-cli login``)::

    ds = data.load(run / "dataset")
    ds.push_to_hub("your-name/cotlib-synthetic-cot", private=True)

>>> from cotlib import stages, synth
>>> task = synth.make_task(0, "count_color")
>>> row = build_row(task, stages.render("Plan.", "Caption.", "Reasoning.", task.answer))
>>> row["prompt"][0]["content"][1]["text"] == task.prompt_question(), len(row["images"])
(True, 1)
"""

from __future__ import annotations

import io
import json
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from cotlib import stages
from cotlib.tables import markdown_table

VARIANTS = ("cot", "direct", "untagged")


class DatasetError(ValueError):
    """The dataset cannot be built or loaded; the message says why and what to do."""


# -----------------------------------------------------------------------------
# tasks that come from elsewhere (LLaVA-CoT-100k, your own images)


@dataclass
class ImportedTask:
    """A task that is not synthetic: an image file and a question, maybe a standard answer.

    It has the attributes the filter and the dataset builder read from ``synth.Task``; ``scene``
    is None, so the scene check is skipped, and with ``answer=None`` the answer check too.
    """

    id: str
    task_type: str
    question: str
    image_path: str
    answer: str | None = None
    choices: list[str] | None = None
    answer_letter: str | None = None
    scene: dict | None = None
    image: Image.Image | None = field(default=None, repr=False, compare=False)

    def get_image(self) -> Image.Image:
        """The image as upright RGB (``cotlib.images.load_image``: EXIF, modes, size cap)."""
        if self.image is None:
            from cotlib import images

            self.image = images.load_image(self.image_path)
        return self.image

    def prompt_question(self) -> str:
        return self.question


# -----------------------------------------------------------------------------
# rows


def prompt_messages(question: str) -> list[dict]:
    """The user turn: the image placeholder, then the question.

    >>> prompt_messages("How many?")[0]["content"]
    [{'type': 'image'}, {'type': 'text', 'text': 'How many?'}]

    (A saved dataset reads the image part back as ``{'type': 'image', 'text': None}``: Arrow
    gives every part the same fields. TRL and chat templates look only at ``type``.)
    """
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


def completion_messages(text: str) -> list[dict]:
    """The assistant turn holding ``text``.

    >>> completion_messages("4")
    [{'role': 'assistant', 'content': [{'type': 'text', 'text': '4'}]}]
    """
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def _trace_stages(text: str) -> dict[str, str]:
    """The four stage texts of a well-formed trace (the trace type's parse, cached by text: the
    filter has parsed it already), else :class:`DatasetError`."""
    from cotlib.teacher.store import parse_text

    parsed = parse_text(text)
    if not parsed.ok:
        problems = "; ".join(str(p) for p in parsed.problems[:3])
        raise DatasetError(f"a trace to train on must be well formed: {problems}. Filter the "
                           "traces first (cotlib.filtering.filter_traces) and pass the verdicts.")
    return parsed.stages


def cot_completion(text: str) -> str:
    """The trace re-rendered canonically (``stages.render``: one space inside each tag, a blank
    line between stages), so every training target has exactly the same layout.

    >>> cot_completion("<summary>s</summary><CAPTION> c</CAPTION><REASONING>r</REASONING>"
    ...                "<CONCLUSION>4</CONCLUSION>").splitlines()[0]
    '<SUMMARY> s </SUMMARY>'
    """
    return stages.render_dict(_trace_stages(text))


def direct_answer(task: Any, text: str | None = None) -> str:
    """The completion of the direct-answer variant: the standard answer (for multiple choice the
    option's *text*, the form the base was pretrained to give and the CoT CONCLUSION holds),
    else the trace's CONCLUSION.

    >>> from cotlib import synth
    >>> t = synth.make_task(7, "bar_value", multiple_choice=True)
    >>> direct_answer(t) == t.answer == t.choices["ABCDEF".index(t.answer_letter)]
    True
    """
    answer = getattr(task, "answer", None)
    if answer not in (None, ""):
        return str(answer)
    conclusion = stages.final_answer(text or "")
    if not conclusion:
        raise DatasetError(f"task {task.id!r} has no standard answer and its trace no CONCLUSION")
    return conclusion


def completion_text(task: Any, text: str, variant: str = "cot") -> str:
    """The training target of ``task``'s trace ``text``: ``variant="cot"``, the canonical
    four-stage text (:func:`cot_completion`); ``"direct"``, the answer alone
    (:func:`direct_answer`); ``"untagged"``, the same four texts without their tags
    (:func:`cotlib.stages.untag`, the paper's "w/o structured tags" ablation).

    >>> from cotlib import synth
    >>> t = synth.make_task(0, "count_color")
    >>> completion_text(t, stages.render("Plan.", "Caption.", "Steps.", t.answer), "untagged")
    'Plan.\\n\\nCaption.\\n\\nSteps.\\n\\n1'
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if variant == "direct":
        return direct_answer(task, text)
    found = _trace_stages(text)
    # untag strips each stage as render_dict does, so this is the untagged form of the cot text
    return stages.untag(found) if variant == "untagged" else stages.render_dict(found)


def stored_image(task: Any) -> dict:
    """``task``'s image as the datasets Image feature stores it, ``{"bytes": ..., "path": None}``
    (inside the dataset, so rows stay valid when the source files move), made once per row.

    An imported RGB JPEG or PNG keeps its file's bytes (no re-encoding), decoded once on the way
    (``cotlib.images.load_image``) so that a broken or oversized file stops the build with an
    :class:`~cotlib.images.ImageError` naming it; anything else is stored as the PNG of
    ``task.get_image()`` (the bytes datasets' Image feature would write for that PIL image).
    """
    path = getattr(task, "image_path", None)
    if getattr(task, "scene", None) is None and path and Path(path).exists():
        try:
            with Image.open(path) as im:
                upright = im.getexif().get(0x0112, 1) == 1  # no EXIF rotation to apply
                plain = im.mode == "RGB" and im.format in ("JPEG", "PNG") and upright
        except (OSError, ValueError):  # not an image: get_image below names the problem
            plain = False
        if plain:
            from cotlib import images

            images.load_image(path, max_side=None)  # the check; the pixels are not kept
            return {"bytes": Path(path).read_bytes(), "path": None}
    buf = io.BytesIO()
    task.get_image().save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def _row(task: Any, text: str, variant: str, image: Any) -> dict:
    return {
        "prompt": prompt_messages(task.prompt_question()),
        "completion": completion_messages(completion_text(task, text, variant)),
        "images": [image],
        "task_id": task.id,
        "task_type": task.task_type,
        "answer": None if task.answer is None else str(task.answer),
        "choices": list(task.choices) if getattr(task, "choices", None) else [],
        "answer_letter": getattr(task, "answer_letter", None),
    }


def build_row(task: Any, text: str, variant: str = "cot") -> dict:
    """One dataset row for ``task`` and its trace ``text``; ``images`` holds the PIL image (to
    look at, or for ``Dataset.from_list(rows, features=features())``, which encodes it).

    The completion is :func:`completion_text` of ``variant`` (``"cot"``, ``"direct"`` or
    ``"untagged"``). :func:`build_dataset` makes the same rows with the image's stored bytes
    (:func:`stored_image`) instead.
    """
    return _row(task, text, variant, task.get_image())


def features():
    """The datasets schema of a row (explicit, so empty or odd rows cannot change it)."""
    from datasets import Features, Image, List, Value

    def messages():
        return List({"role": Value("string"),
                     "content": List({"type": Value("string"), "text": Value("string")})})

    return Features({
        "prompt": messages(), "completion": messages(), "images": List(Image()),
        "task_id": Value("string"), "task_type": Value("string"), "answer": Value("string"),
        "choices": List(Value("string")), "answer_letter": Value("string"),
    })


def build_dataset(
    records: Sequence[Mapping],
    verdicts: Sequence[Any],
    tasks: Iterable[Any] | Mapping[str, Any],
    *,
    variant: str = "cot",
):
    """Kept traces → ``datasets.Dataset`` (one row per kept record, in order). Each row's image
    is made once, as the bytes the dataset stores (:func:`stored_image`).

    ``verdicts`` come from ``filtering.filter_traces(records, tasks)`` — same records, same
    order. Raises :class:`DatasetError` if nothing is kept (naming the top rejection reasons)
    or a kept record's task is missing.
    """
    from datasets import Dataset

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    records, verdicts = list(records), list(verdicts)
    if not records:
        raise DatasetError("No traces given: generate them (notebook 02) and filter them "
                           "(notebook 03) first.")
    if len(records) != len(verdicts):
        raise DatasetError(f"{len(records)} records but {len(verdicts)} verdicts: pass the "
                           "verdicts filter_traces returned for these same records.")
    kept = [r for r, v in zip(records, verdicts) if v.kept]
    if not kept:
        reasons = Counter(v.reason for v in verdicts).most_common(3)
        top = ", ".join(f"{r} ({c})" for r, c in reasons)
        raise DatasetError(f"No kept traces to build a dataset from: all {len(records)} were "
                           f"rejected. Top reasons: {top}. Look at the filter report (notebook 03) "
                           "and fix the teacher or the checks, then filter again.")
    index = tasks if isinstance(tasks, Mapping) else {t.id: t for t in tasks}
    rows = []
    for record in kept:
        task = index.get(record.get("task_id"))
        if task is None:
            raise DatasetError(f"No task for kept trace {record.get('task_id')!r}: pass the tasks "
                               "the traces were generated from (e.g. the run's tasks/ folder).")
        rows.append(_row(task, record.get("text") or "", variant, stored_image(task)))
    return Dataset.from_list(rows, features=features())


# -----------------------------------------------------------------------------
# splits, files, card


def split_dataset(ds, val_fraction: float = 0.1, seed: int = 0):
    """A ``DatasetDict`` with ``train`` and ``validation``, stratified by ``task_type``.

    Validation gets ``round(len(ds) * val_fraction)`` rows (at least one), shared out over the
    task types in proportion to their size (largest remainders first, ties broken by the seed),
    never taking a type's last row, so every type stays in ``train``. Which rows go is seeded.
    ``val_fraction=0`` gives a ``train`` split only. Two datasets with the same task types in the
    same order (the cot and direct variants) split into the same rows.
    """
    from datasets import DatasetDict

    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if len(ds) == 0:
        raise DatasetError("Cannot split an empty dataset: build it from kept traces first.")
    if val_fraction == 0:
        return DatasetDict(train=ds)
    by_type: dict[str, list[int]] = {}
    for i, t in enumerate(ds["task_type"]):
        by_type.setdefault(t, []).append(i)
    room = {t: len(idx) - 1 for t, idx in by_type.items()}  # keep one of each type in train
    n_val = min(max(round(len(ds) * val_fraction), 1), sum(room.values()))
    if n_val < 1:
        raise DatasetError("A validation split needs a task type with at least 2 rows; use "
                           "val_fraction=0 or keep more traces.")
    quota = {t: min(int(len(idx) * val_fraction), room[t]) for t, idx in by_type.items()}
    order = sorted(by_type)
    random.Random(seed).shuffle(order)
    order.sort(key=lambda t: -(len(by_type[t]) * val_fraction - quota[t]))  # stable: seeded ties
    while sum(quota.values()) < n_val:
        for t in order:
            if sum(quota.values()) < n_val and quota[t] < room[t]:
                quota[t] += 1
    val: list[int] = []
    for t in sorted(by_type):
        idx = list(by_type[t])
        random.Random(f"{seed}:{t}").shuffle(idx)
        val += idx[: quota[t]]
    val_set = set(val)
    train = [i for i in range(len(ds)) if i not in val_set]
    return DatasetDict(train=ds.select(train), validation=ds.select(sorted(val_set)))


def save(ds, folder: str | Path) -> Path:
    """``save_to_disk`` a Dataset or DatasetDict (images are stored inside).

    Refuses empty splits: ``datasets`` writes them but cannot read them back.
    """
    from datasets import DatasetDict

    parts = ds.items() if isinstance(ds, DatasetDict) else [("dataset", ds)]
    empty = [name for name, part in parts if len(part) == 0]
    if empty:
        raise DatasetError(f"Empty split(s) {empty}: datasets cannot load an empty saved split. "
                           "Keep more traces, or split with val_fraction=0.")
    from datasets.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    folder = Path(folder)
    quiet = are_progress_bars_disabled()
    disable_progress_bars()  # a bar per shard and split is noise in a notebook
    try:
        ds.save_to_disk(str(folder))
    finally:
        if not quiet:
            enable_progress_bars()
    return folder


def load(folder: str | Path):
    """``load_from_disk`` with a clear error when the folder is not a saved dataset."""
    from datasets import load_from_disk

    folder = Path(folder)
    if not (folder / "dataset_dict.json").exists() and not (folder / "dataset_info.json").exists():
        raise DatasetError(f"No saved dataset in {folder}. Build and save it with notebook 04 "
                           "(cotlib.data.build_dataset, then data.save).")
    return load_from_disk(str(folder))


def dataset_stats(ds) -> dict:
    """Rows per split and per task type, and completion lengths in words.

    >>> from datasets import Dataset
    >>> dataset_stats(Dataset.from_list([{"task_type": "a", "completion": [
    ...     {"role": "assistant", "content": [{"type": "text", "text": "x y"}]}]}]))["rows"]
    {'train': 1}
    """
    from datasets import DatasetDict

    splits = ds if isinstance(ds, DatasetDict) else {"train": ds}
    stats: dict[str, Any] = {"rows": {}, "task_types": {}, "completion_words": {}}
    for name, part in splits.items():
        stats["rows"][name] = len(part)
        stats["task_types"][name] = dict(sorted(Counter(part["task_type"]).items()))
        words = [len(c[0]["content"][0]["text"].split()) for c in part["completion"]]
        if words:
            stats["completion_words"][name] = {"min": min(words), "mean": round(
                sum(words) / len(words), 1), "max": max(words)}
    return stats


def write_card(folder: str | Path, stats: Mapping[str, Any]) -> Path:
    """Write the dataset card ``README.md`` into ``folder``.

    ``stats``: :func:`dataset_stats` output plus optional ``variant``, ``teacher``,
    ``source``, ``filter`` (a one-line summary) and ``notes``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    variant = stats.get("variant", "cot")
    rows = stats.get("rows", {})
    types = sorted({t for per in stats.get("task_types", {}).values() for t in per})
    table = markdown_table(
        ["task type", *rows],
        [*([t, *(stats["task_types"].get(s, {}).get(t, 0) for s in rows)] for t in types),
         ["**total**", *rows.values()]])
    completion = ("the four-stage trace `<SUMMARY> … </SUMMARY> <CAPTION> … </CAPTION> "
                  "<REASONING> … </REASONING> <CONCLUSION> … </CONCLUSION>`"
                  if variant == "cot" else
                  "the same four stage texts without their tags, a blank line between them"
                  if variant == "untagged" else
                  "the answer alone (the option's text for multiple choice)")
    card = f"""---
language: en
license: mit
task_categories:
- image-text-to-text
tags:
- llava-cot
- chain-of-thought
- cotlib
- trl
pretty_name: cotlib {variant} dataset
---

# cotlib {variant} dataset

Training data for reproducing LLaVA-CoT at small scale with the cotlib course.
Source: {stats.get("source", "cotlib synthetic tasks (shapes and bar charts)")}.
Teacher: {stats.get("teacher", "not recorded")}.
Filter: {stats.get("filter", "cotlib.filtering default checks")}.

## Format (TRL prompt/completion, vision)

- `prompt`: the user turn — an image placeholder and the question.
- `completion`: the assistant turn — {completion}.
- `images`: one image per row.
- `task_id`, `task_type`, `answer`, `choices`, `answer_letter`: for evaluation; TRL drops them.

`trl.SFTTrainer` trains on it unchanged; with prompt/completion data it computes the loss on the
completion only (prompt and image tokens are masked).

## Rows

{table}

Completion length in words: {json.dumps(stats.get("completion_words", {}))}.

## Use

```python
from datasets import load_from_disk
ds = load_from_disk("path/to/this/folder")
# share it:  ds.push_to_hub("your-name/your-dataset", private=True)
```
{stats.get("notes", "")}
"""
    path = folder / "README.md"
    path.write_text(card)
    return path


# -----------------------------------------------------------------------------
# LLaVA-CoT-100k


def _read_json_items(path: Path) -> list[dict]:
    text = path.read_text()
    if text.lstrip().startswith("["):
        return json.loads(text)
    items = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DatasetError(f"{path}:{n} is not valid JSON ({err.msg})") from None
    return items


def import_llava_cot(
    jsonl_path: str | Path,
    image_root: str | Path,
    *,
    limit: int | None = None,
    missing_images: str = "error",
) -> tuple[list[dict], list[ImportedTask]]:
    """Read the LLaVA-CoT-100k layout into trace records and tasks for the same pipeline.

    The layout (LLaVA style): a ``.jsonl`` (or a ``.json`` list) of items like
    ``{"id": ..., "image": "chartqa/train/png/x.png", "conversations": [{"from": "human",
    "value": "<image>\\nQuestion"}, {"from": "gpt", "value": "<SUMMARY>…</CONCLUSION>"}]}``,
    with images under ``image_root``. Each human/gpt pair becomes one record, a results line
    (:class:`cotlib.teacher.store.Trace`, model ``llava-cot-100k``, mode ``import``, the image's
    ``task_type`` kept after the trace's own fields; ids get ``-1``,
    ``-2`` … after the first pair). ``task_type`` is the image's top folder (``chartqa``, …).
    The standard answer is not in this layout, so tasks have ``answer=None`` (the filter's
    answer check is skipped) and the direct variant uses the CONCLUSION.

    ``missing_images="error"`` raises on the first missing image file; ``"skip"`` drops it.
    Returns ``(records, tasks)``: filter with ``filtering.filter_traces(records, tasks)`` and
    build with ``build_dataset(records, verdicts, tasks)``. Some of its CONCLUSIONs are long
    descriptions (ShareGPT4V), so loosen the length bounds:
    ``checks=filtering.default_checks({"CONCLUSION": (1, 400)})``.
    """
    from cotlib.teacher.store import Trace

    path, root = Path(jsonl_path), Path(image_root)
    if not path.exists():
        raise DatasetError(f"No file at {path}: download LLaVA-CoT-100k's train.jsonl and pass "
                           "its path.")
    if missing_images not in ("error", "skip"):
        raise ValueError("missing_images must be 'error' or 'skip'")
    records: list[dict] = []
    tasks: list[ImportedTask] = []
    for n, item in enumerate(_read_json_items(path)):
        if limit is not None and len(records) >= limit:
            break
        image = item.get("image")
        convs = item.get("conversations")
        if not image or not isinstance(convs, list):
            raise DatasetError(f"item {n} of {path.name} has no 'image' or 'conversations': "
                               f"keys {sorted(item)}; expected the LLaVA layout")
        image_path = root / image
        if not image_path.exists():
            if missing_images == "skip":
                continue
            raise DatasetError(f"Image {image!r} (item {n}) not found under {root}. Pass the "
                               "folder that holds the dataset's image folders (chartqa/, "
                               "ai2d/, …), or missing_images='skip'.")
        base = str(item.get("id", n))
        turns = [(convs[i], convs[i + 1]) for i in range(0, len(convs) - 1, 2)
                 if convs[i].get("from") == "human" and convs[i + 1].get("from") == "gpt"]
        for k, (human, gpt) in enumerate(turns):
            question = human.get("value", "").replace("<image>", "").strip()
            text = gpt.get("value", "")
            task_id = base if k == 0 else f"{base}-{k}"
            task_type = Path(image).parts[0] if len(Path(image).parts) > 1 else "unknown"
            records.append(Trace(task_id, text, model="llava-cot-100k", mode="import", usage={},
                                 extra={"task_type": task_type}).to_json())
            tasks.append(ImportedTask(task_id, task_type, question, str(image_path)))
    if not records:
        raise DatasetError(f"No usable items in {path} (wrong file, or every image missing "
                           f"under {root}).")
    return records, tasks

"""The dataset the trainer takes: loaded from any form, checked (columns and chat format, every
image loadable), described for the training card, or made without a teacher from the tasks' own
solver (:func:`synthetic_traces`).

These raise :class:`~cotlib.train.settings.TrainError` like every training step, which is why they
live in this package rather than in :mod:`cotlib.data` (which builds and saves the dataset).

>>> ds = synthetic_traces(n=2)
>>> check_dataset_format(ds); len(ds)
2
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from cotlib import env
from cotlib.train.settings import TrainError

EXPECTED_COLUMNS = ("prompt", "completion", "images")


def load_dataset_any(dataset):
    """A ``datasets.Dataset`` from a Dataset, a ``save_to_disk`` folder, a DatasetDict (its
    ``train`` split) or a list of row dicts."""
    from datasets import Dataset, DatasetDict, load_from_disk

    if isinstance(dataset, (str, os.PathLike)):
        path = Path(dataset)
        if not path.exists():
            raise TrainError(f"no dataset at {path}: build one with cotlib.data (notebook 04) "
                             "and save it with dataset.save_to_disk(folder).")
        dataset = load_from_disk(str(path))
    if isinstance(dataset, DatasetDict):
        if "train" not in dataset:
            raise TrainError(f"the DatasetDict has splits {list(dataset)}; pass one split.")
        dataset = dataset["train"]
    if isinstance(dataset, list):
        dataset = Dataset.from_list(dataset)
    if not isinstance(dataset, Dataset):
        raise TrainError(f"expected a datasets.Dataset, a folder or a list of rows, got "
                         f"{type(dataset).__name__}.")
    return dataset


def check_dataset_format(dataset) -> None:
    """Raise :class:`TrainError` naming the expected columns unless ``dataset`` is in the TRL
    prompt/completion vision format the course trains on.

    >>> from datasets import Dataset
    >>> check_dataset_format(Dataset.from_list([{"text": "hi"}]))
    Traceback (most recent call last):
    ...
    cotlib.train.settings.TrainError: the dataset has columns ['text'], expected prompt, ...
    """
    cols = list(dataset.column_names)
    missing = [c for c in EXPECTED_COLUMNS if c not in cols]
    if not missing:
        row = dataset[0] if len(dataset) else None
        if row is None:
            raise TrainError("the dataset is empty: nothing to train on.")
        prompt, completion = row["prompt"], row["completion"]
        if not (isinstance(prompt, list) and prompt and isinstance(prompt[0], dict)
                and "role" in prompt[0]):
            raise TrainError(
                "column 'prompt' must be a list of chat messages, e.g. [{'role': 'user', "
                "'content': [{'type': 'image'}, {'type': 'text', 'text': question}]}]; got "
                f"{type(prompt).__name__}. cotlib.data.build_dataset writes this format.")
        if not (isinstance(completion, list) and completion
                and completion[0].get("role") == "assistant"):
            raise TrainError("column 'completion' must be [{'role': 'assistant', 'content': "
                             "[{'type': 'text', 'text': answer}]}].")
        return
    hint = ""
    if "messages" in cols:
        hint = (" This is the 'messages' format, where the loss would also train the question and "
                "image tokens: split each conversation into prompt (user turn) and completion "
                "(assistant turn) — cotlib.data.build_dataset does.")
    elif "conversations" in cols:
        hint = (" This looks like LLaVA-style data ('conversations' with from/value): convert "
                "it with cotlib.data (the LLaVA-CoT importer).")
    elif "image" in cols and "images" in missing:
        hint = " Rename 'image' to 'images' and make each value a list with one image."
    raise TrainError(
        f"the dataset has columns {cols}, expected {', '.join(EXPECTED_COLUMNS)} "
        f"(missing: {', '.join(missing)}): prompt = user turn with an image placeholder, "
        f"completion = the four-stage answer, images = [PIL image].{hint}")


@contextlib.contextmanager
def _quiet_datasets():
    import datasets

    was = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was:
            datasets.enable_progress_bars()


def check_images(dataset, on_bad: str = "skip"):
    """Try to load every image; drop rows with an unreadable one (``on_bad="skip"``, with a
    warning) or raise :class:`TrainError` (``"raise"``). Returns ``(dataset, skipped_ids)``.

    Images stored as paths become embedded images. One decode per image (milliseconds each).

    It runs on every dataset, also one ``cotlib.data.build_dataset`` has just made (whose images
    it rendered, or decoded once on the way): on the demo's 437-row datasets (192 px PNGs, one
    CPU thread) it takes 0.17-0.35 s per training run, about 0.1 % of the demo's 246 s of
    training, so no "already checked" mark lets it skip them (a mark kept in the dataset's
    info would also outlive a ``map`` that changed the images).
    """
    from datasets import Image, List

    from cotlib import images

    if on_bad not in ("skip", "raise"):
        raise ValueError(f"on_bad must be 'skip' or 'raise', got {on_bad!r}")
    with _quiet_datasets():
        if not isinstance(dataset.features["images"], List) or not isinstance(
                dataset.features["images"].feature, Image):
            dataset = dataset.cast_column("images", List(Image()))
        raw = dataset.cast_column("images", List(Image(decode=False)))["images"]
    bad: list[int] = []
    reasons: list[str] = []
    for i, entries in enumerate(raw):
        try:
            if not entries:
                raise images.ImageError("row has no image")
            for entry in entries:
                source = entry.get("bytes") or entry.get("path")
                if source is None:
                    raise images.ImageError("empty image entry")
                images.load_image(source, max_side=None)
        except (images.ImageError, OSError, ValueError) as err:
            bad.append(i)
            reasons.append(f"row {i}: {err}")
    if not bad:
        return dataset, []
    ids = dataset["task_id"] if "task_id" in dataset.column_names else list(range(len(dataset)))
    bad_ids = [ids[i] for i in bad]
    if on_bad == "raise":
        raise TrainError(f"{len(bad)} row(s) have an image that cannot be loaded; first: "
                         f"{reasons[0]}. Fix or drop them, or pass on_bad_image='skip'.")
    if len(bad) == len(dataset):
        raise TrainError(f"no row has a loadable image (first: {reasons[0]}).")
    warnings.warn(f"skipped {len(bad)} of {len(dataset)} rows whose image cannot be loaded "
                  f"(first: {reasons[0]})", stacklevel=2)
    keep = sorted(set(range(len(dataset))) - set(bad))
    return dataset.select(keep), bad_ids


def data_stats(dataset, tokenizer=None, sample: int = 1000) -> dict[str, Any]:
    """Rows, task types and completion lengths (tokens when a tokenizer is given) for the card."""
    stats: dict[str, Any] = {"rows": len(dataset)}
    if "task_type" in dataset.column_names:
        stats["task_types"] = dict(sorted(Counter(dataset["task_type"]).items()))
    n = min(sample, len(dataset))
    texts = [row[0]["content"][0]["text"] if isinstance(row[0]["content"], list)
             else row[0]["content"] for row in dataset.select(range(n))["completion"]]
    if texts:
        stats["completion_chars_mean"] = round(sum(map(len, texts)) / len(texts), 1)
        if tokenizer is not None:
            lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
            stats["completion_tokens_mean"] = round(sum(lengths) / len(lengths), 1)
            stats["completion_tokens_max"] = max(lengths)
    return stats


def synthetic_traces(tasks=None, *, n: int | None = None, variant: str = "cot"):
    """Rows in the course format from synthetic tasks, without a teacher: each trace is the
    task's own solver's (``synth.reference_trace``: plan, caption, the solver's steps, answer).

    The rows are built by ``cotlib.data.build_row`` with ``cotlib.data.features()``, so they have
    exactly the shape notebook 04 saves (prompt, completion, images, task_id, task_type, answer,
    choices, answer_letter). Default tasks: the shipped training split (240).

    >>> ds = synthetic_traces(n=2)
    >>> ds.column_names[:3]
    ['prompt', 'completion', 'images']
    """
    from datasets import Dataset

    from cotlib import data, synth

    if tasks is None:
        tasks = synth.load_split(env.DATA_DIR / "tasks" / "train")
    tasks = list(tasks)[:n] if n is not None else list(tasks)
    rows = []
    for task in tasks:
        rows.append(data.build_row(task, synth.reference_trace(task), variant))
    with _quiet_datasets():
        return Dataset.from_list(rows, features=data.features())


def as_messages(dataset):
    """The same rows in TRL's ``messages`` format (prompt + completion in one conversation),
    as TRL's own VLM example trains on. Used by the benchmark's baseline."""
    with _quiet_datasets():
        return dataset.map(lambda row: {"messages": row["prompt"] + row["completion"]},
                           remove_columns=["prompt", "completion"])

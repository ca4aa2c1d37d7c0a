"""Processor image size, the main memory lever: set it per family, count the image tokens it
gives, and the tokens per row the ``group_by_length`` sampler sorts by.

>>> _, p = models.load(models.tiny("idefics3"))
>>> set_image_size(p, 192, False)["longest_edge"], count_image_tokens(p, 192, 192)
(192, 36)
"""

from __future__ import annotations

from typing import Any

from cotlib import families, models
from cotlib.train.settings import TrainError


def set_image_size(processor, longest_edge: int | None = None,
                   do_image_splitting: bool | None = None) -> dict[str, Any]:
    """Set the image size a processor feeds the model; returns what is now in effect. Each
    family's rule is its ``set_image_size`` in :mod:`cotlib.families`.

    Idefics3/SmolVLM: ``longest_edge`` is the resize target before tiling and
    ``do_image_splitting`` switches tiling on/off. Qwen2-VL: ``longest_edge``² is the pixel cap
    (``max_pixels``); there is no tiling. LLaVA: the size is fixed by the vision tower.

    >>> _, p = models.load(models.tiny("idefics3"))
    >>> set_image_size(p, 192, False)
    {'longest_edge': 192, 'do_image_splitting': False}
    """
    family = processor_family(processor)
    try:
        return family.set_image_size(processor, longest_edge, do_image_splitting)
    except ValueError as err:
        raise TrainError(str(err)) from None


def processor_family(processor) -> families.Family:
    family = families.for_processor(processor)
    if family is None:
        raise TrainError(f"no registered model family uses {type(processor).__name__}; the "
                         f"course supports {models.FAMILIES}. A new family is one entry in "
                         "cotlib.families.REGISTRY.")
    return family


def count_image_tokens(processor, width: int, height: int) -> int:
    """Image tokens the processor produces for one ``width`` × ``height`` image (exact: it runs
    the processor on a blank image).

    >>> _, p = models.load(models.tiny("idefics3"))
    >>> count_image_tokens(p, 192, 192)
    36
    """
    from PIL import Image

    text = models.chat_prompt(processor, "?")
    batch = processor(text=[text], images=[[Image.new("RGB", (width, height), "white")]],
                      return_tensors="pt")
    image_token_id = getattr(processor, "image_token_id", None)
    if image_token_id is None:
        image_token_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    return int((batch["input_ids"] == image_token_id).sum())


def row_lengths(dataset, processor) -> list[int]:
    """Tokens per row as the model sees them: the chat's text tokens plus each image's tokens
    (counted once per image size), less the end-of-turn tokens TRL's collator appends to every
    row. The sort key of ``group_by_length``.

    >>> from cotlib import train
    >>> _, p = models.load(models.tiny("idefics3"))
    >>> lengths = row_lengths(train.synthetic_traces(n=2), p)
    >>> len(lengths), all(n > 36 for n in lengths)
    (2, True)
    """
    per_size: dict[tuple[int, int], int] = {}
    texts, image_tokens = [], []
    for row in dataset:
        texts.append(processor.apply_chat_template(row["prompt"] + row["completion"],
                                                   tokenize=False))
        sizes = [image.size for image in row["images"]]
        for size in sizes:
            if size not in per_size:
                per_size[size] = count_image_tokens(processor, *size)
        image_tokens.append(sum(per_size[size] for size in sizes))
    text_tokens = [len(ids) for ids in processor.tokenizer(texts)["input_ids"]]
    return [t + i for t, i in zip(text_tokens, image_tokens, strict=True)]

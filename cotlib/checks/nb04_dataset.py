"""Notebook 04: completion-only labels, as the vision collator makes them."""

from __future__ import annotations

from collections.abc import Callable

from cotlib.checks.core import COURSE_FAMILIES, call, checker, miss


def _tiny_rows(n: int = 3) -> list[dict]:
    """A few training rows of different lengths (rendered from the shipped training tasks)."""
    from cotlib import train

    rows = train.synthetic_traces()
    picks = sorted(range(len(rows)), key=lambda i: len(rows[i]["completion"][0]["content"][0]
                                                         ["text"]))
    chosen = [picks[0], picks[len(picks) // 2], picks[-1]][:n]
    return [dict(rows[i]) for i in chosen]


def completion_labels_reference(collator, processor, rows: list[dict]) -> dict:
    """Run ``collator`` on ``rows`` and return what the exercise needs: the batch's ids and
    mask, each row's prompt length (where the collator's completion starts), the image and
    end-of-turn token ids, whether anything after the end-of-turn token is trained, and the
    collator's labels."""
    import copy

    batch = collator([copy.deepcopy(r) for r in rows])
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    tok = getattr(processor, "tokenizer", processor)
    image_id = getattr(processor, "image_token_id", None)
    if image_id is None:
        image_id = tok.convert_tokens_to_ids(processor.image_token)
    end_id = tok.eos_token_id
    prompt_lengths, after_end = [], False
    for i in range(ids.shape[0]):
        trained = (labels[i] != -100).nonzero().flatten().tolist()
        prompt_lengths.append(trained[0] if trained else int(mask[i].sum()))
        ends = [p for p in range(prompt_lengths[-1], ids.shape[1]) if ids[i, p] == end_id]
        if ends and trained and trained[-1] > ends[0]:
            after_end = True
    return {"input_ids": ids, "attention_mask": mask, "prompt_lengths": prompt_lengths,
            "image_token_id": int(image_id), "end_token_id": None if after_end else int(end_id),
            "labels": labels, "tokenizer": tok}


@checker
def check_completion_labels(fn: Callable, collator=None, processor=None,
                            rows: list[dict] | None = None) -> bool:
    """Check a learner's ``completion_labels(input_ids, attention_mask, prompt_lengths,
    image_token_id, end_token_id)`` against the labels ``collator`` makes (default: TRL's
    ``DataCollatorForVisionLanguageModeling`` with ``completion_only_loss=True`` on both tiny
    model families). ``end_token_id`` is passed as ``None`` when the collator trains tokens
    after the end-of-turn token (TRL does: the template's newline), else as that token's id."""
    import torch

    title = "completion_labels"
    setups = []
    if collator is not None:
        setups.append(("your notebook's collator", collator, processor))
    else:
        from transformers import AutoProcessor
        from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

        from cotlib import models

        for family in COURSE_FAMILIES:
            proc = AutoProcessor.from_pretrained(models.tiny(family))
            setups.append((f"tiny {family}", DataCollatorForVisionLanguageModeling(
                proc, completion_only_loss=True), proc))
    rows = rows or _tiny_rows()
    for name, coll, proc in setups:
        ref = completion_labels_reference(coll, proc, rows)
        ids, mask = ref["input_ids"], ref["attention_mask"]
        before = ids.clone()
        args = (ids, mask, list(ref["prompt_lengths"]), ref["image_token_id"],
                ref["end_token_id"])
        case = f"{name}: {ids.shape[0]} rows of {[int(m.sum()) for m in mask]} tokens"
        ok, got = call(title, case, fn, *args)
        if not ok:
            return False
        if not torch.equal(ids, before):
            return miss(title, case, "input_ids changed", "input_ids untouched",
                        "labels = input_ids.clone() first; masking input_ids itself would "
                        "corrupt what the model reads")
        if not isinstance(got, torch.Tensor) or got.shape != ids.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            return miss(title, case, f"{shape}", f"a tensor of shape {tuple(ids.shape)}",
                        "return one label per input token, same shape as input_ids")
        expected = ref["labels"]
        if torch.equal(got.long(), expected):
            continue
        row, pos = [int(v) for v in (got.long() != expected).nonzero()[0]]
        tok = ref["tokenizer"]
        token = tok.convert_ids_to_tokens(int(ids[row, pos]))
        where = ("padding" if mask[row, pos] == 0 else
                 "an image token" if ids[row, pos] == ref["image_token_id"] else
                 "the prompt" if pos < ref["prompt_lengths"][row] else
                 "after the end-of-turn token" if ref["end_token_id"] is not None and
                 ref["end_token_id"] in ids[row, ref["prompt_lengths"][row]:pos].tolist() else
                 "the completion")
        hints = {
            "padding": "padding (attention_mask == 0) is never trained: -100",
            "an image token": "image tokens are part of the prompt: -100",
            "the prompt": "each row has its own prompt length: mask labels[i, :prompt_lengths[i]]",
            "after the end-of-turn token": "when end_token_id is given, train the end-of-turn "
                                           "token itself but nothing after it",
            "the completion": "completion tokens keep their own id as the label (the end-of-turn "
                              "token too, and what follows it when end_token_id is None)",
        }
        return miss(title, case, f"label {int(got[row, pos])} at row {row}, position {pos}",
                    f"{int(expected[row, pos])} — the token there is {token!r}, in {where}",
                    hints[where])
    after = ("nothing after the end-of-turn token is trained" if ref["end_token_id"] is not None
             else "the token(s) the chat template writes after the end-of-turn token are trained "
                  "too")
    print(f"✅ {title}: same labels as the collator ({len(setups)} batch"
          f"{'es' if len(setups) > 1 else ''}); with this collator {after}")
    return True

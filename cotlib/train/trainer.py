"""Building the trainer: the settings resolved against preset, hardware and memory estimate, the
``SFTConfig`` of the course recipe, the model (QLoRA on request), and TRL's ``SFTTrainer`` with the
end-of-turn label mask.

>>> precision_flags("bfloat16")
{'bf16': True, 'fp16': False}
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cotlib import env, models
from cotlib.train.dataset import check_dataset_format, check_images, load_dataset_any
from cotlib.train.image_size import (
    count_image_tokens,
    processor_family,
    row_lengths,
    set_image_size,
)
from cotlib.train.memory import (
    BYTES,
    HARDWARE_PRESETS,
    PRESET_TEXT_TOKENS,
    ModelShape,
    auto_checkpointing,
    pick_preset,
    shape_of,
    smolvlm_image_tokens,
)
from cotlib.train.settings import Resolved, TrainError, TrainSettings, is_tiny, resolve_model
from cotlib.train.targets import QLORA_SKIP, language_model_of, lora_config


def resolve_settings(settings: TrainSettings, processor=None, model_source: str | None = None,
            hw: env.Hardware | None = None, shape: ModelShape | None = None,
            sample_image_size: tuple[int, int] = (512, 512)) -> Resolved:
    """Apply preset, hardware and memory estimate to ``settings``.

    Tiny models keep their processor's image size whatever the preset says; Qwen-VL models get
    the pixel budget that gives as many image tokens as the preset's SmolVLM setting. The
    checkpointing decision for ``"auto"`` is :func:`auto_checkpointing`'s with ``shape``
    against 80 % of the GPU's memory (of the preset's card when a preset is named); on a CPU it
    is off. With ``adapt_vision=True`` the estimate leaves out the vision tower's activations.
    """
    hw = hw or env.hardware()
    preset = pick_preset(hw) if settings.preset == "auto" else HARDWARE_PRESETS.get(settings.preset)
    if preset is None:
        raise TrainError(f"unknown preset {settings.preset!r}; choose one of "
                         f"{sorted(HARDWARE_PRESETS)} or 'auto'.")
    tiny = model_source is not None and is_tiny(model_source)
    longest = settings.longest_edge
    splitting = settings.do_image_splitting
    if not tiny and longest is None and preset.longest_edge is not None:
        longest = preset.longest_edge
        if processor is not None:  # as many image tokens as the preset's SmolVLM setting
            tokens = smolvlm_image_tokens(preset.longest_edge, bool(preset.do_image_splitting))
            longest = processor_family(processor).preset_edge(preset.longest_edge, tokens)
    if not tiny and splitting is None:
        splitting = preset.do_image_splitting
    batch = settings.batch_size or preset.batch_size
    if settings.grad_accum is not None:
        accum = settings.grad_accum
    elif settings.batch_size is None or hw.device != "cuda":
        accum = preset.grad_accum if settings.batch_size is None else 1
    else:
        accum = max(1, 16 // batch)  # your batch size, the presets' effective batch of 16
    qlora = preset.qlora if settings.qlora is None else settings.qlora
    if qlora and hw.device != "cuda":
        raise TrainError("QLoRA (4-bit bitsandbytes) needs a CUDA GPU; set qlora=False here.")
    image_tokens = 0
    if processor is not None:
        set_image_size(processor, longest, splitting)
        image_tokens = count_image_tokens(processor, *sample_image_size)
    dtype = settings.dtype or hw.dtype
    if dtype not in BYTES:
        raise TrainError(f"dtype must be one of {sorted(BYTES)}, got {dtype!r}")
    # An explicit preset is the card you size for (e.g. a T4 emulated on a bigger GPU).
    memory = preset.memory_gb if settings.preset != "auto" and preset.memory_gb else \
        hw.gpu_memory_gb
    checkpointing = settings.gradient_checkpointing
    if checkpointing == "auto":
        if hw.device != "cuda" or shape is None or not memory:
            checkpointing, reason = False, (
                "auto: off (no GPU memory limit to respect)" if hw.device != "cuda"
                else "auto: off (no model shape to estimate from)")
        else:
            checkpointing, est = auto_checkpointing(
                shape, dtype, batch, image_tokens + PRESET_TEXT_TOKENS, memory,
                r=settings.lora_r, qlora=qlora)
            reason = (f"auto: estimate without checkpointing {est:.1f} GB vs 80% of "
                      f"{memory:g} GB -> {'on' if checkpointing else 'off'}")
    elif isinstance(checkpointing, str):
        raise TrainError(f"gradient_checkpointing must be True, False or 'auto', got "
                         f"{checkpointing!r}")
    else:
        reason = "set by you"
    return Resolved(preset.name, hw.device, dtype, batch, accum, longest, splitting,
                    bool(checkpointing), reason, bool(qlora), image_tokens)


def precision_flags(dtype: str) -> dict[str, bool]:
    """``SFTConfig`` mixed-precision flags for a dtype. TRL's default (``bf16=True``) fails on a
    T4 (no bf16) and on a CPU, so the course always sets both.

    >>> precision_flags("float16"), precision_flags("float32")
    ({'bf16': False, 'fp16': True}, {'bf16': False, 'fp16': False})
    """
    return {"bf16": dtype == "bfloat16", "fp16": dtype == "float16"}


def sft_config(settings: TrainSettings, resolved: Resolved):
    """The ``SFTConfig`` of the course recipe (TRL defaults overridden where they hurt)."""
    from trl import SFTConfig

    cuda = resolved.device == "cuda"
    workers = settings.dataloader_workers
    if workers is None:
        workers = min(4, max(0, (os.cpu_count() or 1) - 1)) if cuda else 0
    # Whole-model checkpointing goes through the Trainer only when the vision tower is adapted;
    # otherwise build_trainer checkpoints the language model alone (see there).
    whole_model_checkpointing = resolved.gradient_checkpointing and settings.adapt_vision
    kwargs: dict[str, Any] = dict(
        output_dir=str(Path(settings.output_dir) / "checkpoints"),
        per_device_train_batch_size=resolved.batch_size,
        gradient_accumulation_steps=resolved.grad_accum,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.lr_scheduler,
        warmup_steps=settings.warmup,
        logging_steps=settings.logging_steps,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=settings.save_total_limit,
        **precision_flags(resolved.dtype),
        activation_checkpointing=whole_model_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        max_length=settings.max_length,  # None: never cut image tokens
        completion_only_loss=True,  # labels -100 on prompt and image tokens
        packing=False,
        padding_free=False,
        report_to=[],
        seed=settings.seed,
        data_seed=settings.seed,
        dataloader_num_workers=workers,
        dataloader_persistent_workers=workers > 0,
        ddp_find_unused_parameters=None if settings.adapt_vision else False,
        disable_tqdm=True,
        use_cpu=resolved.device == "cpu",
        # The sampler reads the "length" column, so it must reach the dataloader; TRL's vision
        # collator reads only the columns it knows.
        remove_unused_columns=not settings.group_by_length,
    )
    if settings.group_by_length:
        kwargs.update(train_sampling_strategy="group_by_length", length_column_name="length")
    kwargs.update(settings.extra)
    return SFTConfig(**kwargs)


def load_model(model_source: str, dtype: str, qlora: bool = False):
    """Load model and processor for training (on the CPU; the Trainer moves it to its device).
    With ``qlora`` the base weights load in 4 bit (bitsandbytes) straight onto this process's GPU.
    """
    if not qlora:
        return models.load(model_source, dtype=dtype, device="cpu")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise TrainError("QLoRA needs bitsandbytes: pip install bitsandbytes (CUDA only).") from err
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig

    compute = env.torch_dtype(dtype)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                               bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute,
                               llm_int8_skip_modules=[*QLORA_SKIP, "lm_head"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    model = AutoModelForImageTextToText.from_pretrained(
        model_source, quantization_config=quant, dtype=compute,
        device_map={"": torch.device("cuda", local_rank)})
    return model, AutoProcessor.from_pretrained(model_source)


@dataclass
class Prepared:
    """What :func:`build_trainer` made: the trainer and the facts the card needs."""

    trainer: Any
    settings: TrainSettings
    resolved: Resolved
    model_source: str
    processor: Any
    dataset: Any
    skipped_images: list
    parameters: dict[str, int]
    recorder: Any


def _loss_recorder(verbose: bool):
    from transformers import TrainerCallback

    class LossRecorder(TrainerCallback):
        """Keeps (step, loss) pairs and prints one short line per log."""

        def __init__(self):
            self.losses: list[tuple[int, float]] = []
            self.start = time.perf_counter()

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses.append((int(state.global_step), float(logs["loss"])))
                if verbose and state.is_world_process_zero:
                    print(f"step {state.global_step:>4}/{state.max_steps}  loss "
                          f"{logs['loss']:.4f}  ({time.perf_counter() - self.start:.1f} s)")

    return LossRecorder()


def build_trainer(dataset, settings: TrainSettings | None = None, *, callbacks=None,
                  verbose: bool = True, **overrides) -> Prepared:
    """Check the data, load the model, apply the recipe and return an ``SFTTrainer`` (not run).

    ``overrides`` are :class:`TrainSettings` fields, e.g. ``build_trainer(ds,
    model="tiny-idefics3", max_steps=10)``.
    """
    import torch
    from peft import get_peft_model
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTTrainer

    settings = replace(settings or TrainSettings(), **overrides)
    dataset = load_dataset_any(dataset)
    check_dataset_format(dataset)
    dataset, skipped = check_images(dataset, settings.on_bad_image)
    source = resolve_model(settings.model)
    hw = env.hardware()
    preset = pick_preset(hw) if settings.preset == "auto" else HARDWARE_PRESETS.get(settings.preset)
    qlora = bool(preset.qlora if preset and settings.qlora is None else settings.qlora)
    model, processor = load_model(source, settings.dtype or hw.dtype, qlora and hw.device == "cuda")
    resolved = resolve_settings(settings, processor, source, hw,
                       shape=None if is_tiny(source) else shape_of(model),
                       sample_image_size=dataset[0]["images"][0].size)
    resolved.world_size = int(os.environ.get("WORLD_SIZE", 1))
    if settings.max_length is not None:
        _check_max_length(settings.max_length, processor, dataset)
    if settings.group_by_length:
        lengths = row_lengths(dataset, processor)
        if "length" in dataset.column_names:
            dataset = dataset.remove_columns("length")
        dataset = dataset.add_column("length", lengths)
    if resolved.qlora:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    # Seeded here, just before the adapter's random init: building a tiny twin that was not
    # cached yet (resolve_model) draws random numbers too, so a seed set earlier gave a cold
    # cache another LoRA init than a warm one.
    env.seed_everything(settings.seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        model = get_peft_model(model, lora_config(settings.lora_r, settings.lora_alpha,
                                                  settings.lora_dropout, settings.adapt_vision,
                                                  settings.modules_to_save))
    if resolved.gradient_checkpointing and not settings.adapt_vision:
        # Checkpoint the language model only: the frozen vision tower then keeps no activations
        # and runs no backward. Non-reentrant checkpointing needs no input gradients.
        language_model_of(model).activation_checkpointing_enable({"use_reentrant": False})
    counts = models.count_parameters(model)
    recorder = _loss_recorder(verbose)
    config = sft_config(settings, resolved)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*deprecated.*")
        trainer = SFTTrainer(model=model, args=config, train_dataset=dataset,
                             processing_class=processor,
                             callbacks=[recorder, *(callbacks or [])])
    trainer.remove_callback(PrinterCallback)
    trainer.data_collator = EndOfTurnMask(trainer.data_collator, end_of_turn_ids(model, processor))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    return Prepared(trainer, settings, resolved, source, processor, dataset, skipped, counts,
                    recorder)


def end_of_turn_ids(model, processor) -> list[int]:
    """Token ids that end an answer: the model's generation stops there (its generation config's
    ``eos_token_id``, and the tokenizer's eos token).

    >>> from cotlib import models
    >>> model, processor = models.load(models.tiny("idefics3"))
    >>> processor.tokenizer.convert_ids_to_tokens(end_of_turn_ids(model, processor))
    ['<end_of_utterance>']
    """
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    eos = getattr(getattr(processor, "tokenizer", processor), "eos_token_id", None)
    return sorted({*ids, *([eos] if eos is not None else [])})


class EndOfTurnMask:
    """Wraps TRL's collator: no label after a row's first end-of-turn token.

    The chat template writes ``<end_of_utterance>\\n`` after every turn, and TRL's
    prompt-completion collator trains the ``\\n`` too: a token the model never generates (decoding
    stops at the end-of-turn token), whose loss at step 0 was 19-26 nats on every row of the demo's
    datasets under the shipped base. Masking it makes the loss measure the answer alone.

    >>> import torch
    >>> mask = EndOfTurnMask(lambda rows: {"labels": torch.tensor(rows)}, [9])
    >>> mask([[-100, 5, 9, 7], [-100, -100, 4, 9]])["labels"].tolist()
    [[-100, 5, 9, -100], [-100, -100, 4, 9]]
    """

    def __init__(self, collator, end_ids: Sequence[int]):
        self.collator, self.end_ids = collator, list(end_ids)

    def __call__(self, examples):
        import torch

        batch = self.collator(examples)
        labels = batch.get("labels")
        if labels is None or not self.end_ids:
            return batch
        is_end = torch.isin(labels, torch.tensor(self.end_ids, device=labels.device))
        after = (is_end.long().cumsum(dim=1) - is_end.long()) > 0  # strictly after the first end
        batch["labels"] = labels.masked_fill(after, -100)
        return batch

    def __getattr__(self, name):  # TRL and the Trainer read the collator's attributes
        if name == "collator":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.collator, name)


def _check_max_length(max_length: int, processor, dataset, sample: int = 32) -> None:
    """Refuse a ``max_length`` that would cut a prompt (and so image tokens)."""
    from trl.data_utils import apply_chat_template, prepare_multimodal_messages

    longest = 0
    for row in dataset.select(range(min(sample, len(dataset)))):
        example = {"prompt": prepare_multimodal_messages(row["prompt"], images=row["images"]),
                   "completion": prepare_multimodal_messages(row["completion"])}
        text = apply_chat_template(example, processor)["prompt"]
        ids = processor(text=[text], images=[row["images"]], return_tensors="pt")["input_ids"]
        longest = max(longest, ids.shape[1])
    if max_length <= longest + 8:
        raise TrainError(
            f"max_length={max_length} would cut into prompts of up to {longest} tokens (image "
            f"tokens included) and fail with an image-token mismatch. Use max_length=None, or at "
            f"least {longest + 8} plus the answer length, or a smaller image size.")

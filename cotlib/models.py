"""Load any Hugging Face vision-language model, or build a tiny offline twin of one.

The course recommends real models (``PRESETS``) and loads them with the ordinary
``AutoModelForImageTextToText.from_pretrained(hub_id)``. With no network, ``tiny(family)`` builds a
small randomly initialised model of the same family — a tokenizer trained here on course text,
the family's special tokens and chat template, a tiny config — saves it with ``save_pretrained``
and the same ``load()`` reads it back. Lessons and tests therefore run the real loading code.

>>> from cotlib import models
>>> models.FAMILIES
('idefics3', 'qwen2_vl', 'llava')

What differs between families (builders, module layout, image sizing) lives in
:mod:`cotlib.families`, one entry each.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from cotlib import env, families

#: The registered model families (:data:`cotlib.families.REGISTRY`).
FAMILIES = families.names()

#: Default image size for the tiny models (synthetic scenes are 192 px squares).
TINY_IMAGE_SIZE = 192


@dataclass(frozen=True)
class ModelPreset:
    """A real model the course recommends, with what it needs.

    ``inference_gb`` is an estimate in GiB: weights in bf16/fp16 (2 bytes per parameter) plus
    ~20% for activations and the KV cache at one image. What LoRA training needs depends on the
    GPU's settings: ``cotlib.train.lora_memory_gb(name, preset)`` estimates it from the model's
    shape (``cotlib.train.MODEL_SHAPES``).
    """

    name: str
    hub_id: str
    family: str
    params_millions: int
    inference_gb: float
    image_tokens: str
    notes: str = ""


#: Bytes one weight takes in each storage type (4-bit quantised weights pack two per byte).
BYTES_PER_PARAM: dict[str, float] = {
    "float32": 4, "bfloat16": 2, "float16": 2, "int8": 1, "int4": 0.5,
}


def weights_gib(params_millions: float, dtype: str = "bfloat16") -> float:
    """Memory the weights alone take, in GiB (2**30 bytes), rounded to 0.01.

    >>> weights_gib(256, "bfloat16"), weights_gib(3755, "int4")
    (0.48, 1.75)
    """
    if dtype not in BYTES_PER_PARAM:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(BYTES_PER_PARAM)}")
    return round(params_millions * 1e6 * BYTES_PER_PARAM[dtype] / 2**30, 2)


def _inference_gb(params_millions: int) -> float:
    return round(params_millions * 1e6 * BYTES_PER_PARAM["bfloat16"] * 1.2 / 2**30, 1)


PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in (
        ModelPreset(
            "smolvlm-256m", "HuggingFaceTB/SmolVLM-256M-Instruct", "idefics3", 256,
            _inference_gb(256), "64 per 512 px tile; up to 4x4 tiles + global view",
            "Fits a Colab T4 easily; the course's default real model.",
        ),
        ModelPreset(
            "smolvlm-500m", "HuggingFaceTB/SmolVLM-500M-Instruct", "idefics3", 507,
            _inference_gb(507), "64 per 512 px tile; up to 4x4 tiles + global view",
            "Better answers; still fits a T4 for LoRA at the T4 preset.",
        ),
        ModelPreset(
            "qwen2.5-vl-3b", "Qwen/Qwen2.5-VL-3B-Instruct", "qwen2_vl", 3755,
            _inference_gb(3755), "one token per 28x28 px (min/max pixels cap the count)",
            "bf16 LoRA on an L4/A100; on a T4 fp16 LoRA only with gradient checkpointing, "
            "close to the card's budget: 4-bit QLoRA leaves headroom.",
        ),
    )
}


class ModelLoadError(RuntimeError):
    """A model or processor could not be loaded; the message says what to do instead."""


def resolve(model_id_or_folder: str | os.PathLike) -> str:
    """Turn a preset name, a folder or a hub id into what ``from_pretrained`` takes.

    >>> resolve("smolvlm-256m")
    'HuggingFaceTB/SmolVLM-256M-Instruct'
    """
    text = str(model_id_or_folder)
    if text in PRESETS:
        return PRESETS[text].hub_id
    return text


def load(
    model_id_or_folder: str | os.PathLike,
    *,
    dtype: str | None = None,
    device: str | None = None,
    **kwargs,
):
    """Load a vision-language model and its processor: ``(model, processor)``.

    Works for any ``AutoModelForImageTextToText`` id, a preset name from ``PRESETS`` or a local
    folder (e.g. one written by :func:`tiny`). dtype and device default to the hardware's best
    (bf16 on Ampere+, fp16 on T4-class GPUs, fp32 on CPU).

    >>> model, processor = load(tiny("idefics3"))  # doctest: +ELLIPSIS
    >>> model.dtype
    torch.float32
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    source = resolve(model_id_or_folder)
    hw = env.hardware()
    device = device or hw.device
    local = Path(source).is_dir()
    if not local and (Path(source).is_absolute() or source.startswith((".", "~"))):
        raise ModelLoadError(
            f"No model folder at {source!r}. Build one with cotlib.models.tiny(...) or pass a "
            "hub id such as 'HuggingFaceTB/SmolVLM-256M-Instruct'."
        )
    try:
        processor = AutoProcessor.from_pretrained(source, **kwargs)
        model = AutoModelForImageTextToText.from_pretrained(
            source, dtype=env.torch_dtype(dtype or hw.dtype), **kwargs
        )
    except (OSError, ValueError) as err:
        where = "this folder" if local else f"the hub id {source!r}"
        hint = (
            "The Hugging Face hub is switched off (HF_HUB_OFFLINE=1) or unreachable, and the "
            "model is not in the local cache. Connect and unset HF_HUB_OFFLINE to download it, "
            "copy the model folder here and pass its path, or use the offline twin "
            "cotlib.models.load(cotlib.models.tiny('idefics3'))."
            if not local
            else "Check that the folder holds config.json, the weights and the processor files."
        )
        raise ModelLoadError(f"Could not load {where}: {type(err).__name__}. {hint}") from None
    model.to(device)
    model.eval()
    return model, processor


# --------------------------------------------------------------------------------------------
# Tiny offline models
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TinySpec:
    """Sizes of a tiny model. The defaults train a step in well under a second on a CPU."""

    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    vision_hidden: int = 64
    vision_layers: int = 2
    image_size: int = TINY_IMAGE_SIZE
    patch_size: int = 16  # idefics3 (llava: twice this); qwen2_vl: always 14 px, merged 2x2
    vocab_size: int = 1024


def course_corpus() -> list[str]:
    """Text the tiny tokenizers are trained on: stage tags, prompts, synthetic tasks and traces.

    >>> any("<CONCLUSION>" in line for line in course_corpus())
    True
    """
    from cotlib import stages

    lines = [" ".join(stages.open_tag(s) + " " + stages.close_tag(s) for s in stages.STAGES)]
    lines += [f"{s}: {text}" for s, text in stages.STAGE_PURPOSE.items()]
    try:
        from cotlib import synth

        for task in synth.make_tasks(160, seed=12345):
            lines.append(task.prompt_question())
            lines.append(synth.reference_trace(task))
        lines.append(synth.vocabulary())  # the word list, held by the task-type registry
    except ImportError:  # pragma: no cover - synth is part of the package
        pass
    return lines


def _train_tokenizer(specials: list[str], vocab_size: int, corpus: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    return tok


def tiny_cache_dir() -> Path:
    """Where tiny models are cached: ``$COTLIB_CACHE`` or ``~/.cache/cotlib``."""
    return Path(os.environ.get("COTLIB_CACHE", Path.home() / ".cache" / "cotlib"))


def tiny(
    family: str = "idefics3",
    folder: str | os.PathLike | None = None,
    *,
    spec: TinySpec = TinySpec(),
    seed: int = 0,
    rebuild: bool = False,
) -> Path:
    """Build (or reuse) a tiny random model of ``family`` and return its folder.

    The folder is an ordinary ``save_pretrained`` folder: load it with :func:`load` or with
    ``AutoModelForImageTextToText.from_pretrained(folder)``. Building is deterministic for a given
    ``spec`` and ``seed``, and results are cached by a hash of both.

    >>> folder = tiny("idefics3")
    >>> (folder / "config.json").exists()
    True
    """
    import torch

    if family not in FAMILIES:
        raise ValueError(f"Unknown family {family!r}; choose one of {FAMILIES}.")
    entry = families.get(family)
    corpus = course_corpus()
    key = hashlib.sha256(
        json.dumps([family, asdict(spec), seed, corpus], sort_keys=True).encode()
    ).hexdigest()[:12]
    target = Path(folder) if folder else tiny_cache_dir() / "tiny" / f"{family}-{key}"
    if (target / "cotlib_tiny.json").exists() and not rebuild:
        return target
    torch.manual_seed(seed)
    try:
        model, processor = entry.build_tiny(
            spec, _train_tokenizer(list(entry.specials), spec.vocab_size, corpus))
    except ImportError as err:  # a processor's optional dependency (the message names it)
        raise ModelLoadError(str(err)) from err
    tok = processor.tokenizer
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.do_sample = False
    # in the cache: written next to the target, then renamed into place, so processes that build
    # the same model at once (parallel test workers) never see a half-written folder
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target if folder else Path(
        tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    staging.mkdir(exist_ok=True)
    model.save_pretrained(staging)
    processor.save_pretrained(staging)
    info = {"family": family, "spec": asdict(spec), "seed": seed, "key": key,
            "parameters": sum(p.numel() for p in model.parameters())}
    (staging / "cotlib_tiny.json").write_text(json.dumps(info, indent=2))
    if staging == target:  # a folder of the caller's: written in place
        return target
    if target.exists() and (rebuild or not (target / "cotlib_tiny.json").exists()):
        shutil.rmtree(target, ignore_errors=True)
    try:
        os.rename(staging, target)
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "cotlib_tiny.json").exists():
            raise
    return target


def count_parameters(model) -> dict[str, int]:
    """Total and trainable parameter counts.

    >>> import torch; count_parameters(torch.nn.Linear(2, 3))
    {'total': 9, 'trainable': 9}
    """
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


def chat_prompt(processor, question: str) -> str:
    """The user turn (one image, then the question) in the model's chat template, ready for the
    assistant to answer.

    >>> _, processor = load(tiny("idefics3"))
    >>> chat_prompt(processor, "How many?")
    '<|im_start|>User:<image>How many?<end_of_utterance>\\nAssistant:'
    """
    content = [{"type": "image"}, {"type": "text", "text": question}]
    return processor.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True
    )


def encode(processor, images: list, texts: list[str], device=None):
    """Tokenize ``texts`` (each holding one image placeholder) with ``images``, padded, as tensors.

    Works for every family (one image per text).

    >>> _, processor = load(tiny("idefics3"))
    >>> from PIL import Image
    >>> batch = encode(processor, [Image.new("RGB", (64, 64))], [chat_prompt(processor, "Hi?")])
    >>> batch["input_ids"].shape[0]
    1
    """
    if len(images) != len(texts):
        raise ValueError(f"got {len(images)} images for {len(texts)} texts; pass one image each")
    tokenizer = processor.tokenizer
    if len(texts) > 1 and tokenizer.padding_side != "left":
        tokenizer.padding_side = "left"  # generation continues at the right edge
    batch = processor(text=list(texts), images=list(images), return_tensors="pt", padding=True)
    return batch.to(device) if device is not None else batch


# --------------------------------------------------------------------------------------------
# The shipped tiny base (data/base) and its checksum
# --------------------------------------------------------------------------------------------

#: Checksum file of a model folder, in ``sha256sum`` format (``sha256sum -c SHA256SUMS`` works).
CHECKSUM_FILE = "SHA256SUMS"
#: Files a checksum does not cover: the checksum itself and the hand-edited model card.
_UNCHECKED = {CHECKSUM_FILE, "README.md"}


def _checked_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name not in _UNCHECKED)


def write_checksum(folder: str | os.PathLike) -> Path:
    """Write ``folder/SHA256SUMS`` covering every file but the model card; return its path.

    >>> import shutil, tempfile
    >>> copy = shutil.copytree(tiny("idefics3"), Path(tempfile.mkdtemp()) / "model")
    >>> path = write_checksum(copy)
    >>> path.name, "config.json" in path.read_text()
    ('SHA256SUMS', True)
    """
    folder = Path(folder)
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}"
             for p in _checked_files(folder)]
    path = folder / CHECKSUM_FILE
    path.write_text("\n".join(lines) + "\n")
    return path


def verify_checksum(folder: str | os.PathLike) -> None:
    """Raise ``ModelLoadError`` unless every file listed in ``folder/SHA256SUMS`` is present and
    unchanged and no unlisted file was added (the model card is not checked).

    >>> import shutil, tempfile
    >>> copy = shutil.copytree(tiny("idefics3"), Path(tempfile.mkdtemp()) / "model")
    >>> verify_checksum(write_checksum(copy).parent)  # no error: intact
    """
    folder = Path(folder)
    listing = folder / CHECKSUM_FILE
    if not listing.exists():
        raise ModelLoadError(f"No {CHECKSUM_FILE} in {folder}; cannot verify the model files.")
    expected = {}
    for line in listing.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            expected[name.strip().lstrip("*")] = digest
    problems = [f"missing {n}" for n in expected if not (folder / n).is_file()]
    problems += [f"changed {n}" for n, d in expected.items() if (folder / n).is_file()
                 and hashlib.sha256((folder / n).read_bytes()).hexdigest() != d]
    problems += [f"unlisted {p.name}" for p in _checked_files(folder) if p.name not in expected]
    if problems:
        raise ModelLoadError(f"Checksum check failed for {folder}: {', '.join(problems)}. "
                             "Restore the folder (git checkout data/base) or retrain it with "
                             "scripts/pretrain_base.py.")


def load_base(folder: str | os.PathLike | None = None, **kwargs):
    """Verify and load the course's pretrained tiny base (``env.BASE_DIR`` unless ``folder``):
    ``(model, processor)`` via :func:`load`, so ``from_pretrained`` reads it.

    >>> model, processor = load_base()
    >>> type(model).__name__
    'Idefics3ForConditionalGeneration'
    """
    folder = Path(folder) if folder is not None else env.BASE_DIR
    verify_checksum(folder)
    return load(folder, **kwargs)

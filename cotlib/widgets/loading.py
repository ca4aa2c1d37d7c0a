"""Models for the app: the picker's choices, the tiny stand-in (:func:`stand_in`), the hub's
reachability (:func:`hub_unreachable`) and :func:`load_model`, which says what it loaded
(:class:`LoadedModel`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cotlib import env, images, infer, models, stages
from cotlib.widgets.uploads import WidgetError

#: The model picker's choices, in the order shown: a random stand-in that memorised one answer
#: (seconds to build, fast mode's default), the course's pretrained base in ``data/base`` (full
#: mode's default), notebook 05's adapter, or a model from the Hugging Face hub.
MODEL_CHOICES = ("stand-in", "shipped base", "your adapter", "hub id")

#: Seconds to wait for the hub to answer before a "hub id" load gives up with a clear message
#: (without this check an unreachable hub costs minutes of retries first).
HUB_CHECK_TIMEOUT = 3.0

#: The photo the app starts with (one of ``data/photos``) and the question it asks first.
DEFAULT_PHOTO = "chelsea"
DEFAULT_QUESTION = "What is in this photo?"

#: A hub model worth trying online (any AutoModelForImageTextToText id works).
EXAMPLE_HUB_ID = "HuggingFaceTB/SmolVLM-256M-Instruct"

#: Tokens per stage in fast mode (full mode uses :data:`cotlib.infer.DEFAULT_MAX_TOKENS`).
FAST_MAX_TOKENS = 64

#: What the tiny stand-in memorises: honest about itself, in the four stages.
STAND_IN_TRACE = stages.render(
    "I will say what the photo shows.",
    "I am a tiny stand-in: I memorised this text and cannot see the photo.",
    "A model trained in notebook 05 would reason about the photo here.",
    "Nothing real: this run shows the plumbing.",
)

#: Below this many parameters a model runs on one CPU thread (see :func:`cpu_threads`).
TINY_PARAMETERS = 20_000_000


@dataclass
class LoadedModel:
    """A model, its processor, the picker choice it answers and a label saying what it is."""

    model: Any = field(repr=False)
    processor: Any = field(repr=False)
    choice: str
    label: str
    source: str

    @property
    def parameters(self) -> int:
        return models.count_parameters(self.model)["total"]

    def describe(self) -> str:
        """One line for the picker: what was loaded, and how big it is."""
        n = self.parameters
        size = f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.0f}k"
        return f"{self.label} — {size} parameters"


@contextlib.contextmanager
def cpu_threads(model) -> Any:
    """Run a tiny model (under :data:`TINY_PARAMETERS`) on one CPU thread, then restore.

    Its matrices are so small that starting threads costs more than the work: on a busy 2-core
    machine one thread decoded a 0.3M-parameter model about 7x faster than two. Larger models
    and GPUs are left alone.
    """
    on_cpu = infer._device(model).type == "cpu"
    if not on_cpu or models.count_parameters(model)["total"] >= TINY_PARAMETERS:
        yield
        return
    with env.torch_threads(1):
        yield


def stand_in(photo: str = DEFAULT_PHOTO, question: str = DEFAULT_QUESTION, *,
             trace: str = STAND_IN_TRACE, family: str = "idefics3") -> tuple[Any, Any, Path]:
    """A tiny random model overfitted (:func:`cotlib.infer.memorise`) on one answer for one
    shipped photo and question, so it writes the four tags by itself. Built once, then cached
    next to the tiny models (:func:`cotlib.models.tiny_cache_dir`). Returns
    ``(model, processor, folder)``.

    It answers *only* that photo and question sensibly; for anything else its output falls
    apart — it never learned to look. That is the point: it shows the plumbing, not vision.
    """
    import torch

    base = models.tiny(family)
    image = images.load_sample_photo(photo)
    key = hashlib.sha256(json.dumps(
        [base.name, images.image_digest(image), question, trace]).encode()).hexdigest()[:12]
    folder = models.tiny_cache_dir() / "stand-in" / f"{family}-{key}"
    if not (folder / "cotlib_stand_in.json").exists():
        torch.manual_seed(0)
        model, processor = models.load(base, dtype="float32", device="cpu")
        with cpu_threads(model):
            losses = infer.memorise(model, processor, image, question, trace)
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        info = {"photo": photo, "question": question, "trace": trace, "steps": len(losses),
                "loss": losses[-1], "base": str(base)}
        (tmp / "cotlib_stand_in.json").write_text(json.dumps(info, indent=2))
        if (folder / "cotlib_stand_in.json").exists():  # another process was quicker
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(folder, ignore_errors=True)  # a half-written folder
            tmp.replace(folder)
    model, processor = models.load(folder, dtype="float32")
    return model, processor, folder


def default_choice() -> str:
    """The model the app starts with: the stand-in in fast mode (it answers its photo in a
    fraction of a second), the shipped base in full mode.

    >>> default_choice() in MODEL_CHOICES
    True
    """
    return "stand-in" if env.is_fast() else "shipped base"


def hub_unreachable(endpoint: str | None = None, timeout: float = HUB_CHECK_TIMEOUT) -> str | None:
    """Why the Hugging Face hub cannot be reached within ``timeout`` seconds, or ``None`` when
    it answers. ``endpoint``: ``$HF_ENDPOINT`` or ``https://huggingface.co``. Only opens a TCP
    connection (name lookup included, which has no timeout of its own: it runs in a thread)."""
    url = endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    parts = urlsplit(url)
    host = parts.hostname or url
    port = parts.port or (80 if parts.scheme == "http" else 443)
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except Exception as err:  # any failure (refused, no route, no name) means "not reachable"
            outcome.append(f"{type(err).__name__}: {err}")

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        return f"no answer from {host}:{port} within {timeout:g} s"
    return outcome[0]


def load_model(
    choice: str | None = None,
    *,
    run: str | os.PathLike | None = None,
    hub_id: str | None = None,
    base: str | os.PathLike | None = None,
    photo: str = DEFAULT_PHOTO,
    question: str = DEFAULT_QUESTION,
) -> LoadedModel:
    """Load what the model picker names (``None``: :func:`default_choice`); :class:`WidgetError`
    says what to do when it can't.

    - ``"stand-in"``: a tiny random model (:func:`stand_in`) that memorised one answer for
      ``photo`` and ``question``; it cannot see.
    - ``"shipped base"``: the course's pretrained tiny model in ``base`` (default ``data/base``),
      checked against its SHA256SUMS.
    - ``"your adapter"``: the LoRA adapter notebook 05 saved in ``run/adapter``.
    - ``"hub id"``: ``hub_id`` from the Hugging Face hub: refused at once under
      ``HF_HUB_OFFLINE=1``, and after a short reachability check (:func:`hub_unreachable`) when
      the hub cannot be reached.
    """
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bars under the app
    try:
        return _load(choice or default_choice(), run=run, hub_id=hub_id, base=base, photo=photo,
                     question=question)
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def _load(choice: str, *, run, hub_id, base, photo: str, question: str) -> LoadedModel:
    if choice == "stand-in":
        model, processor, folder = stand_in(photo, question)
        return LoadedModel(model, processor, choice,
                           f"stand-in: a random tiny model that memorised one answer for {photo} "
                           "(it cannot see)", str(folder))
    if choice == "shipped base":
        base = Path(base) if base is not None else env.BASE_DIR
        if not (base / "config.json").exists():
            raise WidgetError(f"no shipped base in {short_path(base)}: restore it (git checkout "
                              "data/base) or pick 'stand-in'")
        try:  # the shipped base is verified against its SHA256SUMS first
            model, processor = (models.load_base(base) if (base / models.CHECKSUM_FILE).exists()
                                else models.load(base))
        except models.ModelLoadError as err:
            raise WidgetError(str(err)) from None
        return LoadedModel(model, processor, choice,
                           f"shipped base: the course's pretrained tiny model in "
                           f"{short_path(base)}", str(base))
    if choice == "your adapter":
        folder = Path(run if run is not None else env.run_dir()) / "adapter"
        if not (folder / "adapter_config.json").exists():
            raise WidgetError(f"no adapter in {short_path(folder)} yet: train one in notebook 05 "
                              "first (or pick 'shipped base')")
        from cotlib import train

        model, processor = train.load_adapter(folder, merge=True)
        config = json.loads((folder / "adapter_config.json").read_text())
        on = config.get("base_model_name_or_path") or "its base model"
        return LoadedModel(model, processor, choice,
                           f"your adapter: {short_path(folder)} (LoRA on {short_path(on)})",
                           str(folder))
    if choice == "hub id":
        if env.offline():
            raise WidgetError("the Hugging Face hub is switched off (HF_HUB_OFFLINE=1): unset "
                              "it and restart the kernel to download a model, or pick "
                              "'shipped base' / 'your adapter'")
        hub_id = (hub_id or "").strip()
        if not hub_id:
            raise WidgetError(f"type a hub id first, e.g. {EXAMPLE_HUB_ID}")
        why = hub_unreachable()
        if why:
            raise WidgetError(f"the Hugging Face hub cannot be reached ({why}): check the "
                              "internet connection, or pick 'shipped base' / 'your adapter'")
        try:
            model, processor = models.load(hub_id)
        except models.ModelLoadError as err:
            raise WidgetError(str(err)) from None
        return LoadedModel(model, processor, choice, f"hub: {hub_id}", hub_id)
    raise WidgetError(f"unknown model choice {choice!r}: pick one of {MODEL_CHOICES}")


def short_path(path: str | os.PathLike) -> str:
    """A path relative to the repository when it lies inside it (shorter labels); anything else,
    such as a hub id, unchanged."""
    if not Path(path).is_absolute():
        return str(path)
    try:
        return str(Path(path).resolve().relative_to(env.REPO_ROOT))
    except ValueError:
        return str(path)

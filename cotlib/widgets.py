"""Try your own image: upload a photo, ask a question, watch the four stages stream in.

The app of notebook 08 is a thin layer of ipywidgets over plain functions, so everything it does
can be run and tested without a browser:

- :func:`first_upload` / :func:`read_upload` read an ``ipywidgets.FileUpload`` value (ipywidgets 8:
  a tuple of dicts with ``name``, ``type``, ``size``, ``last_modified`` and ``content``, a
  ``memoryview``); a file that is not an image gives a clear message;
- :func:`load_model` loads what the model picker names — ``"stand-in"`` (a random tiny model
  that memorised one answer: fast mode's default), ``"shipped base"`` (the course's pretrained
  tiny model in ``data/base``: full mode's default), ``"your adapter"`` (the LoRA adapter
  notebook 05 trained) or ``"hub id"`` (any model on the Hugging Face hub, online only) — and
  says what it actually loaded;
- :func:`answer` decodes stage by stage (:func:`cotlib.infer.generate_stages`) or with LLaVA-CoT's
  stage-level beam search (:func:`cotlib.search.beam_search_stages`) and reports progress through
  two callbacks;
- :class:`StagePanels` shows the four stages in labelled panels that fill as they are written,
  and :class:`TryApp` wires it all together.

Headless use, as the tests do it (``set_state`` simulates the browser's upload, ``click()`` the
button)::

    app = TryApp()
    app.upload.set_state({"value": fake_upload("data/photos/coffee.jpg")})
    app.button.click()
    app.texts()  # {"SUMMARY": "...", "CAPTION": "...", ...}

>>> image, name = read_upload(fake_upload(images.SAMPLE_PHOTOS_DIR / "coffee.jpg"))
>>> name, image.mode
('coffee.jpg', 'RGB')
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import io
import json
import os
import shutil
import socket
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cotlib import env, images, infer, models, search, stages

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


class WidgetError(ValueError):
    """Something the learner can fix (nothing uploaded, no adapter yet, hub offline, ...)."""


# --------------------------------------------------------------------------------------------
# Uploads
# --------------------------------------------------------------------------------------------


def first_upload(value: Any) -> tuple[str, bytes] | None:
    """Name and bytes of the first file in an ipywidgets 8 ``FileUpload.value``; ``None`` when
    nothing is uploaded yet.

    ipywidgets 8 gives a tuple of dicts (``name``, ``type``, ``size``, ``last_modified``,
    ``content``); ``content`` is a ``memoryview``, so it is copied into ``bytes``. (ipywidgets 7
    had a dict keyed by file name and a ``.data`` attribute; both are gone.)

    >>> first_upload(({"name": "cat.png", "content": memoryview(b"PNG...")},))
    ('cat.png', b'PNG...')
    >>> first_upload(()) is None
    True
    """
    if not value:
        return None
    entry = value[0]
    return str(entry["name"]), bytes(entry["content"])


@dataclass
class Upload:
    """An uploaded image as the app uses it: RGB, at most ``max_side`` pixels a side, with the
    size the file had (upright) so that a shrunk image can say so."""

    image: Any = field(repr=False)
    name: str
    original_size: tuple[int, int]
    max_side: int | None = None

    @property
    def shrunk(self) -> bool:
        return tuple(self.image.size) != tuple(self.original_size)

    def describe(self) -> str:
        """``"photo.jpg: 2048×1365 px (shrunk from 6000×4000: at most 2048 px a side)"``."""
        w, h = self.image.size
        line = f"{self.name}: {w}×{h} px"
        if self.shrunk:
            ow, oh = self.original_size
            line += f" (shrunk from {ow}×{oh}: at most {self.max_side} px a side)"
        return line


def load_upload(value: Any, *, max_side: int = 2048) -> Upload:
    """The first uploaded file as an :class:`Upload` (RGB image, name, original size);
    :class:`WidgetError` with a clear message when nothing is uploaded or the file is not an
    image. Images larger than ``max_side`` are shrunk, keeping their aspect ratio.

    >>> from PIL import Image
    >>> buffer = io.BytesIO(); Image.new("RGB", (3000, 300)).save(buffer, "PNG")
    >>> load_upload(fake_upload(buffer.getvalue(), name="wide.png"), max_side=1000).describe()
    'wide.png: 1000×100 px (shrunk from 3000×300: at most 1000 px a side)'
    """
    found = first_upload(value)
    if found is None:
        raise WidgetError("no file uploaded yet: click 'Upload' and choose a photo (PNG or JPEG)")
    name, data = found
    try:
        full = images.load_image({"name": name, "content": data}, max_side=None)
        image = images.load_image(full, max_side=max_side) if max(full.size) > max_side else full
    except images.ImageError as err:
        raise WidgetError(str(err)) from None
    return Upload(image, name, tuple(full.size), max_side)


def read_upload(value: Any, *, max_side: int = 2048) -> tuple[Any, str]:
    """The first uploaded file as an RGB ``PIL.Image`` and its name (:func:`load_upload` without
    the size); :class:`WidgetError` with a clear message when nothing is uploaded or the file
    is not an image.

    >>> try:
    ...     read_upload(fake_upload(b"%PDF-1.7", name="paper.pdf"))
    ... except WidgetError as err:
    ...     print(err)  # doctest: +ELLIPSIS
    paper.pdf: not an image: the file starts like a PDF document (export the page as PNG ...
    """
    upload = load_upload(value, max_side=max_side)
    return upload.image, upload.name


def fake_upload(source: str | os.PathLike | bytes, *, name: str | None = None,
                mime: str | None = None) -> list[dict]:
    """A one-file upload as the browser sends it, for ``FileUpload.set_state({"value": ...})``
    (headless tests and demos). ``source`` is a path or raw bytes.

    >>> upload = fake_upload(b"abc", name="a.png")
    >>> upload[0]["name"], upload[0]["size"], bytes(upload[0]["content"])
    ('a.png', 3, b'abc')
    """
    if isinstance(source, (bytes, bytearray)):
        data, name = bytes(source), name or "upload.bin"
    else:
        path = Path(source)
        data, name = path.read_bytes(), name or path.name
    if mime is None:
        suffix = Path(name).suffix.lower()
        mime = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
                ".webp": "image/webp", ".txt": "text/plain"}.get(suffix, "")
    return [{"name": name, "type": mime, "size": len(data), "content": memoryview(data),
             "last_modified": 0}]


def preview_bytes(image, max_side: int = 256) -> bytes:
    """A small JPEG of ``image`` for the app's preview (keeps notebooks and messages small)."""
    small = image.copy()
    small.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    small.convert("RGB").save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


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
            raise WidgetError(f"no shipped base in {_short_path(base)}: restore it (git checkout "
                              "data/base) or pick 'stand-in'")
        try:  # the shipped base is verified against its SHA256SUMS first
            model, processor = (models.load_base(base) if (base / models.CHECKSUM_FILE).exists()
                                else models.load(base))
        except models.ModelLoadError as err:
            raise WidgetError(str(err)) from None
        return LoadedModel(model, processor, choice,
                           f"shipped base: the course's pretrained tiny model in "
                           f"{_short_path(base)}", str(base))
    if choice == "your adapter":
        folder = Path(run if run is not None else env.run_dir()) / "adapter"
        if not (folder / "adapter_config.json").exists():
            raise WidgetError(f"no adapter in {_short_path(folder)} yet: train one in notebook 05 "
                              "first (or pick 'shipped base')")
        from cotlib import train

        model, processor = train.load_adapter(folder, merge=True)
        config = json.loads((folder / "adapter_config.json").read_text())
        on = config.get("base_model_name_or_path") or "its base model"
        return LoadedModel(model, processor, choice,
                           f"your adapter: {_short_path(folder)} (LoRA on {_short_path(on)})",
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


def _short_path(path: str | os.PathLike) -> str:
    """A path relative to the repository when it lies inside it (shorter labels); anything else,
    such as a hub id, unchanged."""
    if not Path(path).is_absolute():
        return str(path)
    try:
        return str(Path(path).resolve().relative_to(env.REPO_ROOT))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------
# Answering, with progress callbacks
# --------------------------------------------------------------------------------------------


@dataclass
class StageDone:
    """A finished stage as the panels show it: text plus tokens, time and why it stopped."""

    stage: str
    text: str
    tokens: int
    seconds: float
    stop: str
    note: str = ""  # e.g. the search's candidates and judge time

    def stats(self) -> str:
        """``"17 tokens · 0.21 s · 81 tokens/s · stop: tag"`` (plus the note)."""
        rate = f" · {self.tokens / self.seconds:.0f} tokens/s" if self.seconds > 0 else ""
        line = f"{self.tokens} tokens · {self.seconds:.2f} s{rate} · stop: {self.stop}"
        return f"{line} · {self.note}" if self.note else line

    @classmethod
    def from_result(cls, result: infer.StageResult) -> StageDone:
        return cls(result.stage, result.text, result.tokens, result.seconds, result.stop)

    @classmethod
    def from_search(cls, step: search.StageSearch) -> StageDone:
        best = step.best
        note = (f"best of {len(step.candidates)} candidates (#{best.index}), judged in "
                f"{step.judge_seconds:.2f} s")
        return cls(step.stage, best.text, best.tokens, step.sample_seconds + step.judge_seconds,
                   best.stop, note)


@dataclass
class Outcome:
    """What :func:`answer` returns: the staged answer, the search tree (with search) and the
    wall time."""

    answer: infer.StagedAnswer
    tree: search.SearchTree | None
    seconds: float

    def summary(self) -> str:
        """Timing and token counts for the whole answer, and the final answer."""
        a = self.answer
        rate = a.tokens / self.seconds if self.seconds > 0 else 0.0
        how = f"beam search ({self.tree.scorer})" if self.tree is not None else "greedy"
        problems = "well formed" if a.ok else f"{len(a.problems)} format problems"
        return (f"{how}: prompt {a.prompt_tokens} tokens (prefill {a.prefill_seconds:.2f} s) · "
                f"answer {a.tokens} tokens in {self.seconds:.2f} s ({rate:.0f} tokens/s) · "
                f"{problems} · final answer: {_printable(a.final_answer)!r}")


def answer(
    loaded: LoadedModel,
    image: Any,
    question: str,
    *,
    use_search: bool = False,
    n: int = 2,
    max_new_tokens: int | Mapping[str, int] | None = None,
    on_token: Callable[[str, str], Any] | None = None,
    on_stage_end: Callable[[StageDone], Any] | None = None,
) -> Outcome:
    """Answer ``question`` about ``image`` stage by stage and report progress.

    Greedy: ``on_token(stage, text_so_far)`` after every token, ``on_stage_end(StageDone)``
    after every stage. With ``use_search``: LLaVA-CoT's stage-level beam search with ``n``
    candidates per stage judged by the model itself; stages arrive whole as the knockout decides
    them (``on_token`` is called with empty text when a stage's search starts).
    """
    if not str(question).strip():
        raise WidgetError("type a question first")
    model, processor = loaded.model, loaded.processor
    t0 = time.perf_counter()
    with cpu_threads(model):
        if not use_search:
            result = infer.generate_stages(
                model, processor, image, question, max_new_tokens_per_stage=max_new_tokens,
                on_token=on_token,
                on_stage_end=(lambda s, r: on_stage_end(StageDone.from_result(r)))
                if on_stage_end else None,
            )
            return Outcome(result, None, time.perf_counter() - t0)
        if n < 1:
            raise WidgetError(f"search needs at least 1 candidate per stage, got {n}")

        def step_done(step: search.StageSearch) -> None:
            if on_stage_end:
                on_stage_end(StageDone.from_search(step))
            nxt = stages.next_stage(step.stage)
            if on_token and nxt:
                on_token(nxt, "")

        if on_token:
            on_token(stages.STAGES[0], "")
        judge_tokens = 24 if env.is_fast() else 64
        tree = search.beam_search_stages(
            model, processor, image, question, n=n,
            scorer=search.judge_scorer(model, processor, max_new_tokens=judge_tokens),
            max_new_tokens_per_stage=max_new_tokens, on_stage_end=step_done,
        )
    return Outcome(tree.answer, tree, time.perf_counter() - t0)


def _printable(text: str) -> str:
    """Replace control characters (random-weight models write them) with a visible mark."""
    return "".join(ch if ch.isprintable() or ch in "\n\t" else "\ufffd" for ch in str(text))


# --------------------------------------------------------------------------------------------
# The widgets
# --------------------------------------------------------------------------------------------

_COLORS = {"SUMMARY": "#4c72b0", "CAPTION": "#55a868", "REASONING": "#c44e52",
           "CONCLUSION": "#8172b2"}


def _html(text: str, color: str = "#333", italic: bool = False) -> str:
    style = f"white-space: pre-wrap; color: {color};" + (" font-style: italic;" if italic else "")
    return f'<div style="{style}">{html.escape(_printable(text))}</div>'


class StagePanels:
    """Four labelled panels, one per stage, that fill while the stage is written.

    Each panel is a ``VBox`` with CSS classes ``cotlib-stage`` and ``cotlib-stage-<NAME>``; its
    body (``cotlib-stage-body``) holds the text, its footer (``cotlib-stage-stats``) tokens,
    time and why the stage stopped. Updates while streaming are sent at most every
    ``interval`` seconds (each one is a message to the browser).
    """

    def __init__(self, interval: float = 0.05):
        import ipywidgets as w

        self.interval = interval
        self.text: dict[str, str] = {}
        self.done: dict[str, StageDone] = {}
        self.titles, self.bodies, self.footers, self.boxes = {}, {}, {}, {}
        for s in stages.STAGES:
            purpose = stages.STAGE_PURPOSE.get(s, "")
            self.titles[s] = w.HTML(f'<b style="color: {_COLORS[s]}">{s}</b> '
                                    f'<span style="color: #777">— {html.escape(purpose)}</span>')
            self.bodies[s] = w.HTML().add_class("cotlib-stage-body")
            self.footers[s] = w.HTML().add_class("cotlib-stage-stats")
            box = w.VBox([self.titles[s], self.bodies[s], self.footers[s]],
                         layout=w.Layout(border=f"2px solid {_COLORS[s]}", padding="4px 8px",
                                         margin="4px 0", width="100%"))
            self.boxes[s] = box.add_class("cotlib-stage").add_class(f"cotlib-stage-{s}")
        self.widget = w.VBox(list(self.boxes.values())).add_class("cotlib-stages")
        self._last = 0.0
        self.reset()

    def reset(self) -> None:
        """Empty every panel (before a new answer)."""
        self.text, self.done = {}, {}
        for s in stages.STAGES:
            self.bodies[s].value = _html("waiting…", "#999", italic=True)
            self.footers[s].value = ""

    def write(self, stage: str, text: str, *, force: bool = False) -> None:
        """Show ``text`` as the stage's text so far (throttled unless ``force``)."""
        self.text[stage] = text
        now = time.perf_counter()
        if force or now - self._last >= self.interval:
            self._last = now
            shown = text if text else "writing…"
            self.bodies[stage].value = _html(shown, "#111" if text else "#999", italic=not text)
            self.footers[stage].value = _html("writing…", "#999", italic=True)

    def finish(self, done: StageDone) -> None:
        """Show a finished stage with its statistics (never throttled)."""
        self.done[done.stage] = done
        self.text[done.stage] = done.text
        body = done.text if done.text else f"(no text: stopped by {done.stop})"
        self.bodies[done.stage].value = _html(body, "#111" if done.text else "#999",
                                              italic=not done.text)
        self.footers[done.stage].value = _html(done.stats(), "#555")

    def texts(self) -> dict[str, str]:
        """The text each panel holds now (for tests and for printing)."""
        return {s: self.text.get(s, "") for s in stages.STAGES}


class TryApp:
    """The notebook 08 app: photo (shipped or uploaded), question, model picker, search switch,
    an Answer button and the four streaming panels.

    ``loaded`` holds already loaded models by picker choice (so the first click does not wait).
    ``max_new_tokens`` caps each stage (default: :data:`FAST_MAX_TOKENS` in fast mode, the
    library's per-stage defaults otherwise). Every action is a method (:meth:`use_photo`,
    :meth:`on_upload`, :meth:`run`), so tests drive it without a browser; errors are shown in the
    status line and kept in :attr:`error` instead of vanishing inside the widget's callback.
    """

    def __init__(
        self,
        *,
        run: str | os.PathLike | None = None,
        loaded: Mapping[str, LoadedModel] | None = None,
        photo: str = DEFAULT_PHOTO,
        question: str = DEFAULT_QUESTION,
        choice: str | None = None,
        use_search: bool = False,
        n: int = 2,
        max_new_tokens: int | Mapping[str, int] | None = None,
        base: str | os.PathLike | None = None,
    ):
        import ipywidgets as w

        choice = choice or default_choice()
        if choice not in MODEL_CHOICES:
            raise WidgetError(f"unknown model choice {choice!r}: pick one of {MODEL_CHOICES}")
        self.run_folder = Path(run) if run is not None else env.run_dir()
        self.base = base
        self.start = (photo, question)  # what a stand-in memorises, if one is loaded
        self.max_new_tokens = (FAST_MAX_TOKENS if env.is_fast() else None) \
            if max_new_tokens is None else max_new_tokens
        self.loaded: dict[str, LoadedModel] = dict(loaded or {})
        self.image, self.image_name = None, ""
        self.outcome: Outcome | None = None
        self.error: str | None = None  # the last error's traceback, for debugging
        self.busy = False

        self.photo = w.Dropdown(options=[p.name for p in images.sample_photos()], value=None,
                                description="photo", layout=w.Layout(width="260px"))
        self.upload = w.FileUpload(accept="image/*", multiple=False,
                                   description="Upload").add_class("cotlib-upload")
        self.preview = w.Image(format="jpeg", layout=w.Layout(max_width="256px"))
        self.image_info = w.HTML().add_class("cotlib-image-info")
        self.question = w.Text(value=question, description="question",
                               layout=w.Layout(width="520px"))
        self.picker = w.Dropdown(options=MODEL_CHOICES, value=choice, description="model",
                                 layout=w.Layout(width="260px"))
        offline = env.offline()
        self.hub_id = w.Text(value="" if offline else EXAMPLE_HUB_ID, description="hub id",
                             placeholder="offline: HF_HUB_OFFLINE=1" if offline
                             else EXAMPLE_HUB_ID, disabled=offline,
                             layout=w.Layout(width="420px"))
        self.model_info = w.HTML().add_class("cotlib-model-info")
        self.search = w.Checkbox(value=use_search, description="stage-level beam search",
                                 indent=False)
        self.n = w.BoundedIntText(value=n, min=1, max=16, description="candidates",
                                  layout=w.Layout(width="160px"))
        self.button = w.Button(description="Answer", button_style="primary",
                               icon="play").add_class("cotlib-answer")
        self.status = w.HTML().add_class("cotlib-status")
        self.summary = w.HTML().add_class("cotlib-summary")
        self.panels = StagePanels()

        self.photo.observe(lambda c: self.use_photo(c["new"]), "value")
        self.upload.observe(lambda c: self.on_upload(c["new"]), "value")
        self.picker.observe(lambda c: self._show_model_info(), "value")
        self.hub_id.observe(lambda c: self._show_model_info(), "value")
        self.button.on_click(lambda _: self.run())

        left = w.VBox([self.photo, self.upload, self.preview, self.image_info])
        right = w.VBox([self.question, w.HBox([self.picker, self.hub_id]), self.model_info,
                        w.HBox([self.search, self.n]), self.button, self.status])
        self.widget = w.VBox([w.HBox([left, right]), self.panels.widget, self.summary])
        self.widget.add_class("cotlib-app")
        self.use_photo(photo)
        self._show_model_info()
        self._set_status("ready: press Answer (or upload your own photo first)")

    # ---- actions -----------------------------------------------------------------------------

    def use_photo(self, name: str | None) -> None:
        """Switch to a shipped photo, by file name or stem (``"chelsea"``, see ``data/photos``)."""
        if not name:
            return
        match = next((p for p in images.sample_photos() if name in (p.name, p.stem)), None)
        if match is None:
            names = ", ".join(p.stem for p in images.sample_photos())
            raise WidgetError(f"no shipped photo called {name!r}: choose one of {names}")
        self._set_image(images.load_image(match), match.name)
        if self.photo.value != match.name:
            self.photo.value = match.name

    def on_upload(self, value: Any) -> bool:
        """Use the first uploaded file; a non-image keeps the previous image and says why. A
        large image is shrunk, and the line under the preview says from what size."""
        if not value:
            return False
        try:
            upload = load_upload(value)
        except WidgetError as err:
            keep = f" — still using {self.image_name}" if self.image_name else ""
            self._set_status(f"⚠️ {err}{keep}", error=True)
            return False
        upload.name = f"{upload.name} (uploaded)"
        self._set_image(upload.image, upload.name, upload.describe())
        self.photo.value = None  # so that picking a shipped photo again switches back
        shrunk = (f" (shrunk from {upload.original_size[0]}×{upload.original_size[1]})"
                  if upload.shrunk else "")
        self._set_status(f"uploaded {upload.name}{shrunk}: press Answer")
        return True

    def model(self) -> LoadedModel:
        """The model the picker names now (loaded on first use, then kept)."""
        choice, key = self.picker.value, self._key()
        if key not in self.loaded:
            problem = self._problem()
            if problem:  # say so before dropping the model that is loaded now
                raise WidgetError(problem)
            self._set_status(f"loading {choice}…")
            self.loaded.clear()  # one model in memory at a time
            env.free_memory()
            self.loaded[key] = load_model(
                choice, run=self.run_folder, hub_id=self.hub_id.value, base=self.base,
                photo=self.start[0], question=self.start[1])
        loaded = self.loaded[key]
        self.model_info.value = _html(f"loaded: {loaded.describe()}", "#555")
        return loaded

    def run(self) -> Outcome | None:
        """Answer the question about the current image, filling the panels as stages are
        written. Returns the :class:`Outcome`, or ``None`` after showing an error."""
        if self.busy:
            return None
        self.busy, self.error, self.outcome = True, None, None
        self.button.disabled, self.button.description = True, "Answering…"
        self.panels.reset()
        self.summary.value = ""
        try:
            if self.image is None:
                raise WidgetError("no image yet: pick a photo or upload one")
            loaded = self.model()
            self._set_status(f"answering about {self.image_name} with {loaded.choice}…")
            outcome = answer(
                loaded, self.image, self.question.value, use_search=self.search.value,
                n=self.n.value, max_new_tokens=self.max_new_tokens,
                on_token=self.panels.write, on_stage_end=self.panels.finish,
            )
        except WidgetError as err:
            self._set_status(f"⚠️ {err}", error=True)
            return None
        except Exception as err:  # show it: errors in widget callbacks are otherwise invisible
            self.error = traceback.format_exc()
            self._set_status(f"⚠️ {type(err).__name__}: {err}", error=True)
            return None
        finally:
            self.busy = False
            self.button.disabled, self.button.description = False, "Answer"
        self.outcome = outcome
        self.summary.value = _html(outcome.summary(), "#333")
        self._set_status(f"done: {self.image_name}, {outcome.answer.tokens} tokens in "
                         f"{outcome.seconds:.2f} s")
        return outcome

    # ---- helpers -----------------------------------------------------------------------------

    def _set_image(self, image, name: str, info: str | None = None) -> None:
        """Show a new image and empty the panels: their text was about the previous one."""
        self.image, self.image_name = image, name
        self.preview.value = preview_bytes(image)
        self.image_info.value = _html(info or f"{name}: {image.width}×{image.height} px", "#555")
        self.outcome = None
        self.panels.reset()
        self.summary.value = ""

    def _set_status(self, text: str, error: bool = False) -> None:
        self.status.value = _html(text, "#b00" if error else "#333")

    def _key(self) -> str:
        choice = self.picker.value
        return choice if choice != "hub id" else f"hub id:{self.hub_id.value.strip()}"

    def _problem(self) -> str | None:
        """Why the picked model cannot load (checked before loading), or None."""
        choice = self.picker.value
        if choice == "hub id" and env.offline():
            return ("the hub is offline (HF_HUB_OFFLINE=1): unset it and restart the kernel to "
                    "use a hub id, or pick 'shipped base' / 'your adapter'")
        if choice == "hub id" and not self.hub_id.value.strip():
            return f"type a hub id first, e.g. {EXAMPLE_HUB_ID}"
        adapter = self.run_folder / "adapter"
        if choice == "your adapter" and not (adapter / "adapter_config.json").exists():
            return (f"no adapter in {_short_path(adapter)} yet: train one in notebook 05 first "
                    "(or pick 'shipped base')")
        return None

    def _show_model_info(self) -> None:
        choice = self.picker.value
        self.hub_id.layout.display = "" if choice == "hub id" else "none"
        key, problem = self._key(), self._problem()
        if key in self.loaded:
            text, error = f"loaded: {self.loaded[key].describe()}", False
        elif problem:
            text, error = problem, True
        else:
            text, error = f"{choice}: loads when you press Answer", False
        self.model_info.value = _html(text, "#b00" if error else "#555")

    def texts(self) -> dict[str, str]:
        """The four panels' texts."""
        return self.panels.texts()

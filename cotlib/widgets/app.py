"""The widgets: :class:`StagePanels` (four panels that fill as the stages are written) and
:class:`TryApp`, notebook 08's app, which wires the photo, the question, the model picker and
the panels together."""

from __future__ import annotations

import html
import os
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cotlib import env, images, stages
from cotlib.widgets.answering import Outcome, StageDone, answer, printable
from cotlib.widgets.loading import (
    DEFAULT_PHOTO,
    DEFAULT_QUESTION,
    EXAMPLE_HUB_ID,
    FAST_MAX_TOKENS,
    MODEL_CHOICES,
    LoadedModel,
    default_choice,
    load_model,
    short_path,
)
from cotlib.widgets.uploads import WidgetError, load_upload, preview_bytes

_COLORS = {"SUMMARY": "#4c72b0", "CAPTION": "#55a868", "REASONING": "#c44e52",
           "CONCLUSION": "#8172b2"}


def _html(text: str, color: str = "#333", italic: bool = False) -> str:
    style = f"white-space: pre-wrap; color: {color};" + (" font-style: italic;" if italic else "")
    return f'<div style="{style}">{html.escape(printable(text))}</div>'


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
            return (f"no adapter in {short_path(adapter)} yet: train one in notebook 05 first "
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

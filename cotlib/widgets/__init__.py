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

The package, read in this order (each module imports only the ones above it):
:mod:`~cotlib.widgets.uploads` (:class:`WidgetError`, reading uploads),
:mod:`~cotlib.widgets.loading` (the model picker's choices, :func:`stand_in`,
:func:`load_model`), :mod:`~cotlib.widgets.answering` (:func:`answer` with its callbacks),
:mod:`~cotlib.widgets.app` (:class:`StagePanels`, :class:`TryApp`). Every public name is
re-exported here: ``from cotlib import widgets; widgets.X``.
"""

from cotlib import images  # noqa: F401 (the doctest above reads a shipped photo)
from cotlib.widgets.answering import (
    Outcome,
    StageDone,
    answer,
    printable,
)
from cotlib.widgets.app import (
    StagePanels,
    TryApp,
)
from cotlib.widgets.loading import (
    DEFAULT_PHOTO,
    DEFAULT_QUESTION,
    EXAMPLE_HUB_ID,
    FAST_MAX_TOKENS,
    HUB_CHECK_TIMEOUT,
    MODEL_CHOICES,
    STAND_IN_TRACE,
    TINY_PARAMETERS,
    LoadedModel,
    cpu_threads,
    default_choice,
    hub_unreachable,
    load_model,
    short_path,
    stand_in,
)
from cotlib.widgets.uploads import (
    Upload,
    WidgetError,
    fake_upload,
    first_upload,
    load_upload,
    preview_bytes,
    read_upload,
)

__all__ = [
    "DEFAULT_PHOTO", "DEFAULT_QUESTION", "EXAMPLE_HUB_ID", "FAST_MAX_TOKENS",
    "HUB_CHECK_TIMEOUT", "LoadedModel", "MODEL_CHOICES", "Outcome", "STAND_IN_TRACE",
    "StageDone", "StagePanels", "TINY_PARAMETERS", "TryApp", "Upload", "WidgetError", "answer",
    "cpu_threads", "default_choice", "fake_upload", "first_upload", "hub_unreachable",
    "load_model", "load_upload", "preview_bytes", "printable", "read_upload", "short_path",
    "stand_in",
]

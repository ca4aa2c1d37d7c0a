"""Uploads: :class:`WidgetError` (what the learner can fix), reading an ipywidgets 8
``FileUpload`` value (:func:`first_upload`, :func:`load_upload`, :func:`read_upload`), a fake
one for headless use (:func:`fake_upload`) and the preview's small JPEG."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cotlib import images


class WidgetError(ValueError):
    """Something the learner can fix (nothing uploaded, no adapter yet, hub offline, ...)."""


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

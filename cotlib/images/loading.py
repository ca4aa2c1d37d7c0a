"""The public loaders: :func:`load_image` for any source, ``data:`` URLs both ways, the pixel
digest, and the photos that ship with the course."""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cotlib import env
from cotlib.images.decoding import _decode, _normalize
from cotlib.images.errors import ImageError
from cotlib.images.reading import _array_to_image, _check_options, _decode_data_url, _read_source

SAMPLE_PHOTOS_DIR = env.DATA_DIR / "photos"
"""Folder with the small set of photos that ship with the course (package data when installed)."""

DEFAULT_MAX_PIXELS = 40_000_000
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
_MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


def load_image(
    source: Any,
    *,
    max_side: int | None = 2048,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = 1,
) -> Image.Image:
    """Load ``source`` as a fully decoded RGB image, upright and at most ``max_side`` pixels.

    ``source`` may be a path (``str`` / ``os.PathLike``), ``bytes`` / ``bytearray`` /
    ``memoryview``, a binary file object, a ``PIL.Image.Image``, a uint8 numpy array (HxW,
    HxWx3 or HxWx4), an ``ipywidgets.FileUpload().value`` (the first file is used) or one of
    its entries, or a ``data:image/...;base64,...`` URL. http(s) URLs are not fetched.

    The pixel count from the file header is checked against ``max_pixels`` *before* decoding
    (decompression-bomb guard). EXIF orientation is applied; transparency is composited onto
    white; CMYK, palette, 1-bit, LAB, HSV and YCbCr become RGB; 16-bit greyscale is scaled to
    8 bits (``value / 257``) instead of being clipped. Images larger than ``max_side`` are
    downscaled with LANCZOS keeping the aspect ratio (``max_side=None`` keeps the size).
    Images whose shorter side is below ``min_side`` are rejected.

    >>> img = load_image(np.zeros((30, 4000), dtype=np.uint8), max_side=1000)
    >>> img.mode, img.size
    ('RGB', (1000, 8))
    """
    _check_options(max_side, max_pixels, min_side)
    if isinstance(source, Image.Image):
        return _normalize(source, "PIL image", max_side, max_pixels, min_side)
    if isinstance(source, np.ndarray):
        return _normalize(_array_to_image(source), "array", max_side, max_pixels, min_side)
    data, label = _read_source(source)
    image = _decode(data, label, max_pixels)
    return _normalize(image, label, max_side, max_pixels, min_side)


def image_to_data_url(img: Any, format: str = "PNG") -> str:
    """Encode an image as a base64 ``data:`` URL (the OpenAI chat format's ``image_url``).

    ``img`` is usually a ``PIL.Image.Image``; anything else is first passed to
    :func:`load_image`. ``format`` is ``"PNG"`` (lossless, default), ``"JPEG"`` or ``"WEBP"``.

    >>> url = image_to_data_url(Image.new("RGB", (2, 2), "red"))
    >>> url[:22]
    'data:image/png;base64,'
    """
    fmt = format.upper().replace("JPG", "JPEG")
    if fmt not in _MIME_TYPES:
        raise ImageError(
            f"unsupported format {format!r} for a data URL: use 'PNG', 'JPEG' or 'WEBP'"
        )
    if not isinstance(img, Image.Image):
        img = load_image(img)
    savable_modes = ("RGB", "L") if fmt == "JPEG" else ("RGB", "RGBA", "L", "LA")
    if img.mode not in savable_modes:  # e.g. JPEG has no alpha: composite onto white first
        img = load_image(img, max_side=None)
    buffer = io.BytesIO()
    save_options = {"quality": 90} if fmt in ("JPEG", "WEBP") else {}
    try:
        img.save(buffer, format=fmt, **save_options)
    except (OSError, ValueError) as err:
        raise ImageError(f"could not encode the {img.mode} image as {fmt}: {err}") from None
    payload = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"data:{_MIME_TYPES[fmt]};base64,{payload}"


def data_url_to_image(
    url: str, *, max_side: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Decode a ``data:image/...;base64,...`` URL into an RGB image (strict about the format).

    Unlike :func:`load_image`, the size is kept by default so that a round trip is exact.

    >>> img = Image.new("RGB", (3, 1), "blue")
    >>> data_url_to_image(image_to_data_url(img)).getpixel((0, 0))
    (0, 0, 255)
    """
    data = _decode_data_url(url)
    image = _decode(data, "data URL", max_pixels)
    return _normalize(image, "data URL", max_side, max_pixels, 1)


def image_digest(img: Any, length: int = 16) -> str:
    """Return a short SHA-256 hex digest of an image's size and RGB pixels (for dedup/caching).

    Two images with the same pixels get the same digest whatever file format they came from.
    Non-RGB input is first normalised with ``load_image(img, max_side=None)``.

    >>> a = Image.new("RGB", (4, 4), "white")
    >>> image_digest(a) == image_digest(a.copy()), len(image_digest(a))
    (True, 16)
    """
    if not (isinstance(img, Image.Image) and img.mode == "RGB"):
        img = load_image(img, max_side=None)
    digest = hashlib.sha256(f"{img.width}x{img.height}:".encode())
    digest.update(img.tobytes())
    return digest.hexdigest()[:length]


def sample_photos() -> list[Path]:
    """List the photos shipped in ``data/photos`` (sorted by name).

    >>> [p.name for p in sample_photos()][:2]
    ['astronaut.jpg', 'chelsea.jpg']
    """
    if not SAMPLE_PHOTOS_DIR.is_dir():
        return []
    return sorted(p for p in SAMPLE_PHOTOS_DIR.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)


def load_sample_photo(name: str | None = None) -> Image.Image:
    """Load a shipped photo by file name or stem (``"chelsea"``); ``None`` gives the first one.

    >>> load_sample_photo("coffee.jpg").mode
    'RGB'
    """
    photos = sample_photos()
    if not photos:
        raise ImageError(
            f"no sample photos found in {SAMPLE_PHOTOS_DIR}: the data/photos folder "
            "ships with the cotlib repository; run from a full checkout"
        )
    if name is None:
        return load_image(photos[0])
    for photo in photos:
        if name.lower() in (photo.name.lower(), photo.stem.lower()):
            return load_image(photo)
    available = ", ".join(p.stem for p in photos)
    raise ImageError(f"no sample photo called {name!r}: choose one of {available}")

"""Load images safely and turn them into plain RGB ``PIL.Image`` objects.

Everything a course notebook might hand us -- a path, raw bytes, an open file, a PIL image,
a numpy array, an ``ipywidgets.FileUpload`` value or a ``data:image/...;base64,`` URL -- goes
through :func:`load_image`, which returns a fully decoded RGB image or raises :class:`ImageError`
with a message that says what was wrong and how to fix it.

>>> img = load_sample_photo("chelsea")
>>> img.mode, max(img.size) <= 2048
('RGB', True)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from cotlib import env

__all__ = [
    "SAMPLE_PHOTOS_DIR",
    "ImageError",
    "data_url_to_image",
    "image_digest",
    "image_to_data_url",
    "load_image",
    "load_sample_photo",
    "sample_photos",
]

SAMPLE_PHOTOS_DIR = env.DATA_DIR / "photos"
"""Folder with the small set of photos that ship with the course (package data when installed)."""

DEFAULT_MAX_PIXELS = 40_000_000
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
WHITE = (255, 255, 255, 255)

_DATA_URL_RE = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)(?P<params>(;[\w.+-]+=[^;,]*)*)"
    r";base64,(?P<payload>.*)$",
    re.DOTALL | re.IGNORECASE,
)
_MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
_PIL_LIMIT_LOCK = threading.Lock()


class ImageError(ValueError):
    """An image could not be loaded; the message says why and how to fix it.

    >>> try:
    ...     load_image(b"")
    ... except ImageError as err:
    ...     print(err)
    image bytes: file is empty (0 bytes): re-download or re-export the image
    """


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Reading the source into bytes
# --------------------------------------------------------------------------------------------


def _check_options(max_side: int | None, max_pixels: int, min_side: int) -> None:
    """Reject nonsensical size limits early, with a clear message."""
    if max_side is not None and max_side < 1:
        raise ImageError(f"max_side must be a positive number of pixels or None, got {max_side}")
    if max_pixels < 1:
        raise ImageError(f"max_pixels must be a positive number of pixels, got {max_pixels}")
    if min_side < 1:
        raise ImageError(f"min_side must be at least 1 pixel, got {min_side}")
    if max_side is not None and min_side > max_side:
        raise ImageError(
            f"min_side={min_side} is larger than max_side={max_side}; no image could satisfy both"
        )


def _read_source(source: Any) -> tuple[bytes, str]:
    """Turn any accepted non-image source into ``(encoded bytes, label for messages)``."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "image bytes"
    if isinstance(source, str):
        return _read_string(source)
    if isinstance(source, os.PathLike):
        return _read_path(Path(source))
    if isinstance(source, Mapping):
        return _read_upload_entry(source)
    if isinstance(source, (tuple, list)):
        if not source:
            raise ImageError(
                "no file uploaded yet: click the Upload button and choose an image, "
                "then run this cell again"
            )
        return _read_source(source[0])
    if hasattr(source, "read"):
        return _read_file_object(source)
    raise ImageError(
        f"cannot load an image from a {type(source).__name__}: pass a file path, "
        "bytes, a file opened with 'rb', a PIL image, a numpy array, a FileUpload "
        "value or a data:image/... URL"
    )


def _read_string(text: str) -> tuple[bytes, str]:
    """A string is a data URL, a (refused) web URL or a file path."""
    stripped = text.strip()
    if stripped[:5].lower() == "data:":
        return _decode_data_url(stripped), "data URL"
    if re.match(r"^(https?|ftp)://", stripped, re.IGNORECASE):
        raise ImageError(
            f"URLs are not fetched ({_shorten(stripped)}): download the image first "
            "(e.g. with your browser or `urllib.request.urlretrieve`) and pass the "
            "local file path"
        )
    return _read_path(Path(text).expanduser())


def _read_path(path: Path) -> tuple[bytes, str]:
    """Read a whole file, translating OS errors into messages that name the path."""
    label = str(path)
    try:
        return path.read_bytes(), label
    except FileNotFoundError:
        raise ImageError(
            f"file not found: {_shorten(label)} (current folder: {os.getcwd()}); "
            "check the spelling or use an absolute path"
        ) from None
    except IsADirectoryError:
        raise ImageError(f"{label} is a folder, not a file: pass one image inside it") from None
    except PermissionError:
        raise ImageError(
            f"permission denied reading {label}: fix its permissions or copy it somewhere readable"
        ) from None
    except OSError as err:
        raise ImageError(f"could not read {label}: {err.strerror or err}") from None


def _read_upload_entry(entry: Mapping[str, Any]) -> tuple[bytes, str]:
    """Read one ipywidgets 8 upload entry (``name``, ``type``, ``size``, ``content``...)."""
    if "content" not in entry:
        files = [v for v in entry.values() if isinstance(v, Mapping) and "content" in v]
        if files:  # ipywidgets 7 style: {filename: {"metadata": ..., "content": ...}}
            return _read_upload_entry({"name": next(iter(entry)), **files[0]})
        raise ImageError(
            "this dict is not a FileUpload entry (it has no 'content' key): pass "
            "upload.value or upload.value[0]"
        )
    content = entry["content"]
    if not isinstance(content, (bytes, bytearray, memoryview)):
        raise ImageError(
            f"upload 'content' should be bytes or a memoryview, got {type(content).__name__}"
        )
    return bytes(content), str(entry.get("name") or "uploaded file")


def _read_file_object(fp: Any) -> tuple[bytes, str]:
    """Read the rest of an open binary file object."""
    label = str(getattr(fp, "name", "file object"))
    try:
        data = fp.read()
    except (OSError, ValueError) as err:  # closed file, unreadable stream, ...
        raise ImageError(f"could not read from {label}: {err}") from None
    if isinstance(data, str):
        raise ImageError(f"{label} was opened in text mode: open it with open(path, 'rb')")
    if not data:
        raise ImageError(
            f"{label}: file is empty (0 bytes): re-download or re-export the image "
            "(if you already read from this file object, call .seek(0) first)"
        )
    return bytes(data), label


def _decode_data_url(url: str) -> bytes:
    """Strictly parse ``data:image/<type>[;param=value];base64,<payload>`` into bytes."""
    match = _DATA_URL_RE.match(url.strip())
    if match is None:
        raise ImageError(
            f"malformed data URL ({_shorten(url, 40)}): expected "
            "'data:image/png;base64,<base64 data>'"
        )
    mime = match["mime"].lower()
    if not mime.startswith("image/"):
        raise ImageError(f"data URL holds {mime!r}, not an image: expected 'data:image/...'")
    payload = re.sub(r"\s+", "", match["payload"])
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError(
            "data URL has invalid base64 data (bad characters or wrong padding): "
            "re-encode the image, e.g. with image_to_data_url"
        ) from None
    if not data:
        raise ImageError("data URL is empty (0 bytes of image data): re-encode the image")
    return data


def _array_to_image(arr: np.ndarray) -> Image.Image:
    """Convert an HxW / HxWx1 / HxWx3 / HxWx4 array (uint8, bool, uint16 or 0-1 float)."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageError(
            f"array has shape {arr.shape}: expected (height, width), "
            "(height, width, 3) or (height, width, 4)"
        )
    if arr.size == 0:
        raise ImageError(f"array has shape {arr.shape} with no pixels")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16 and arr.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(arr))  # mode I;16, scaled in _to_rgb
    elif np.issubdtype(arr.dtype, np.floating):
        if not (np.nanmin(arr) >= 0 and np.nanmax(arr) <= 1):
            raise ImageError(
                "float array values must lie in 0..1 (as plt.imread returns); "
                "for 0..255 data use arr.astype(np.uint8)"
            )
        arr = np.round(np.nan_to_num(arr) * 255).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ImageError(
            f"array dtype {arr.dtype} is not supported: convert it with "
            "arr.astype(np.uint8) (values 0..255) first"
        )
    return Image.fromarray(np.ascontiguousarray(arr))


# --------------------------------------------------------------------------------------------
# Decoding and normalising
# --------------------------------------------------------------------------------------------


@contextmanager
def _bomb_guard(max_pixels: int) -> Iterator[None]:
    """Make Pillow's decompression-bomb warning an error, unless the caller allows more pixels.

    If ``max_pixels`` is above Pillow's own hard limit (2 x ``Image.MAX_IMAGE_PIXELS``) that
    limit is lifted for this call only and restored afterwards; our own check still applies.
    """
    pil_limit = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        if pil_limit is None or max_pixels <= pil_limit:
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
            return
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        if max_pixels <= 2 * pil_limit:
            yield
            return
        with _PIL_LIMIT_LOCK:
            Image.MAX_IMAGE_PIXELS = max_pixels
            try:
                yield
            finally:
                Image.MAX_IMAGE_PIXELS = pil_limit


def _decode(data: bytes, label: str, max_pixels: int) -> Image.Image:
    """Open encoded bytes, check the header's pixel count, then decode all pixel data."""
    if not data:
        raise ImageError(f"{label}: file is empty (0 bytes): re-download or re-export the image")
    with _bomb_guard(max_pixels):
        try:
            image = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise _bomb_error(label, _pixels_in_message(err), max_pixels) from None
        except Exception:  # UnidentifiedImageError, broken header, ...
            raise ImageError(f"{label}: {_describe_unreadable(data)}") from None
        _check_pixel_count(image, label, max_pixels)
        _load_pixels(image, label, max_pixels)
    return image


def _load_pixels(image: Image.Image, label: str, max_pixels: int) -> None:
    """Call ``image.load()`` so that truncated or corrupt data fails here, not later."""
    try:
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise _bomb_error(label, _pixels_in_message(err), max_pixels) from None
    except MemoryError:
        raise ImageError(
            f"{label}: ran out of memory decoding a {image.width}x{image.height} "
            "image: use a smaller image or lower max_pixels"
        ) from None
    except Exception as err:  # OSError, SyntaxError, zlib.error, ... from deep in the decoder
        raise ImageError(
            f"{label}: image is truncated or corrupt ({err}): the file was cut "
            "short or damaged; re-download it or re-save it from an image editor"
        ) from None


def _check_pixel_count(image: Image.Image, label: str, max_pixels: int) -> None:
    """Refuse images whose header claims more than ``max_pixels`` pixels."""
    pixels = image.width * image.height
    if pixels > max_pixels:
        raise _bomb_error(label, pixels, max_pixels)
    if pixels == 0:
        raise ImageError(
            f"{label}: image is {image.width}x{image.height} pixels, i.e. empty: re-export it"
        )


def _bomb_error(label: str, pixels: int | None, max_pixels: int) -> ImageError:
    """Build the decompression-bomb message (``pixels`` may be unknown)."""
    what = f"image has {pixels:,} pixels which exceeds" if pixels else "image exceeds"
    return ImageError(
        f"{label}: {what} the safety limit of {max_pixels:,} pixels (possible "
        f"decompression bomb); pass max_pixels=... if you trust it"
    )


def _pixels_in_message(err: Exception) -> int | None:
    """Pull the pixel count out of Pillow's 'Image size (N pixels) exceeds...' message."""
    match = re.search(r"\((\d+) pixels\)", str(err))
    return int(match.group(1)) if match else None


def _normalize(
    image: Image.Image, label: str, max_side: int | None, max_pixels: int, min_side: int
) -> Image.Image:
    """Bomb check, load, EXIF-rotate, reject tiny images, convert to RGB, cap the size."""
    with _bomb_guard(max_pixels):
        _check_pixel_count(image, label, max_pixels)
        _load_pixels(image, label, max_pixels)
    image = _exif_upright(image)
    if min(image.size) < min_side:
        raise ImageError(
            f"{label}: image is {image.width}x{image.height} pixels, smaller than "
            f"min_side={min_side}: use a larger image or lower min_side"
        )
    try:
        rgb = _to_rgb(image)
    except (ValueError, OSError) as err:
        raise ImageError(
            f"{label}: cannot convert colour mode {image.mode!r} to RGB ({err}): "
            "re-save the image as an 8-bit RGB PNG or JPEG"
        ) from None
    rgb = _cap_size(rgb, max_side)
    return rgb.copy() if rgb is image else rgb


def _exif_upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag (a copy; broken EXIF data is ignored)."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # corrupt EXIF must not make a viewable image unusable
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, compositing transparency onto white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_high_bit_depth_to_uint8(image), mode="L").convert("RGB")
    if mode in ("La", "RGBa"):  # premultiplied alpha: un-premultiply first
        image = image.convert(mode.upper())
    if _has_transparency(image):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE)
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # P, L, 1, CMYK, YCbCr, LAB, HSV, RGBX, ...


def _has_transparency(image: Image.Image) -> bool:
    """RGBA, LA, PA, an RGBA palette, or P / L / RGB with a transparency key (tRNS)."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        return True
    return image.mode == "P" and image.palette is not None and image.palette.mode == "RGBA"


def _high_bit_depth_to_uint8(image: Image.Image) -> np.ndarray:
    """Scale 16-bit / 32-bit / float greyscale to 0..255 without clipping.

    Rules: ``I;16*`` and ``I`` with values in 0..65535 are 16-bit, so ``value / 257``
    (65535 -> 255, 32768 -> 128) -- unless the maximum is <= 255, in which case the data is
    8-bit stored in a wider container and kept as is. ``F`` in 0..1 is multiplied by 255 and
    ``F`` in 0..255 kept. Anything else (negative values, > 65535) is min-max rescaled.
    """
    values = np.nan_to_num(np.asarray(image, dtype=np.float64))
    low, high = float(values.min()), float(values.max())
    if image.mode == "F" and low >= 0 and high <= 1:
        values = values * 255
    elif low >= 0 and high <= 255:
        pass
    elif low >= 0 and high <= 65535 and image.mode != "F":
        values = values / 257
    else:
        values = (values - low) * (255 / (high - low))
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def _cap_size(image: Image.Image, max_side: int | None) -> Image.Image:
    """Downscale so the longer side is at most ``max_side`` (LANCZOS, aspect ratio kept)."""
    if max_side is None or max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


# --------------------------------------------------------------------------------------------
# Explaining files that are not images
# --------------------------------------------------------------------------------------------

_IMAGE_SIGNATURES = [
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
]

_OTHER_SIGNATURES = [
    (b"%PDF", "a PDF document (export the page as PNG or take a screenshot)"),
    (b"PK\x03\x04", "a ZIP archive or Office document (unzip it and pick the image file)"),
    (b"\x1f\x8b", "a gzip-compressed file (decompress it first)"),
    (b"Rar!", "a RAR archive (extract the image file first)"),
]


def _describe_unreadable(data: bytes) -> str:
    """Explain, from the first bytes, why Pillow could not identify ``data``."""
    head = data[:512]
    for magic, fmt in _IMAGE_SIGNATURES:
        if head.startswith(magic):
            return (
                f"the data starts like a {fmt} image but is truncated or corrupt: "
                "re-download it or re-save it from an image editor"
            )
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return (
            "the data starts like a WEBP image but is truncated or corrupt: re-download it "
            "or re-save it from an image editor"
        )
    if head[4:8] == b"ftyp":
        brand = head[8:12].decode("ascii", "replace")
        if brand in ("heic", "heix", "hevc", "heim", "heis", "mif1", "msf1"):
            return (
                "not an image Pillow can read: this is a HEIC/HEIF photo (the iPhone "
                "default); convert it to JPEG or PNG, or install the pillow-heif plugin"
            )
        return (
            f"not an image: the file starts like a video/MP4-style file ({brand!r}); "
            "upload a PNG or JPEG"
        )
    for magic, kind in _OTHER_SIGNATURES:
        if head.startswith(magic):
            return f"not an image: the file starts like {kind}; upload a PNG or JPEG"
    return f"not an image: the file starts like {_describe_text(head)}; upload a PNG or JPEG"


def _describe_text(head: bytes) -> str:
    """Name text-like content (HTML, SVG, JSON, plain text) or fall back to the first bytes."""
    try:
        text = head.decode("utf-8").lstrip("\ufeff \t\r\n")
    except UnicodeDecodeError:
        text = ""
    printable = bool(text) and sum(c.isprintable() or c.isspace() for c in text) >= 0.95 * len(text)
    if not printable:
        return f"unknown binary data (first bytes: {head[:8].hex(' ')})"
    lower = text.lower()
    if lower.startswith("<svg") or (lower.startswith("<?xml") and "<svg" in lower):
        return "an SVG vector drawing, which Pillow cannot read (export it as PNG)"
    if lower.startswith(("<!doctype html", "<html")):
        return (
            "an HTML web page (you probably saved the page, not the picture: right-click "
            "the picture and choose 'Save image as')"
        )
    if lower.startswith(("{", "[")):
        return "JSON text"
    return f"text ({_shorten(text, 30)!r})"


def _shorten(text: str, limit: int = 80) -> str:
    """Cut long strings (e.g. data URLs) for error messages."""
    return text if len(text) <= limit else text[: limit - 3] + "..."

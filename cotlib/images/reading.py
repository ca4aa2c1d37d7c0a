"""Reading any accepted source (path, bytes, file object, upload entry, ``data:`` URL, numpy
array) into encoded bytes or an image, with a message naming the fix for every wrong input."""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cotlib.images.errors import ImageError, _shorten

_DATA_URL_RE = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)(?P<params>(;[\w.+-]+=[^;,]*)*)"
    r";base64,(?P<payload>.*)$",
    re.DOTALL | re.IGNORECASE,
)


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

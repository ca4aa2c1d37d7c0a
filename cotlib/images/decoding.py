"""Decoding bytes into pixels behind the decompression-bomb guard, then normalising them: EXIF
rotation, any mode to RGB (transparency onto white, 16-bit scaled), the size cap."""

from __future__ import annotations

import io
import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image, ImageOps

from cotlib.images.errors import ImageError, _describe_unreadable

WHITE = (255, 255, 255, 255)
_PIL_LIMIT_LOCK = threading.Lock()


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

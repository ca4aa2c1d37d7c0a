"""The error every image loader raises (:class:`ImageError`) and the messages that explain,
from its first bytes, why some data is not an image Pillow can read.

>>> _describe_text(b"[1, 2, 3]")
'JSON text'
"""

from __future__ import annotations


class ImageError(ValueError):
    """An image could not be loaded; the message says why and how to fix it.

    >>> from cotlib.images import load_image
    >>> try:
    ...     load_image(b"")
    ... except ImageError as err:
    ...     print(err)
    image bytes: file is empty (0 bytes): re-download or re-export the image
    """


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

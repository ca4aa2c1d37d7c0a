"""Tests for cotlib.images: every input is built in tmp_path / memory at test time."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cotlib.images import (
    SAMPLE_PHOTOS_DIR,
    ImageError,
    data_url_to_image,
    image_digest,
    image_to_data_url,
    load_image,
    load_sample_photo,
    sample_photos,
)


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    """Save an image to bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    """Write bytes to tmp_path/name and return the path."""
    path = tmp_path / name
    path.write_bytes(data)
    return path


def noisy_rgb(width: int = 64, height: int = 48) -> Image.Image:
    """A random-noise RGB image (does not compress, so truncation really cuts pixel data)."""
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature + IHDR claiming width x height (1-bit grey) + IEND, no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def assert_image_error(source, *words: str, **kwargs) -> str:
    """Load ``source`` expecting an ImageError whose message contains every word."""
    with pytest.raises(ImageError) as info:
        load_image(source, **kwargs)
    message = str(info.value)
    for word in words:
        assert word.lower() in message.lower(), message
    return message


# ---------------------------------------------------------------------------- broken inputs


def test_zero_byte_file(tmp_path):
    path = write(tmp_path, "empty.jpg", b"")
    message = assert_image_error(path, "empty", "0 bytes")
    assert "empty.jpg" in message


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(tmp_path, fmt):
    data = encode(noisy_rgb(), fmt)
    path = write(tmp_path, f"cut.{fmt.lower()}", data[: len(data) // 2])
    assert_image_error(path, "truncated")


def test_truncated_jpeg_header_is_still_called_truncated(tmp_path):
    data = encode(noisy_rgb(), "JPEG")[:20]
    assert_image_error(data, "JPEG", "truncated")


def test_random_bytes():
    data = np.random.default_rng(1).integers(0, 256, 1000, dtype=np.uint8).tobytes()
    assert_image_error(data, "not an image")


def test_text_file(tmp_path):
    path = write(tmp_path, "notes.png", b"hello, this is just some text\n")
    assert_image_error(path, "not an image", "text", "PNG or JPEG")


def test_fake_pdf(tmp_path):
    path = write(tmp_path, "paper.pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n")
    assert_image_error(path, "not an image", "PDF")


def test_html_page_saved_instead_of_image():
    assert_image_error(b"<!DOCTYPE html><html><body>", "HTML", "Save image as")


def test_missing_path(tmp_path):
    missing = tmp_path / "nope" / "cat.jpg"
    message = assert_image_error(str(missing), "not found")
    assert str(missing) in message


def test_directory_path(tmp_path):
    assert_image_error(tmp_path, "folder")


@pytest.mark.parametrize("url", ["http://example.com/cat.jpg", "HTTPS://example.com/a.png"])
def test_http_url_is_refused(url):
    assert_image_error(url, "URL", "download")


def test_unsupported_source_type():
    assert_image_error(12345, "int")


def test_errors_do_not_chain_raw_pillow_tracebacks(tmp_path):
    data = encode(noisy_rgb(), "PNG")
    with pytest.raises(ImageError) as info:
        load_image(data[: len(data) // 2])
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


# ---------------------------------------------------------------------------- colour modes


def test_rgba_transparent_becomes_white():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    img = load_image(encode(rgba))
    assert img.mode == "RGB"
    assert img.getpixel((1, 1)) == (255, 255, 255)
    assert img.getpixel((0, 0)) == (255, 0, 0)


def test_la_half_transparent_blends_with_white():
    la = Image.new("LA", (2, 2), (0, 128))
    img = load_image(encode(la))
    assert img.getpixel((0, 0)) == pytest.approx((127, 127, 127), abs=1)


def test_palette_without_transparency():
    p = Image.new("P", (3, 3))
    p.putpalette([10, 20, 30] + [0, 0, 0] * 255)
    img = load_image(encode(p))
    assert img.mode == "RGB"
    assert img.getpixel((1, 1)) == (10, 20, 30)


def test_palette_with_transparency_becomes_white():
    p = Image.new("P", (3, 3), 0)
    p.putpalette([0, 0, 0, 0, 255, 0] + [0, 0, 0] * 254)
    p.putpixel((2, 2), 1)
    img = load_image(encode(p, transparency=0))  # index 0 (black) is transparent
    assert img.getpixel((0, 0)) == (255, 255, 255)
    assert img.getpixel((2, 2)) == (0, 255, 0)


def test_cmyk_jpeg(tmp_path):
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    path = write(tmp_path, "cmyk.jpg", encode(cmyk, "JPEG", quality=95))
    img = load_image(path)
    assert img.mode == "RGB"
    assert img.getpixel((8, 8)) == pytest.approx((255, 0, 0), abs=12)


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 32768, 65535, 257 * 10]], dtype=np.uint16)
    path = write(tmp_path, "depth.png", encode(Image.fromarray(values)))
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")  # really a 16-bit PNG
    img = load_image(path)
    grey = [img.getpixel((x, 0))[0] for x in range(4)]
    assert grey[0] == 0 and grey[2] == 255 and grey[3] == 10
    assert grey[1] == pytest.approx(128, abs=1)
    assert img.getpixel((1, 0)) == (grey[1],) * 3


def test_16_bit_holding_8_bit_values_is_kept():
    values = np.array([[0, 100, 255]], dtype=np.uint16)
    img = load_image(encode(Image.fromarray(values)))
    assert [img.getpixel((x, 0))[0] for x in range(3)] == [0, 100, 255]


def test_float_mode_image():
    img = load_image(Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)))
    assert [img.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_one_bit_image():
    bw = Image.new("1", (4, 2), 0)
    bw.putpixel((0, 0), 1)
    img = load_image(encode(bw))
    assert img.getpixel((0, 0)) == (255, 255, 255)
    assert img.getpixel((1, 0)) == (0, 0, 0)


@pytest.mark.parametrize("mode", ["L", "YCbCr", "LAB", "HSV"])
def test_other_modes_become_rgb(mode):
    img = load_image(Image.new("RGB", (3, 2), (200, 30, 30)).convert(mode))
    assert img.mode == "RGB" and img.size == (3, 2)
    if mode != "L":
        assert img.getpixel((0, 0)) == pytest.approx((200, 30, 30), abs=6)


def test_exif_rotated_jpeg(tmp_path):
    photo = Image.new("RGB", (80, 40), (0, 0, 255))
    photo.paste((255, 0, 0), (0, 0, 10, 10))  # red top-left corner as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = write(tmp_path, "rotated.jpg", encode(photo, "JPEG", exif=exif, quality=95))
    img = load_image(path)
    assert img.size == (40, 80)
    red = img.getpixel((img.width - 3, 2))  # after a clockwise turn it is the top-right corner
    assert red[0] > 200 and red[2] < 60
    assert img.getpixel((2, 2))[2] > 200  # top-left is now blue


# ---------------------------------------------------------------------------- sizes and limits


def test_one_by_one_image():
    img = load_image(encode(Image.new("RGB", (1, 1), (1, 2, 3))))
    assert img.size == (1, 1) and img.getpixel((0, 0)) == (1, 2, 3)


def test_min_side_rejects_tiny_images():
    assert_image_error(Image.new("RGB", (5, 3)), "min_side", "5x3", min_side=4)


def test_max_side_downscale_keeps_aspect():
    img = load_image(encode(noisy_rgb(400, 100)), max_side=100)
    assert img.size == (100, 25)
    assert load_image(encode(noisy_rgb(400, 100)), max_side=None).size == (400, 100)


def test_bomb_header_beyond_pillow_limit_is_refused():
    data = png_header_only(100_000, 100_000)  # 10 billion pixels claimed, 45 bytes on disk
    assert len(data) < 100
    assert_image_error(data, "decompression bomb", "40,000,000", "10,000,000,000")


def test_bomb_header_between_our_limit_and_pillows_is_refused():
    message = assert_image_error(png_header_only(30_000, 2_000), "60,000,000", "max_pixels")
    assert "safety limit of 40,000,000" in message


def test_pillow_bomb_warning_becomes_an_error():
    # 120M pixels: above Pillow's warning threshold (~89M) but below its hard limit (~179M)
    assert_image_error(png_header_only(12_000, 10_000), "120,000,000", "decompression bomb")


def test_tiny_max_pixels_with_normal_image():
    assert_image_error(encode(noisy_rgb(64, 48)), "3,072", "limit of 1,000", max_pixels=1000)


def test_trusted_max_pixels_lifts_pillow_limit_only_temporarily():
    before = Image.MAX_IMAGE_PIXELS
    data = png_header_only(20_000, 10_000)  # 200M pixels: above Pillow's own hard limit
    with pytest.raises(ImageError, match="truncated"):  # passes the bomb checks, has no pixels
        load_image(data, max_pixels=300_000_000)
    assert Image.MAX_IMAGE_PIXELS == before


# ---------------------------------------------------------------------------- other sources


def test_bytes_bytearray_memoryview_file_object(tmp_path):
    data = encode(Image.new("RGB", (5, 4), (9, 8, 7)))
    for source in (data, bytearray(data), memoryview(data), io.BytesIO(data)):
        assert load_image(source).getpixel((0, 0)) == (9, 8, 7)
    path = write(tmp_path, "a.png", data)
    with open(path, "rb") as fp:
        assert load_image(fp).size == (5, 4)
    assert load_image(str(path)).size == load_image(path).size == (5, 4)


def test_text_mode_file_object_is_explained(tmp_path):
    path = write(tmp_path, "a.png", encode(Image.new("RGB", (2, 2))))
    with open(path, encoding="latin-1") as fp:
        assert_image_error(fp, "text mode", "rb")


def test_pil_image_is_not_mutated():
    rgba = Image.new("RGBA", (3, 3), (0, 0, 0, 0))
    img = load_image(rgba)
    assert rgba.mode == "RGBA" and img is not rgba
    rgb = Image.new("RGB", (3, 3))
    assert load_image(rgb) is not rgb


def test_numpy_arrays():
    assert load_image(np.zeros((4, 6), dtype=np.uint8)).size == (6, 4)
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    assert load_image(rgba).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(np.full((2, 2, 3), 0.5)).getpixel((0, 0)) == (128, 128, 128)
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((2, 2, 5), dtype=np.uint8))
    with pytest.raises(ImageError, match="dtype"):
        load_image(np.zeros((2, 2), dtype=np.int64))


def test_ipywidgets_upload_value():
    ipywidgets = pytest.importorskip("ipywidgets")
    data = encode(Image.new("RGB", (7, 3), (0, 128, 0)))
    upload = ipywidgets.FileUpload()
    entry = {
        "name": "a.png",
        "type": "image/png",
        "size": len(data),
        "last_modified": 0,
        "content": memoryview(data),
    }
    upload.set_state({"value": [entry]})
    assert isinstance(upload.value, tuple)
    img = load_image(upload.value)
    assert img.size == (7, 3) and img.getpixel((0, 0)) == (0, 128, 0)
    assert load_image(upload.value[0]).size == (7, 3)


def test_empty_upload():
    ipywidgets = pytest.importorskip("ipywidgets")
    assert_image_error(ipywidgets.FileUpload().value, "no file uploaded")


def test_upload_of_a_non_image_names_the_file():
    entry = {"name": "essay.txt", "type": "text/plain", "size": 5, "content": memoryview(b"hello")}
    message = assert_image_error((entry,), "not an image")
    assert message.startswith("essay.txt")


# ---------------------------------------------------------------------------- data URLs, digests


def test_data_url_round_trip():
    original = noisy_rgb(20, 10)
    url = image_to_data_url(original)
    assert url.startswith("data:image/png;base64,")
    assert data_url_to_image(url).tobytes() == original.tobytes()
    assert load_image(url).tobytes() == original.tobytes()
    jpeg_url = image_to_data_url(Image.new("RGBA", (4, 4), (0, 0, 0, 0)), format="jpeg")
    assert jpeg_url.startswith("data:image/jpeg;base64,")
    assert data_url_to_image(jpeg_url).getpixel((0, 0)) == pytest.approx((255, 255, 255), abs=2)


@pytest.mark.parametrize(
    ("url", "word"),
    [
        ("data:image/png;base64,@@@not base64@@@", "base64"),
        ("data:image/png;base64,iVBORw0KGgo", "base64"),  # wrong padding
        ("data:text/plain;base64,aGVsbG8=", "not an image"),
        ("data:image/png,rawdata", "malformed"),
        ("data:image/png;base64,", "empty"),
        ("data:image/png;base64,aGVsbG8gd29ybGQ=", "not an image"),  # valid base64 of text
    ],
)
def test_bad_data_urls(url, word):
    with pytest.raises(ImageError, match=f"(?i){word}"):
        data_url_to_image(url)
    assert_image_error(url, word)


def test_image_digest():
    a = noisy_rgb(8, 8)
    assert image_digest(a) == image_digest(load_image(encode(a)))
    assert image_digest(a) != image_digest(a.transpose(Image.Transpose.ROTATE_90))
    assert image_digest(Image.new("RGB", (2, 8))) != image_digest(Image.new("RGB", (4, 4)))
    assert len(image_digest(a, length=64)) == 64


# ---------------------------------------------------------------------------- sample photos


def test_sample_photos_load_as_rgb():
    photos = sample_photos()
    assert len(photos) >= 3
    assert all(p.parent == SAMPLE_PHOTOS_DIR for p in photos)
    total = sum(p.stat().st_size for p in SAMPLE_PHOTOS_DIR.iterdir())
    assert total < 1_500_000
    for photo in photos:
        img = load_image(photo)
        assert img.mode == "RGB" and min(img.size) >= 100


def test_load_sample_photo_by_name():
    assert load_sample_photo().mode == "RGB"
    assert load_sample_photo("chelsea").size == load_sample_photo("chelsea.jpg").size
    with pytest.raises(ImageError, match="grace_hopper"):
        load_sample_photo("no-such-photo")


def test_licences_list_every_photo():
    licences = (SAMPLE_PHOTOS_DIR / "LICENSES.md").read_text()
    for photo in sample_photos():
        assert photo.name in licences


def test_the_package_reexports_its_names_and_keeps_modules_short():
    """cotlib.images is a package of short modules; callers keep writing ``images.X``, and the
    helpers cotlib.teacher_server.traces reaches (DEFAULT_MAX_PIXELS, _bomb_error,
    _decode_data_url) stay reachable there."""
    from cotlib import images

    folder = Path(images.__file__).parent
    lengths = {p.name: len(p.read_text().splitlines()) for p in folder.glob("*.py")}
    assert len(lengths) > 1 and max(lengths.values()) <= 600, lengths
    assert all(hasattr(images, name) for name in images.__all__)
    for name in ("DEFAULT_MAX_PIXELS", "WHITE", "PHOTO_SUFFIXES", "_bomb_error",
                 "_decode_data_url"):
        assert hasattr(images, name), name
    assert images.load_image.__module__ == "cotlib.images.loading"
    order = ["errors", "reading", "decoding", "loading"]
    for i, name in enumerate(order):
        text = (folder / f"{name}.py").read_text()
        later = [m for m in order[i + 1:] if f"cotlib.images.{m} import" in text]
        assert not later, f"{name} imports {later}"

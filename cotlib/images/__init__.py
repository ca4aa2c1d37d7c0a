"""Load images safely and turn them into plain RGB ``PIL.Image`` objects.

Everything a course notebook might hand us -- a path, raw bytes, an open file, a PIL image,
a numpy array, an ``ipywidgets.FileUpload`` value or a ``data:image/...;base64,`` URL -- goes
through :func:`load_image`, which returns a fully decoded RGB image or raises :class:`ImageError`
with a message that says what was wrong and how to fix it.

>>> img = load_sample_photo("chelsea")
>>> img.mode, max(img.size) <= 2048
('RGB', True)

The package, read in this order (each module imports only the ones above it):
:mod:`~cotlib.images.errors` (:class:`ImageError`, explaining data that is not an image),
:mod:`~cotlib.images.reading` (any source into bytes), :mod:`~cotlib.images.decoding` (the
decompression-bomb guard, modes to RGB, EXIF, the size cap), :mod:`~cotlib.images.loading`
(:func:`load_image`, ``data:`` URLs, :func:`image_digest`, the sample photos). Every public name
is re-exported here: ``from cotlib import images; images.X``.
"""

# Names outside __all__ that other modules use (teacher_server.traces: DEFAULT_MAX_PIXELS and the
# private helpers _bomb_error and _decode_data_url), kept reachable as images.X.
from cotlib.images.decoding import WHITE as WHITE
from cotlib.images.decoding import _bomb_error as _bomb_error
from cotlib.images.errors import ImageError
from cotlib.images.loading import DEFAULT_MAX_PIXELS as DEFAULT_MAX_PIXELS
from cotlib.images.loading import PHOTO_SUFFIXES as PHOTO_SUFFIXES
from cotlib.images.loading import (
    SAMPLE_PHOTOS_DIR,
    data_url_to_image,
    image_digest,
    image_to_data_url,
    load_image,
    load_sample_photo,
    sample_photos,
)
from cotlib.images.reading import _decode_data_url as _decode_data_url

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

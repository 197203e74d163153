"""The one way images are read: :func:`decode_image` gives the RGB picture a viewer shows.

Every path that reads an image file (the folder and ImageNet loaders and their folder scan, int8
calibration, COCO detection, ``--mode predict``) goes through it, so training and prediction see the
same pixels. On top of ``PIL.Image.open``:

- the EXIF orientation tag is applied (``ImageOps.exif_transpose``): phone photos come out upright
  (torchvision's ``ImageFolder`` and timm read them as stored, sideways);
- 16-bit grey (``I;16*``, also Pillow's ``I`` of 16-bit PGM/PPM) is scaled to 8 bits by its high
  byte, ``value >> 8``, where ``convert("RGB")`` clips everything above 255 to white; 16-bit RGB(A)
  PNG and TIFF already open as 8-bit high bytes in Pillow. Float (``F``) images are read as [0, 1];
- transparency (alpha, ``LA``, palette or colour-key transparency) is composited onto white, the way
  a viewer shows it, instead of dropping alpha and showing whatever colour hides under transparent
  pixels; palette, CMYK, grey and the rest become RGB by Pillow's ``convert``;
- animated files (GIF, APNG, WebP) and multi-page TIFFs give their first frame;
- an image of more than ``max_pixels`` pixels is refused before its pixels are decoded (the
  decompression-bomb guard, config key ``max_image_pixels``).

What cannot be read raises :class:`utils.errors.DataError` with one sentence naming the file;
:func:`bad_image` applies the ``bad_images`` policy (stop, or skip with one logged line).
"""
import logging
import os
import threading
from contextlib import contextmanager
from functools import lru_cache
from typing import Optional

import numpy as np

from utils.config import SCHEMA_BY_NAME
from utils.errors import DataError

__all__ = ["decode_image", "bad_image", "image_extensions", "DEFAULT_MAX_PIXELS"]

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = SCHEMA_BY_NAME["max_image_pixels"].default     # Pillow's decompression-bomb limit

BACKGROUND = (255, 255, 255)       # what transparent pixels are composited onto
# Pillow formats that identify a file but cannot decode pixels without an extra handler
_STUB_FORMATS = {"BUFR", "GRIB", "HDF5", "WMF", "MPEG"}
_GUARD_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def image_extensions() -> tuple:
    """Lower-case extensions of every format this Pillow build can decode (.jpg, .png, .webp, .tif, ...)."""
    from PIL import Image

    Image.init()
    return tuple(sorted(ext for ext, fmt in Image.registered_extensions().items()
                        if fmt in Image.OPEN and fmt not in _STUB_FORMATS))


@contextmanager
def _own_size_check():
    """Pillow's global guard off while a file is opened and decoded: decode_image checks the size itself,
    with the caller's limit and a sentence naming it. The lock keeps threads from restoring each other's
    value (processes, e.g. loader workers, each have their own)."""
    from PIL import Image

    with _GUARD_LOCK:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _check_size(path: str, size: tuple, max_pixels: Optional[int]) -> None:
    w, h = size
    if max_pixels is not None and w * h > max_pixels:
        raise DataError(f"image {path} is {w} x {h} pixels ({w * h / 1e6:.1f} megapixels), more than "
                        f"max_image_pixels = {max_pixels} (the guard against decompression bombs); raise "
                        f"max_image_pixels or set it to null if you trust the file")


def _to_8bit(img):
    """16-bit and 32-bit grey (``I;16*``, ``I``) by the high byte of 16 bits, float (``F``) as [0, 1]."""
    from PIL import Image

    if img.mode == "I" or img.mode.startswith("I;16"):
        a = np.right_shift(np.clip(np.asarray(img), 0, 65535), 8)
    elif img.mode == "F":
        a = np.clip(np.nan_to_num(np.asarray(img)), 0, 1) * 255 + 0.5
    else:
        return img
    return Image.fromarray(a.astype(np.uint8))


def _to_rgb(img):
    """RGB; transparency (alpha channel, palette alpha, a transparency key) composited onto BACKGROUND."""
    from PIL import Image

    img = _to_8bit(img)
    if img.has_transparency_data:
        rgba = img.convert("RGBA")      # Pillow's advice for palette transparency, and for LA/PA/RGBa
        img = Image.alpha_composite(Image.new("RGBA", img.size, BACKGROUND + (255,)), rgba)
    return img if img.mode == "RGB" else img.convert("RGB")


def decode_image(path, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS, *, exif_orientation: bool = True):
    """The image at ``path`` as a fully decoded RGB ``PIL.Image``, the way it looks (see the module doc).

    ``max_pixels``: refuse larger images (None: no limit). ``exif_orientation`` False keeps the stored
    orientation (for annotations made on the stored pixels). DataError (one sentence naming the file) for
    a missing, unreadable, corrupt or too large file.
    """
    from PIL import Image, ImageOps

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"image {path} does not exist; check the path")
    try:
        with _own_size_check(), Image.open(path) as f:    # at its first frame
            _check_size(path, f.size, max_pixels)
            f.load()
            # a new image either way, so closing the file does not touch it
            img = ImageOps.exif_transpose(f) if exif_orientation else f.copy()
        return _to_rgb(img)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever Pillow raises, the file cannot be used
        raise DataError(f"cannot read image {path} ({type(e).__name__}: {e}); the file is corrupt, truncated "
                        f"or not an image Pillow can decode: replace or delete it") from None


def bad_image(message: str, policy: str) -> None:
    """The ``bad_images`` policy for a file :func:`decode_image` refused with ``message``: 'error' raises it
    (with the way out), 'skip' logs one line naming the file."""
    if policy != "skip":
        raise DataError(f"{message}, or set bad_images to 'skip' to leave such files out")
    log.warning("skipped (bad_images=skip): %s", message)

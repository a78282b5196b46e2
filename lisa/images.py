"""Reading images, the one way every command and the data layer do it.

:func:`open_image` reads only the header (PIL decodes lazily), so the pixel count is checked before
any pixel is decoded (:class:`EncodedImage` keeps an upload that way until its pixels are needed);
:func:`to_rgb_array` then decodes: the EXIF orientation is applied (masks lie on what the user
sees), 16-bit images are scaled to 8 bits (``convert("RGB")`` would clip them to white), grayscale,
palette and RGBA become RGB. :func:`read_rgb` does both for a path, bytes or a file object. JPEG and
PNG pixels equal OpenCV's ``imread`` (the original data loaders' decoder).
"""

from __future__ import annotations

import hashlib
import io
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 64_000_000
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_ORIENTATION = 0x0112  # the EXIF tag


class ImageError(ValueError):
    """An image that cannot be used; the message names the file."""


class ImageTooLarge(ImageError):
    """More pixels than the limit (checked from the header, before decoding)."""


def _name(source) -> str:
    return str(source) if isinstance(source, (str, Path)) else "<uploaded image>"


def open_image(source, max_pixels: int | None = MAX_PIXELS, name: str | None = None) -> Image.Image:
    """A lazily decoded PIL image whose size is within ``max_pixels`` (None: PIL's own bomb limit).
    ``source``: a path, bytes or a binary file object. The caller closes it (``with``)."""
    name = name or _name(source)
    if isinstance(source, (str, Path)):
        if not Path(source).is_file():
            raise ImageError(f"File not found in {source}")
        fp = source
    else:
        fp = io.BytesIO(bytes(source) if isinstance(source, (bytes, bytearray, memoryview)) else source.read())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLarge(f"{name}: image too large to decode ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"{name}: cannot decode the image ({e})") from None
    w, h = img.size
    if max_pixels is not None and w * h > max_pixels:
        img.close()
        raise ImageTooLarge(f"{name}: image has {w}x{h} = {w * h} pixels, more than the limit of {max_pixels}")
    if w == 0 or h == 0:
        img.close()
        raise ImageError(f"{name}: empty ({w}x{h}) image")
    return img


def exif_orientation(img: Image.Image, header_only: bool = False) -> int:
    """The EXIF orientation (1 = upright; 5..8 swap width and height), 1 when absent or unreadable.
    ``header_only``: never decode pixels to find it (PIL loads a whole PNG to look for an eXIf chunk
    after the image data; such a rare PNG then counts as upright until it is decoded)."""
    if header_only and img.format == "PNG" and "exif" not in img.info:
        return 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # PIL warns about odd EXIF blocks; they are skipped
            value = img.getexif().get(_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block is ignored, as viewers do
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def to_rgb_array(img: Image.Image, name: str = "<image>") -> np.ndarray:
    """Decode ``img`` to an HxWx3 uint8 RGB array, upright as its EXIF orientation says."""
    try:
        # exif_transpose copies an upright image too; skip it then (one decoded copy fewer)
        upright = ImageOps.exif_transpose(img) if exif_orientation(img) != 1 else img
        if upright.mode in _SIXTEEN_BIT:
            wide = np.asarray(upright)
            if wide.dtype.itemsize != 2:  # mode "I" (32-bit): its 16-bit range
                wide = np.clip(wide, 0, 65535)
            gray = (wide >> 8).astype(np.uint8)  # the high byte, as OpenCV reduces 16-bit images
            return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
        return np.asarray(upright if upright.mode == "RGB" else upright.convert("RGB"))
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds for a broken file; all name the file here
        raise ImageError(f"{name}: cannot decode the image ({e})") from None


def read_rgb(source, max_pixels: int | None = MAX_PIXELS, name: str | None = None) -> np.ndarray:
    """A path, bytes or file object -> HxWx3 uint8 RGB array (see the module docstring)."""
    name = name or _name(source)
    with open_image(source, max_pixels, name) as img:
        return to_rgb_array(img, name)


def load_image(source, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """A path, bytes or file object -> RGB PIL image (as :func:`read_rgb`)."""
    return Image.fromarray(read_rgb(source, max_pixels))


class EncodedImage:
    """An image file's bytes whose header was read and checked (size, pixel limit); the pixels are
    decoded only by :meth:`decode`. A server queues these, so a waiting request holds its compressed
    bytes, and the model worker decodes one when its turn comes (``LisaPipeline`` accepts them)."""

    def __init__(self, data: bytes, max_pixels: int | None = MAX_PIXELS, name: str = "<uploaded image>"):
        if not data:
            raise ImageError(f"{name} is empty")
        self.data, self.max_pixels, self.name = bytes(data), max_pixels, name
        with open_image(self.data, max_pixels, name) as img:
            w, h = img.size
            if exif_orientation(img, header_only=True) in (5, 6, 7, 8):  # decoded upright, a quarter turn
                w, h = h, w
        self.shape = (h, w, 3)  # of the decoded array (set again by decode())
        self.key = "sha1:" + hashlib.sha1(self.data).hexdigest()  # the same bytes, the same image
        self.decode_seconds = 0.0

    def decode(self) -> np.ndarray:
        if not self.data:
            raise ImageError(f"{self.name}: already decoded and released")
        t0 = time.perf_counter()
        arr = read_rgb(self.data, self.max_pixels, self.name)
        self.decode_seconds = time.perf_counter() - t0
        self.shape = arr.shape
        return arr

    def release(self) -> None:
        """Drop the bytes (after the request was answered)."""
        self.data = b""

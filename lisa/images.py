"""Reading user images safely: clear errors for missing, corrupt or oversized files."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 64_000_000


class ImageError(ValueError):
    pass


def load_image(source, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """A path, bytes or file object -> RGB PIL image (grayscale and RGBA converted)."""
    name = str(source) if isinstance(source, (str, Path)) else "<uploaded image>"
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"File not found in {path}")
        opener = lambda: Image.open(path)  # noqa: E731
    else:
        data = source if isinstance(source, (bytes, bytearray)) else source.read()
        opener = lambda: Image.open(io.BytesIO(data))  # noqa: E731
    try:
        with Image.open(path) if isinstance(source, (str, Path)) else opener() as img:
            w, h = img.size
            if w * h > max_pixels:
                raise ImageError(f"{name}: image has {w}x{h} = {w * h} pixels, more than the limit of {max_pixels}")
            if w == 0 or h == 0:
                raise ImageError(f"{name}: empty image")
            return img.convert("RGB")
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name}: cannot decode the image ({e})") from e

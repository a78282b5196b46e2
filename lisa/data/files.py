"""File readers that turn every failure into a :class:`SampleProblem` naming the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from .. import images
from .problems import DataError, SampleProblem


def require_file(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SampleProblem("missing_file", path, "file not found")
    return path


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """HxWx3 uint8 RGB as every command reads images (:func:`lisa.images.read_rgb`: upright by its
    EXIF orientation, 16-bit scaled, grayscale as RGB; the pixels of OpenCV's ``imread``, which the
    original used)."""
    path = require_file(path)
    try:
        return images.read_rgb(path, max_pixels=None)
    except images.ImageError as e:
        raise SampleProblem("unreadable", path, f"cannot decode the image ({e})") from None


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(h, w) from the file header, without decoding the pixels."""
    path = require_file(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
            if images.exif_orientation(im, header_only=True) in (5, 6, 7, 8):  # read_rgb turns it a quarter
                w, h = h, w
    except Exception as e:  # PIL raises several unrelated types for broken files
        raise SampleProblem("unreadable", path, f"cannot read the image header ({e})") from None
    return h, w


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """The raw HxW index values of a single-channel or palette label PNG (PIL, not OpenCV: OpenCV
    would return the palette colours of a mode-P image instead of its indices)."""
    path = require_file(path)
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P"):
                raise SampleProblem("unreadable", path, f"expected a single-channel or palette label "
                                    f"image (mode L or P), got mode {im.mode}")
            arr = np.array(im)
    except SampleProblem:
        raise
    except Exception as e:
        raise SampleProblem("unreadable", path, f"cannot decode the label image ({e})") from None
    return arr


def _decode_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # some ReasonSeg files are cp1252
        return raw.decode("cp1252", errors="replace")


def read_json(path: str | os.PathLike):
    """Parse a JSON file (UTF-8, falling back to cp1252); problems become SampleProblem."""
    path = require_file(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise SampleProblem("unreadable", path, f"cannot read the file ({e})") from None
    try:
        return json.loads(_decode_text(raw))
    except json.JSONDecodeError as e:
        raise SampleProblem("bad_json", path, f"malformed JSON ({e})") from None


def load_json_or_fail(path: str | os.PathLike, what: str):
    """For index files a dataset cannot work without: any problem is a :class:`DataError`."""
    try:
        return read_json(path)
    except SampleProblem as p:
        raise DataError(f"{what}: {p}") from None


def sorted_files(folder: str | os.PathLike, suffix: str) -> list[str]:
    """Sorted paths of the files in ``folder`` whose names end with ``suffix`` (no recursion)."""
    folder = os.fspath(folder)
    return sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(suffix))


def require_dir(path: str | os.PathLike, what: str) -> str:
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise DataError(f"{what}: expected the folder {path}, which does not exist")
    return path

"""A bounded cache of per-image encodings (CLIP features and SAM image embedding), keyed by content."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class ImageEncoding:
    key: str
    clip_feats: torch.Tensor  # [P, H] projected features
    sam_embedding: torch.Tensor | None  # [1, C, h, w]
    resize: tuple[int, int]
    original_size: tuple[int, int]
    timings: dict
    prefix: object | None = None  # generation.PrefixCache of the prompt opening, filled on first use


def image_key(image: np.ndarray) -> str:
    h = hashlib.sha1()
    h.update(str(image.shape).encode())
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()


class EncodingCache:
    def __init__(self, max_items: int = 8):
        self.max_items = max_items
        self._items: OrderedDict[str, ImageEncoding] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> ImageEncoding | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item

    def put(self, item: ImageEncoding) -> None:
        if self.max_items <= 0:
            return
        with self._lock:
            self._items[item.key] = item
            self._items.move_to_end(item.key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

"""CLIP image features of segment crops, remembered by the crops' bytes.

The segment masks do not depend on the vocabulary (the text only enters the classification), so
the same image segmented with other class names gives byte-identical crops; their image-tower
features can be reused and only the dot products with the new text embeddings computed. Equal
bytes in, the same features out: reusing them cannot change a result.

One cache belongs to one image tower (one Predictor); it is safe to share between threads.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

import torch

DEFAULT_MAX_ENTRIES = 4096  # ViT-B/16: 2 KB per crop feature, ~8 MB, ~40 images of 100 segments


class CropFeatureCache:
    """LRU map: crop digest (bytes) -> D image-tower feature (not normalised).

    Args:
        max_entries: most features kept; 0 keeps none.
    """

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: bytes) -> torch.Tensor | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: bytes, feature: torch.Tensor) -> None:
        if self.max_entries <= 0:
            return
        with self._lock:
            self._items[key] = feature.detach()
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

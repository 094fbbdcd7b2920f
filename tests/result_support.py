"""A hand-made SegmentationResult for the tests of what the faces show and write (no model)."""
from __future__ import annotations

import numpy as np

from zegformer.inference.result import SegmentationResult, class_statistics


def block_result(names, mode="decoupled", h=24, w=32, seed=0, untrained=True, threshold=0.0,
                 original_size=None) -> SegmentationResult:
    """Random block-shaped scores (4 x 4 blocks) for `names`; every other class is "seen"."""
    rng = np.random.default_rng(seed)
    probs = np.kron(rng.random((len(names), 4, 4)), np.ones((h // 4, w // 4))).astype(np.float32)
    seen = [i % 2 == 0 for i in range(len(names))]
    label_map, stats = class_statistics(probs, list(names), seen, threshold)
    return SegmentationResult(list(names), probs, label_map, stats, mode,
                              {"text": 0.01, "backbone": 0.02, "total": 0.05},
                              "tiny (random weights)", untrained, "cpu", original_size)


def two_modes_scene():
    """(24 x 32 image, three names, decoupled and pixel results of a 48 x 64 upload)."""
    image = np.random.default_rng(1).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    names = ["cat", "tv | television", "sky"]
    return image, names, [block_result(names, "decoupled", original_size=(48, 64)),
                          block_result(names, "pixel", seed=5, original_size=(48, 64))]

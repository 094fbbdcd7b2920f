"""Another threshold for a result already computed, without running the model again.

`Predictor.predict(..., threshold=t)` takes its label map and per-class statistics from the score
maps (`map_statistics`); the result keeps those maps (`SegmentationResult.score_maps`, holding
only the small model outputs). `with_threshold(result, t)` takes the statistics from them again
with another threshold, so it returns what `predict(..., threshold=t)` would have returned for
the same image and vocabulary: the same label map and the same `ClassStat`s. A result without
score maps (pickled, or built from `probs` directly) is re-thresholded from `result.probs` with
`class_statistics`, the same numbers by the same definition.

This costs the statistics stage only (seconds for 847 classes on a CPU), not the backbone, the
decoder or CLIP.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import torch

from ..errors import ZegFormerError
from .result import SegmentationResult, class_statistics
from .statistics import map_statistics

# ScoreMaps compute their working-resolution maps on demand and release them afterwards: two
# threads re-thresholding results that share maps (the app's remembered examples) take turns.
_MAPS_LOCK = threading.Lock()


def check_threshold(threshold: float) -> float:
    """`threshold` as a float in 0..1, else a ZegFormerError saying so."""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise ZegFormerError(f"threshold must be between 0 and 1, got {threshold!r}")
    return value


def with_threshold(result: SegmentationResult, threshold: float) -> SegmentationResult:
    """`result` with its label map and class statistics taken again at `threshold`.

    Pixels whose best normalised score is below `threshold` become UNLABELED (-1); a class's
    confidence is the mean normalised score over the pixels it labels, or its peak normalised
    score when it labels none (as `Predictor.predict` defines them).

    Args:
        result: a prediction (from `Predictor.predict`, or any result with `probs`).
        threshold: in 0..1.

    Returns:
        a new SegmentationResult (the input is not changed); its timings gain "rethreshold",
        the seconds this took.

    Raises:
        ZegFormerError: a threshold outside 0..1.
    """
    value = check_threshold(threshold)
    t = time.perf_counter()
    names, seen = list(result.class_names), result.seen
    maps = result.score_maps
    if maps is not None:
        with _MAPS_LOCK, torch.inference_mode():
            try:
                label_map, stats = map_statistics(maps, names, seen, value)
            finally:
                maps.release()
    else:
        label_map, stats = class_statistics(np.asarray(result.probs), names, seen, value)
    timings = dict(result.timings)
    timings["rethreshold"] = time.perf_counter() - t
    return result.replace(label_map=label_map, classes=stats, timings=timings)

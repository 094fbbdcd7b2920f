"""Another threshold for a result already computed, without running the model again.

A threshold only decides which pixels stay unlabelled: those whose best normalised score (the
winning class's share of the sum of all classes' clipped scores) is below it. So one pass over
the score maps gives everything any threshold needs (`PixelBest`): per pixel the winning class
and its normalised score, and per class its peak normalised score anywhere (the confidence of a
class that labels no pixel). `apply_threshold` then takes milliseconds.

`pixel_best` reads the score maps the result kept (`SegmentationResult.score_maps`, which hold
only the small model outputs: one pass over all K classes, in chunks, for the sum and the
argmax, then the peaks by bounds as `predict` finds them), or `result.probs` for a result
without them (pickled, or built from `probs`; a second pass for the peaks). The numbers are
`class_statistics`' definitions, computed the same way (float32, class order): the label map
equals `predict(..., threshold=t)`'s bit for bit, confidences and areas agree to float rounding
(the predictor's `map_statistics` matches `class_statistics` to 1e-6).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from ..errors import ZegFormerError
from .peaks import PeakFinder
from .result import UNLABELED, ClassStat, SegmentationResult
from .score_maps import ScoreMaps
from .statistics import argmax_update, nonnegative_sum

CHUNK = 8  # classes resized at once (larger chunks cost more in fresh memory than they save)
# ScoreMaps compute their working-resolution maps on demand and release them afterwards: two
# threads reading results that share maps (the app's remembered examples) take turns.
_MAPS_LOCK = threading.Lock()


@dataclass(frozen=True)
class PixelBest:
    """What any threshold needs from one result's scores.

    Attributes:
        label: H x W int32, the class with the highest score (first on ties), threshold 0.
        best: H x W float32, that class's normalised score.
        peaks: K float32, each class's highest normalised score over the image.
    """

    label: np.ndarray
    best: np.ndarray
    peaks: np.ndarray


def check_threshold(threshold: float) -> float:
    """`threshold` as a float in 0..1, else a ZegFormerError saying so."""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise ZegFormerError(f"threshold must be between 0 and 1, got {threshold!r}")
    return value


def _score_chunks(result: SegmentationResult) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(class indices, their float32 scores K' x H x W) in chunks of CHUNK classes, in class
    order: from the result's kept score maps, else from `result.probs`."""
    maps = result.score_maps
    if maps is not None:
        index = torch.arange(maps.num_classes, device=maps.seen.device)
        for part, vals in maps.chunks(index, CHUNK):
            yield part, vals.float()
        return
    probs = np.asarray(result.probs, dtype=np.float32)
    probs = torch.from_numpy(probs if probs.flags.writeable else probs.copy())
    for start in range(0, probs.shape[0], CHUNK):
        part = torch.arange(start, min(start + CHUNK, probs.shape[0]))
        yield part, probs[start:start + CHUNK]


def _pixel_best(result: SegmentationResult) -> PixelBest:
    """The scores read in torch, with `class_statistics`' float32 operations in its order (so
    its bits): the sum of clipped scores and the first argmax in one pass; then each class's
    peak normalised score, by bounds from kept score maps (`_bounded_peaks`) or a second pass."""
    k = len(result.class_names)
    total = best_raw = label = None
    for part, vals in _score_chunks(result):  # pass 1: sum of clipped scores, argmax
        if total is None:
            total = torch.zeros(vals.shape[1:], dtype=torch.float32, device=vals.device)
        for row in vals.clamp(min=0.0):  # in class order, as numpy's sum over classes adds them
            total += row
        best_raw, label = argmax_update(best_raw, label, vals, part)
    assert total is not None and best_raw is not None and label is not None
    has_sum = total > 0
    denom = total.clamp(min=1e-12)
    uniform = torch.tensor(1.0 / k, dtype=torch.float32, device=total.device)
    best = torch.where(has_sum, best_raw.clamp(min=0.0) / denom, uniform)
    peaks = None if result.score_maps is None else _bounded_peaks(result.score_maps, total,
                                                                    has_sum)
    if peaks is None:
        peaks = torch.empty(k, dtype=torch.float32, device=total.device)
        for part, vals in _score_chunks(result):  # pass 2: each class's peak normalised score
            norm = torch.where(has_sum, vals.clamp(min=0.0) / denom, uniform)
            peaks[part.to(peaks.device)] = norm.flatten(1).amax(dim=1)
    return PixelBest(label=label.cpu().numpy().astype(np.int32),
                     best=best.cpu().numpy().astype(np.float32), peaks=peaks.cpu().numpy())


def _bounded_peaks(maps: ScoreMaps, total: torch.Tensor,
                   has_sum: torch.Tensor) -> torch.Tensor | None:
    """K float32 peak normalised scores without resizing every class again: bounded cell by
    cell and evaluated only where a class can peak (`peaks.PeakFinder`, as `predict` computes
    the peaks of absent classes; equal to the resized pass to float rounding). None when the
    maps are not smaller than the image or hold NaN / infinities: then the resized pass runs."""
    if not maps.upsampled:
        return None
    low = maps.low()
    if not bool(torch.isfinite(low).all()):
        return None
    linear = nonnegative_sum(low, maps.known_nonnegative())  # (no offsets on those classes)
    finder = PeakFinder(maps, linear, total.double(), ~has_sum)
    return finder.peaks(torch.ones(low.shape[0], dtype=torch.bool, device=low.device)).float()


def pixel_best(result: SegmentationResult) -> PixelBest:
    """The `PixelBest` of `result` (from its kept score maps, else from `probs`)."""
    maps = result.score_maps
    if maps is None:
        with torch.inference_mode():
            return _pixel_best(result)
    with _MAPS_LOCK, torch.inference_mode():
        try:
            return _pixel_best(result)
        finally:
            maps.release()


def apply_threshold(result: SegmentationResult, best: PixelBest, threshold: float
                    ) -> SegmentationResult:
    """`result` with the label map and class statistics of `threshold`, from `best`.

    Pixels whose best normalised score is below `threshold` are UNLABELED (-1); a class's
    confidence is its mean normalised score over the pixels it labels, or its peak when it
    labels none (as `Predictor.predict` defines them). Returns a new result (timings gain
    "rethreshold"); the input is not changed.

    Raises:
        ZegFormerError: a threshold outside 0..1.
    """
    value = check_threshold(threshold)
    t = time.perf_counter()
    k = len(result.class_names)
    label_map = best.label.copy()
    if value > 0:
        label_map[best.best < value] = UNLABELED
    labelled = label_map >= 0
    counts = np.bincount(label_map[labelled], minlength=k)
    sums = np.bincount(label_map[labelled], weights=best.best[labelled], minlength=k)
    n_pix = label_map.size
    stats = []
    for c in result.classes:
        present = bool(counts[c.index] > 0)
        conf = float(sums[c.index] / counts[c.index]) if present else float(best.peaks[c.index])
        stats.append(ClassStat(index=c.index, name=c.name, seen=c.seen,
                               confidence=min(max(conf, 0.0), 1.0),
                               area_fraction=float(counts[c.index]) / n_pix, present=present))
    timings = dict(result.timings)
    timings["rethreshold"] = time.perf_counter() - t
    return result.replace(label_map=label_map, classes=stats, timings=timings)


def with_threshold(result: SegmentationResult, threshold: float) -> SegmentationResult:
    """`apply_threshold(result, pixel_best(result), threshold)`: one call, one pass over the
    scores. Keep `pixel_best(result)` to try several thresholds (the app does)."""
    value = check_threshold(threshold)
    return apply_threshold(result, pixel_best(result), value)

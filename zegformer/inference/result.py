"""What a prediction returns: per-class probabilities, a label map and per-class statistics.

`SegmentationResult` is plain data (numpy arrays and Python scalars) so that the app, the CLIs and
the evaluation can use it without torch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

UNLABELED = -1  # label_map value of pixels left unlabelled by a confidence threshold


@dataclass(frozen=True)
class ClassStat:
    """Statistics of one requested class in one prediction."""

    index: int  # position in SegmentationResult.class_names
    name: str  # the class name as requested (synonyms joined with " | ")
    seen: bool  # True when the name is in the checkpoint's training vocabulary
    confidence: float  # mean normalised score over the pixels labelled with this class
    #   (or, when it labels none, its highest normalised score anywhere), in [0, 1]
    area_fraction: float  # share of the image's pixels labelled with this class, in [0, 1]
    present: bool  # True when at least one pixel is labelled with this class

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "split": "seen" if self.seen else "novel",
            "confidence": self.confidence,
            "area_fraction": self.area_fraction,
            "present": self.present,
        }


@dataclass
class SegmentationResult:
    """Output of `Predictor.predict` for one image and one vocabulary.

    Attributes:
        class_names: K class names, in the order of `probs`' first axis.
        probs: float32 array K x H x W at the input image's size. In decoupled mode these are exactly
            the numbers the official model returns as `sem_seg` (not normalised; seen classes may
            carry the calibration offset); in pixel mode, per-pixel class probabilities.
            May be given as a function returning that array: it is then computed on first access
            (`Predictor.predict` does this, so that large vocabularies cost K x H x W floats
            only for callers that read `probs`) and kept.
        label_map: int32 array H x W of class indices into `class_names`; `UNLABELED` (-1) where the
            normalised score of the best class is below the threshold given to `predict`.
        classes: one `ClassStat` per class, in `class_names` order.
        mode: "decoupled" or "pixel".
        timings: seconds per stage (e.g. "backbone", "pixel_decoder", "transformer", "text",
            "clip_crops", "merge", "total").
        model: a short description of the model (config name, weights).
        untrained: True when the weights are random (tiny test model): outputs are meaningless.
        device: the torch device the model ran on, e.g. "cpu" or "cuda:0".
        original_size: (H, W) of the image as given; differs from label_map's shape when a
            large image was downscaled before prediction.
        score_maps: the `ScoreMaps` the statistics were taken from (working-resolution maps
            released), kept so that `zegformer.inference.rethreshold.with_threshold` can apply
            another threshold without running the model; None for results made otherwise, and
            after pickling (a pickled result carries `probs` instead).
        tta_passes: forward passes averaged into `probs`: 1 without test-time augmentation,
            len(TEST.AUG.MIN_SIZES) x (2 with FLIP) with it.
        fast: True when the fast approximation made `probs` (`Predictor.predict(fast=True)`):
            close to, but not, the official numbers.
    """

    class_names: list[str]
    probs: np.ndarray = field(repr=False)  # a property (see below): computed on first access
    label_map: np.ndarray
    classes: list[ClassStat]
    mode: str
    timings: dict[str, float] = field(default_factory=dict)
    model: str = ""
    untrained: bool = False
    device: str = "cpu"
    original_size: tuple[int, int] | None = None  # (H, W) before downscaling to max_side
    score_maps: Any = field(default=None, repr=False, compare=False)  # see the docstring
    image: Any = field(default=None, repr=False)  # the decoded input, H x W x 3 uint8 RGB
    tta_passes: int = 1  # forward passes averaged (test-time augmentation when > 1)
    fast: bool = False  # True: the fast approximation (`zegformer.inference.fast`), not the
    #   official numbers

    def __getstate__(self) -> dict[str, Any]:
        """Pickling computes `probs` first (its source is a closure over tensors)."""
        state = dict(self.__dict__)
        state["_probs"], state["_probs_source"] = self.probs, None
        state["score_maps"] = None  # closures over tensors; `probs` says the same
        return state

    def replace(self, **changes: Any) -> "SegmentationResult":
        """`dataclasses.replace` that leaves `probs` uncomputed (shared) unless given."""
        if "probs" not in changes:
            changes["probs"] = self._probs if self._probs is not None else self._probs_source
        return dataclasses.replace(self, **changes)

    @property
    def probs_computed(self) -> bool:
        """True once `probs` is an array in memory (given, or computed by an earlier access)."""
        return self._probs is not None

    @property
    def seen(self) -> list[bool]:
        """Per class: True for seen (training-vocabulary) classes, False for novel ones."""
        return [c.seen for c in self.classes]

    @property
    def present_classes(self) -> list[ClassStat]:
        """Classes that label at least one pixel, largest area first."""
        return sorted((c for c in self.classes if c.present), key=lambda c: -c.area_fraction)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable summary (no arrays): classes, mode, timings, model, image size."""
        h, w = self.label_map.shape
        return {
            "mode": self.mode,
            "model": self.model,
            "untrained": self.untrained,
            "device": self.device,
            "image_size": {"height": int(h), "width": int(w)},
            "original_size": list(self.original_size) if self.original_size else [int(h), int(w)],
            "classes": [c.to_dict() for c in self.classes],
            "unlabeled_fraction": float((self.label_map == UNLABELED).mean()),
            "timings": {k: round(float(v), 4) for k, v in self.timings.items()},
            "tta_passes": int(self.tta_passes),
            "fast": bool(self.fast),
        }


def _get_probs(self: SegmentationResult) -> np.ndarray:
    if self._probs is None:
        self._probs = self._probs_source()
        self._probs_source = None
    return self._probs


def _set_probs(self: SegmentationResult, value: np.ndarray | Callable[[], np.ndarray]) -> None:
    if callable(value):
        self._probs, self._probs_source = None, value
    else:
        self._probs, self._probs_source = value, None


# `probs` is a dataclass field (so the constructor and `dataclasses.replace` take it) stored through
# a property, so that it may be computed on first access.
SegmentationResult.probs = property(_get_probs, _set_probs)  # type: ignore[assignment]


def class_statistics(
    probs: np.ndarray, class_names: list[str], seen: list[bool], threshold: float = 0.0
) -> tuple[np.ndarray, list[ClassStat]]:
    """Label map and per-class statistics from K x H x W scores.

    Scores are normalised per pixel to sum to one over the K classes (negative scores, which the
    seen-class calibration can produce, are clipped to zero first), so a confidence is the share of
    the pixel's total score that its label received.

    Args:
        probs: float array K x H x W (K >= 1).
        class_names: K names.
        seen: K flags.
        threshold: pixels whose best normalised score is below this stay `UNLABELED`.

    Returns:
        (label_map int32 H x W, list of K ClassStat).
    """
    k = probs.shape[0]
    pos = np.clip(probs.astype(np.float32, copy=False), 0.0, None)
    total = pos.sum(axis=0, keepdims=True)
    norm = np.where(total > 0, pos / np.maximum(total, 1e-12), 1.0 / k)  # K x H x W
    label_map = probs.argmax(axis=0).astype(np.int32)
    best = np.take_along_axis(norm, label_map[None], axis=0)[0]
    if threshold > 0:
        label_map[best < threshold] = UNLABELED
    n_pix = label_map.size
    labelled = label_map >= 0
    counts = np.bincount(label_map[labelled], minlength=k)
    best_sums = np.bincount(label_map[labelled], weights=best[labelled], minlength=k)
    peaks = norm.reshape(k, -1).max(axis=1)
    stats = []
    for i in range(k):
        present = bool(counts[i] > 0)
        conf = float(best_sums[i] / counts[i]) if present else float(peaks[i])
        stats.append(
            ClassStat(
                index=i,
                name=class_names[i],
                seen=bool(seen[i]),
                confidence=min(max(conf, 0.0), 1.0),
                area_fraction=float(counts[i]) / n_pix,
                present=present,
            )
        )
    return label_map, stats

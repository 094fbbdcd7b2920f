"""The scoring modes one request of the app or the demo CLI runs, and running them.

"both" is a face's word, not the predictor's: it means decoupled, then pixel-level, on the same
image. `expand_modes` is the one place that says so; `run_modes` is the one place that runs a
request's modes. Every other input check belongs to `Predictor.predict`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import ZegFormerError
from ..inference.image import load_image
from ..inference.result import SegmentationResult
from ..viz.export import MODE_TITLES

if TYPE_CHECKING:
    from ..inference.predictor import ProgressFn

BOTH = ("decoupled", "pixel")  # what "both" runs, in this order
MODE_CHOICES = [  # (label shown in the UI, value passed to the API)
    (MODE_TITLES["decoupled"], "decoupled"),
    (MODE_TITLES["pixel"], "pixel"),
    ("Both side by side", "both"),
]


def expand_modes(mode: str) -> tuple[str, ...]:
    """The predictor modes a face's mode stands for: "both" -> ("decoupled", "pixel").

    Whether the loaded checkpoint supports them is the predictor's check (a per-pixel baseline
    checkpoint refuses "decoupled").

    Raises:
        ZegFormerError: an unknown mode.
    """
    if mode == "both":
        return BOTH
    if mode in BOTH:
        return (mode,)
    values = [v for _, v in MODE_CHOICES]
    raise ZegFormerError(f"unknown mode {mode!r}; use one of {', '.join(values)}")


def run_modes(predictor: Any, image: Any, classes: str | Sequence[str], modes: Sequence[str],
              threshold: float = 0.0, progress: ProgressFn | None = None, tta: bool = False,
              fast: bool = False) -> tuple[np.ndarray, list[SegmentationResult]]:
    """One `predictor.predict` per mode on the same pixels; the faces pass their input through.

    The input goes to the predictor as given: it decodes it (once: later modes and the pictures
    drawn afterwards reuse the first result's decoded `image`) and checks the class list and the
    threshold. Progress fractions are spread over the modes.

    Args:
        predictor: a `zegformer.Predictor` (anything with its `predict`).
        image: path, PIL image or array, as the user gave it.
        classes: the class list as typed ("a, b | c") or a list of names.
        modes: predictor modes, e.g. `expand_modes("both")`.
        threshold: pixels less confident than this stay unlabelled.
        progress: optional callback(fraction, description).
        tta: test-time augmentation (TEST.AUG: sizes x flips, averaged) in every mode.
        fast: the fast approximation (`Predictor.predict(fast=True)`; results say `fast`).

    Returns:
        (the decoded H x W x 3 uint8 image at its full size, one result per mode).

    Raises:
        ZegFormerError (ImageError, VocabularyError, ...): the predictor's message.
    """
    results: list[SegmentationResult] = []
    for i, mode in enumerate(modes):
        report = None
        if progress is not None:
            def report(f: float, desc: str, i: int = i, mode: str = mode) -> None:
                progress((i + f) / len(modes), f"{MODE_TITLES.get(mode, mode)}: {desc}")
        source = results[0].image if results and results[0].image is not None else image
        extra: dict[str, Any] = {"tta": True} if tta else {}  # stand-ins in tests need not
        if fast:  # know the keywords
            extra["fast"] = True
        results.append(predictor.predict(source, classes, mode=mode, threshold=threshold,
                                         progress=report, **extra))
    rgb = results[0].image if results[0].image is not None else load_image(image)
    return rgb, results

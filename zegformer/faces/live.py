"""Live controls: the last result of a page session, kept (in a gr.State), drawn again when the
visitor moves the threshold or the opacity slider or types in the table's filter, without
running the model.

The threshold is applied by `zegformer.inference.rethreshold`: the first threshold change reads
the score maps the result kept once (`pixel_best`: each pixel's winning class and normalised
score, each class's peak), every later one takes milliseconds (`apply_threshold`, the same label
map as a run at that threshold). The opacity only redraws. Both write fresh downloads, so that
what is shown is what is downloaded.

No Gradio here (the module imports without it).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..inference.rethreshold import PixelBest, apply_threshold, check_threshold, pixel_best
from ..inference.result import SegmentationResult
from . import class_table
from .tables import Response, respond

REDRAWN = "model did not run"  # what a redrawn status line says


@dataclass
class Kept:
    """A page session's last result: what the sliders and the filter redraw from.

    Attributes:
        image: H x W x 3 uint8, the input at the results' size (the overlays' base).
        results: one result per mode, as last shown.
        threshold: the threshold `results` were made with.
        opacity: the opacity they were last drawn with.
        best: per mode, what any threshold needs (computed at the first threshold change).
    """

    image: np.ndarray = field(repr=False)
    results: list[SegmentationResult] = field(repr=False)
    threshold: float
    opacity: float
    best: list[PixelBest] | None = field(default=None, repr=False)

    @property
    def modes(self) -> list[str]:
        return [r.mode for r in self.results]


def keep(response: Response, image: Any, results: Sequence[SegmentationResult],
         threshold: float, opacity: float) -> Kept:
    """The state to keep after `response` was shown (its overlays' base image is the input at
    the results' size)."""
    base = response.overlays[0][0][0] if response.overlays else np.asarray(image)
    return Kept(image=base, results=list(results), threshold=float(threshold),
                opacity=float(opacity))


def redraw(kept: Kept, threshold: float, opacity: float, out_dir: Path, query: str = ""
           ) -> tuple[Response, Kept]:
    """`kept` at another threshold and opacity: the statistics taken again when the threshold
    changed, everything drawn and written again (to `out_dir`), the model not run.

    Returns:
        (what the page shows, the state to keep next).

    Raises:
        ZegFormerError: a threshold outside 0..1 or an opacity outside 0..1.
    """
    value = check_threshold(threshold)
    t = time.perf_counter()
    results, best = kept.results, kept.best
    if value != kept.threshold:
        best = best or [pixel_best(r) for r in results]
        results = [apply_threshold(r, b, value) for r, b in zip(results, best)]
    response = respond(kept.image, results, opacity, out_dir, threshold=value, query=query)
    seconds = time.perf_counter() - t
    response.status += (f"\n\n↻ **Redrawn from the kept result** at threshold "
                        f"{value:.2f}, opacity {float(opacity):.2f} in {seconds:.2f} s "
                        f"({REDRAWN}).")
    return response, Kept(kept.image, list(results), value, float(opacity), best)


def filtered(kept: Kept, query: str) -> class_table.PageTable:
    """The page's class table of the kept result, filtered by `query`."""
    return class_table.page_table(kept.results, query)

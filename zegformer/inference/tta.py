"""Test-time augmentation: the official `SemanticSegmentorWithTTA`, pass by pass.

What the official evaluation does when TEST.AUG.ENABLED (ZegFormer / MaskFormer
`mask_former/test_time_augmentation.py` over detectron2's `DatasetMapperTTA`):

1. The test loader has already resized the image as for a plain prediction (shortest edge to
   INPUT.MIN_SIZE_TEST, long edge capped at MAX_SIZE_TEST); the augmentations start from THAT
   image, not from the original file.
2. For every size in TEST.AUG.MIN_SIZES, in order: ResizeShortestEdge(size, TEST.AUG.MAX_SIZE)
   of it; and, when TEST.AUG.FLIP, the same resize followed by a horizontal flip. So the passes
   are [s0, s0 flipped, s1, s1 flipped, ...].
3. Each augmented image goes through the normal model forward and post-processing: padding
   cropped, scores resized straight to the ORIGINAL image size (the dataset's height / width),
   seen-class calibration subtracted: the usual `sem_seg`.
4. The `sem_seg` of a flipped pass is flipped back along the width; the maps are summed in pass
   order and divided by the number of passes. What is averaged is therefore the calibrated
   `sem_seg` scores, not label maps.

Here a pass runs the scoring mode itself on a `ScoringInputs` whose `augment` is a `TTAPass`:
the mode asks `inputs.network_image(short, max_size)` for the image it feeds the network and
gets the augmented one, while `inputs.rgb` (and so the output size) stays the original. Every
mode therefore keeps its own post-processing, and the result is its usual K x H x W map.

Pixel mode: the per-pixel baseline resizes like the official model (MIN_SIZE_TEST), so it gets
exactly the official sizes. Dense CLIP works at its own size (short side 448); its pass sizes are
the configured ones scaled by 448 / MIN_SIZE_TEST (COCO-Stuff: 224 ... 784), so that the
MIN_SIZE_TEST pass is the plain pixel-mode prediction, as in the other modes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from ..loading.settings import TTASettings
from .image import resize, shortest_edge_size

if TYPE_CHECKING:
    from .modes import ScoringInputs


@dataclass(frozen=True)
class TTAPass:
    """One augmented view: ResizeShortestEdge(min_size, max_size), then an optional h-flip."""

    min_size: int  # short side, relative to the model's usual MIN_SIZE_TEST
    max_size: int  # cap on the long side
    flip: bool  # horizontal flip after the resize

    def image(self, rgb: np.ndarray, short: int, max_size: int, reference_short: int
              ) -> np.ndarray:
        """The augmented H' x W' x 3 uint8 image a mode that normally resizes to
        (`short`, `max_size`) should see.

        Args:
            rgb: H x W x 3 uint8 RGB, the original input.
            short, max_size: the mode's usual shortest-edge resize.
            reference_short: INPUT.MIN_SIZE_TEST, the size the TTA sizes are relative to
                (for a mode with short == reference_short the sizes are used as they are).
        """
        base = resize(rgb, shortest_edge_size(*rgb.shape[:2], short, max_size))  # test loader
        scale = short / reference_short
        target = int(self.min_size * scale + 0.5)
        cap = int(self.max_size * scale + 0.5)
        out = resize(base, shortest_edge_size(*base.shape[:2], target, cap))
        return np.ascontiguousarray(out[:, ::-1]) if self.flip else out


def tta_passes(spec: TTASettings) -> list[TTAPass]:
    """The passes in the official order: every size, each followed by its flipped copy."""
    return [TTAPass(int(size), int(spec.max_size), flip)
            for size in spec.min_sizes for flip in ((False, True) if spec.flip else (False,))]


def run_tta(score: Callable[["ScoringInputs"], torch.Tensor], inputs: "ScoringInputs",
            spec: TTASettings, *, start: float = 0.15) -> torch.Tensor:
    """Mean of `score` over the passes of `spec`, flipped passes flipped back.

    Args:
        score: a scoring-mode function (ScoringInputs -> K x H x W at the input size).
        inputs: the plain (un-augmented) inputs of one image.
        spec: sizes, cap and flip (TEST.AUG).
        start: progress already reported; the passes share the rest of [start, 1] evenly.

    Returns:
        K x H x W float32 on the inputs' device. Only the running sum and the current pass are
        held in memory, never all passes at once.
    """
    passes = tta_passes(spec)
    n = len(passes)
    total: torch.Tensor | None = None
    for i, p in enumerate(passes):
        def report(fraction: float, what: str, i: int = i, p: TTAPass = p) -> None:
            flip = ", flipped" if p.flip else ""
            inputs.report(start + (1 - start) * (i + fraction) / n,
                          f"TTA pass {i + 1}/{n} ({p.min_size}{flip}): {what}")

        out = score(dataclasses.replace(inputs, augment=p, report=report)).float()
        if p.flip:
            out = out.flip(-1)  # back to the original orientation (K x H x W: width is last)
        if total is None:
            total = out.clone()  # the running sum owns its memory
        else:
            total += out
        del out
    assert total is not None
    return total / n

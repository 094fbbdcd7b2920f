"""Per-class score maps kept at the resolution they were computed at, resized on demand.

Every scoring mode ends the same way: scores K x h' x w' at its working resolution (the padded
model input, or dense CLIP's input), the padding cropped, a bilinear resize to the image size and
the seen-class calibration subtracted. `ScoreMaps` holds the maps before that last step, so that a
caller can resize only the classes it needs (`channels`) instead of all K at full size. Bilinear
resizing treats every channel on its own, so `channels(idx)` equals `full()[idx]` bit for bit.

The working-resolution maps come from a `compute` function over small model outputs (segment
probabilities and masks, or low-resolution logits); `release()` drops them and a later call
computes them again, so that a result kept in memory does not hold K x h' x w' floats.

Maps that are a product, scores = weights^T @ maps (the decoupled mode: Q segment masks weighted
by their class probabilities), can say so with `factors`. When the image is no larger than the
working resolution and there are more classes than masks, the Q masks are resized once and the
classes merged at the image size, a block of classes at a time: resizing is linear, so this is
the same sum in another order (equal to float rounding), and it reads and writes Q instead of K
maps at the working resolution. Every class's scores then come from its block of MERGE_BLOCK
classes, computed the same way whichever classes are asked for, so `channels(idx)` still equals
`full()[idx]` bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from . import scoring

MERGE_BLOCK = 64  # classes merged at once at the image size (each block reads the Q masks once)


@dataclass
class ScoreMaps:
    """Lazy K x H x W scores: `calibrate(postprocess(compute(), crop, size), seen, gamma)`.

    Attributes:
        compute: () -> K x h' x w' float scores at the working resolution (may include padding).
        crop: (h, w) valid region of those maps (the rest is padding).
        size: (H, W) output size, the input image's.
        seen: K bool on the scores' device, True for training-vocabulary classes.
        gamma: seen-class calibration subtracted after resizing (0 = none).
        nonnegative: the working-resolution maps are >= 0 (probabilities, or sums of them), so
            the final scores are >= 0 except where calibration subtracts gamma.
        factors: None, or () -> (weights Q x K, maps Q x h' x w') with
            compute() == einsum("qk,qhw->khw", weights, maps) (see the module docstring).
    """

    compute: Callable[[], torch.Tensor]
    crop: tuple[int, int]
    size: tuple[int, int]
    seen: torch.Tensor
    gamma: float = 0.0
    nonnegative: bool = False
    factors: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None
    _scores: torch.Tensor | None = field(default=None, repr=False)
    _full: torch.Tensor | None = field(default=None, repr=False)  # when resized all at once
    _resized_factors: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)
    _block: tuple[int, torch.Tensor] | None = field(default=None, repr=False)  # the last merged

    @property
    def num_classes(self) -> int:
        return int(self.seen.shape[0])

    @property
    def upsampled(self) -> bool:
        """The image has at least twice the working-resolution pixels: bounding the small maps
        then costs less than resizing every class (`zegformer.inference.statistics`)."""
        return 2 * self.crop[0] * self.crop[1] <= self.size[0] * self.size[1]

    @property
    def merged_at_image_size(self) -> bool:
        """Scores come from the Q factor maps resized to the image size, a block of classes at a
        time: there are factors (the decoupled mode gives them when K > Q) and the image is no
        larger than the working resolution."""
        return (self.factors is not None
                and self.size[0] * self.size[1] <= self.crop[0] * self.crop[1])

    def prepare(self) -> None:
        """Compute now what later calls read: the working-resolution maps, or the resized factors."""
        if self.merged_at_image_size:
            self._factors_at_image_size()
        else:
            self.scores()

    def scores(self) -> torch.Tensor:
        """K x h' x w' working-resolution maps (padding included), computed once until released."""
        if self._scores is None:
            self._scores = self.compute().float()
        return self._scores

    def low(self) -> torch.Tensor:
        """K x h x w: the working-resolution maps without padding (a view)."""
        h, w = self.crop
        return self.scores()[:, :h, :w]

    def release(self) -> None:
        """Forget the working-resolution maps (computed again when next needed)."""
        self._scores = self._full = self._resized_factors = self._block = None

    def known_nonnegative(self) -> torch.Tensor:
        """K bool: classes whose final scores are >= 0 everywhere, known without looking."""
        if not self.nonnegative:
            return torch.zeros_like(self.seen)
        return ~self.seen if self.gamma > 0 else torch.ones_like(self.seen)

    def offsets(self) -> torch.Tensor:
        """K float32: what calibration subtracts from each class after resizing."""
        gamma = torch.tensor(self.gamma if self.gamma > 0 else 0.0, dtype=torch.float32,
                             device=self.seen.device)
        return torch.where(self.seen, gamma, torch.zeros_like(gamma))

    def channels(self, index: torch.Tensor | slice) -> torch.Tensor:
        """K' x H x W final scores of the classes selected by `index` (a slice or index tensor)."""
        if self.merged_at_image_size:
            return self._merged_channels(index)
        if self._resize_together():
            if self._full is None:
                self._full = self._resize(self.scores(), self.seen)
            return self._full[index]
        scores = self.scores()[index]
        if scores.shape[0] == 3:  # see _resize_together: 4 channels, then drop the copy
            seen = self.seen[index][[0, 1, 2, 2]]
            return self._resize(torch.cat([scores, scores[-1:]]), seen)[:3]
        return self._resize(scores, self.seen[index])

    def _resize(self, scores: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        sem = scoring.postprocess(scores, self.crop, self.size)
        return scoring.calibrate(sem, seen, self.gamma)

    def _resize_together(self) -> bool:
        """True when classes resized apart could differ in the last bit from the full resize.

        On the CPU, torch resizes bilinearly with one of two kernels: a generic one, which
        computes every output value on its own (so any subset of channels gives the same bits),
        and a vectorised one whose results depend on a channel's position among the others. The
        vectorised one is taken when output height + width <= 128, or with one thread and
        exactly 3 channels. So small outputs, and K = 3, are resized all at once; and a subset
        of exactly 3 channels is resized as 4.
        """
        if self.seen.device.type != "cpu" or self.crop == self.size:
            return False
        return self.size[0] + self.size[1] <= 128 or self.num_classes == 3

    def full(self) -> torch.Tensor:
        """K x H x W final scores: exactly what the scoring mode returned before it was lazy."""
        if self._full is not None:
            return self._full
        if self.merged_at_image_size:
            return self._merged_channels(slice(0, self.num_classes))
        return self._resize(self.scores(), self.seen)

    def _factors_at_image_size(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weights Q x K float32, the Q maps cropped and resized to the image size, Q x H x W)."""
        if self._resized_factors is None:
            assert self.factors is not None
            weights, maps = self.factors()
            self._resized_factors = (weights.float(),
                                     scoring.postprocess(maps.float(), self.crop, self.size))
        return self._resized_factors

    def _merged_block(self, b: int) -> torch.Tensor:
        """K' x H x W final scores of the classes of block b (MERGE_BLOCK classes, the last fewer)."""
        if self._block is not None and self._block[0] == b:
            return self._block[1]
        weights, maps = self._factors_at_image_size()
        part = slice(b * MERGE_BLOCK, min((b + 1) * MERGE_BLOCK, self.num_classes))
        merged = torch.einsum("qk,qhw->khw", weights[:, part], maps)
        vals = scoring.calibrate(merged, self.seen[part], self.gamma)
        self._block = (b, vals)
        return vals

    def _merged_channels(self, index: torch.Tensor | slice) -> torch.Tensor:
        """`channels(index)` from the blocks that hold the classes asked for."""
        idx = torch.arange(self.num_classes, device=self.seen.device)[index]
        if idx.numel() > 1 and not bool((idx.diff() > 0).all()):  # any order, repeats
            unique, inverse = torch.unique(idx, return_inverse=True)
            return self._merged_channels(unique)[inverse]
        block_of = idx // MERGE_BLOCK
        pieces = []
        for b in torch.unique(block_of).tolist():
            vals = self._merged_block(b)
            rows = idx[block_of == b] - b * MERGE_BLOCK
            if len(rows) == vals.shape[0]:
                pieces.append(vals)
            elif int(rows[-1]) - int(rows[0]) + 1 == len(rows):  # a run: a view
                pieces.append(vals[int(rows[0]):int(rows[-1]) + 1])
            else:
                pieces.append(vals[rows])
        if not pieces:  # no classes asked for
            return torch.zeros((0, *self.size), device=self.seen.device)
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)

    def chunks(self, index: torch.Tensor,
               chunk: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(class indices, their K' x H x W scores) for `index` (ascending) in pieces of `chunk`."""
        for start in range(0, int(index.numel()), chunk):
            part = index[start:start + chunk]
            first, last = int(part[0]), int(part[-1])
            if last - first + 1 == len(part):  # a run of classes: a view instead of a copy
                yield part, self.channels(slice(first, last + 1))
            else:
                yield part, self.channels(part)

"""Peaks of absent classes: max over the image's pixels of max(score, 0) / sum, per class.

Inside one cell of 2 x 2 working-resolution values, the clipped score is at most the bilinear
interpolation of the clipped corners, and the sum is at least the bilinear interpolation of the
classes that are >= 0 everywhere, with the same weights; their ratio is then at most the largest
of the four corner ratios (a weighted mediant). Each class is evaluated pixel by pixel, with
torch's own resize weights, only in the cells whose bound beats the best value found by more than
PEAK_TOLERANCE; a class with more than MAX_CELLS such cells is resized whole.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from .score_maps import ScoreMaps

CHUNK = 32  # classes handled at once
PAIR_CHUNK = 4096  # (class, cell) pairs evaluated at once
MAX_CELLS = 512  # a class with more candidate cells is resized whole instead
PEAK_TOLERANCE = 1e-7  # cells that can raise a peak by less than this are not evaluated


def _chunks(n: int, size: int = CHUNK):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


@functools.lru_cache(maxsize=16)
def _resize_weights(n_out: int, n_in: int) -> torch.Tensor:
    """2 x n_out float32: the weight torch's bilinear resize gives, per output, to its even and
    to its odd input tap, read off torch itself (resizing 0/1 patterns multiplies by exact 0 and
    1), so that they are its float32 weights to the bit."""
    even = (torch.arange(n_in) % 2 == 0).float()
    pattern = torch.stack([even, 1 - even])[None, :, None, :]  # 1 x 2 x 1 x n_in
    return F.interpolate(pattern, size=(1, n_out), mode="bilinear", align_corners=False)[0, :, 0]


def resize_taps(n_out: int, n_in: int, device) -> tuple[torch.Tensor, ...]:
    """(i0, i1, w0, w1) per output index: the input taps of bilinear resizing (align_corners=False)
    and torch's own weights for them (w1 = 0 where both taps are the last input)."""
    src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = torch.where(i0 < n_in - 1, i0 + 1, i0)
    weights = _resize_weights(n_out, n_in) if n_out != n_in else None
    if weights is None:
        w0, w1 = torch.ones(n_out), torch.zeros(n_out)
    else:
        cols = torch.arange(n_out)
        w0 = weights[i0 % 2, cols]
        w1 = torch.where(i1 != i0, weights[i1 % 2, cols], torch.zeros(()))
    return i0.to(device), i1.to(device), w0.to(device), w1.to(device)


def _cell_pixels(i0: torch.Tensor, n_in: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Output indices whose first tap is each input index: (n_in x m, padded by repetition;
    count per input index). `i0` is non-decreasing, so each cell's outputs are contiguous."""
    count = torch.bincount(i0, minlength=n_in)
    start = torch.cumsum(count, 0) - count
    m = max(int(count.max()), 1)
    j = torch.arange(m, device=i0.device)
    pix = start[:, None] + torch.minimum(j[None], (count[:, None] - 1).clamp(min=0))
    return pix.clamp(max=max(len(i0) - 1, 0)), count


def whole_peaks(maps: ScoreMaps, index: torch.Tensor, total: torch.Tensor, zero: torch.Tensor,
                resized: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
    """Max over pixels of max(score, 0) / sum for the classes `index`, each resized whole.

    `zero` (H x W bool) marks the pixels whose sum is 0 (left out here; their value is 1/K).
    `resized`: (classes, values) chunks already resized, to use instead of resizing again.
    """
    denominator = total.clamp(min=1e-12).float()
    if bool(zero.any()):
        denominator = torch.where(zero, math.inf, denominator)  # ratio 0 there: never the peak
    peaks = torch.full((maps.num_classes,), -math.inf, dtype=torch.float64, device=total.device)
    wanted = torch.zeros(maps.num_classes, dtype=torch.bool, device=total.device)
    wanted[index] = True
    nonneg = maps.known_nonnegative()
    for part, vals in resized if resized is not None else maps.chunks(index, CHUNK):
        keep = wanted[part]
        if bool(keep.any()):
            sel = vals[keep] if not bool(keep.all()) else vals
            if not bool(nonneg[part[keep]].all()):
                sel = sel.clamp(min=0)
            peaks[part[keep]] = (sel / denominator).flatten(1).amax(1).double()
    return peaks[index]


class PeakFinder:
    """Max over output pixels of max(score, 0) / sum, per class (see the module docstring)."""

    def __init__(self, maps: ScoreMaps, linear: torch.Tensor, total: torch.Tensor,
                 zero: torch.Tensor) -> None:
        self.maps, self.total, self.zero = maps, total, zero
        self.low, self.offsets = maps.low(), maps.offsets()
        dev = total.device
        h, w = self.low.shape[1:]
        self.y0, self.y1, self.wy0, self.wy1 = resize_taps(maps.size[0], h, dev)
        self.x0, self.x1, self.wx0, self.wx1 = resize_taps(maps.size[1], w, dev)
        self.rows, row_count = _cell_pixels(self.y0, h)
        self.cols, col_count = _cell_pixels(self.x0, w)
        self.has_pixels = (row_count[:, None] > 0) & (col_count[None, :] > 0)  # h x w cells
        self.all_cells_have_pixels = bool(self.has_pixels.all())
        # A lower bound of the sum, bilinear on every cell: the classes >= 0 everywhere.
        self.denominator = linear.float()
        self.denominator_positive = bool((self.denominator > 0).all())
        self.need_offsets = bool((self.offsets != 0).any())

    def cell_bounds(self, part: torch.Tensor) -> torch.Tensor:
        """K' x h x w: per cell, the largest corner ratio (an upper bound of the ratio inside)."""
        num = self.low[part]
        if self.need_offsets:
            num = num - self.offsets[part][:, None, None]
        num = num.clamp(min=0)
        if self.denominator_positive:
            ratio = num / self.denominator
        else:
            d = self.denominator
            ratio = torch.where(num > 0, num / d.clamp(min=1e-30), torch.zeros((), device=d.device))
            ratio = torch.where((num > 0) & (d <= 0), math.inf, ratio)
        # Largest of the 2 x 2 corners (the last row / column is its own neighbour).
        rows = torch.empty_like(ratio)
        torch.maximum(ratio[:, :-1], ratio[:, 1:], out=rows[:, :-1])
        rows[:, -1] = ratio[:, -1]
        torch.maximum(rows[:, :, :-1], rows[:, :, 1:], out=ratio[:, :, :-1])
        ratio[:, :, -1] = rows[:, :, -1]
        if not self.all_cells_have_pixels:
            ratio = torch.where(self.has_pixels, ratio, -math.inf)
        return ratio

    def evaluate(self, cls: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor) -> torch.Tensor:
        """Max ratio over the output pixels of cell (cy, cx) of class cls, per pair (P)."""
        out = []
        for s in _chunks(len(cls), PAIR_CHUNK):
            c, r, q = cls[s], self.rows[cy[s]], self.cols[cx[s]]  # P, P x mr, P x mc
            cc = c[:, None, None]
            a, b = self.y0[r][:, :, None], self.y1[r][:, :, None]
            u, v = self.x0[q][:, None, :], self.x1[q][:, None, :]
            wy0, wy1 = self.wy0[r][:, :, None], self.wy1[r][:, :, None]
            wx0, wx1 = self.wx0[q][:, None, :], self.wx1[q][:, None, :]
            low = self.low
            # torch's order (rows after columns); its CPU kernel also fuses one multiply-add, so
            # about a quarter of these values differ from the resized maps in the last bit:
            # the peaks are compared to float rounding, not bit for bit.
            top = low[cc, a, u] * wx0 + low[cc, a, v] * wx1
            bottom = low[cc, b, u] * wx0 + low[cc, b, v] * wx1
            val = (top * wy0 + bottom * wy1 - self.offsets[c][:, None, None]).clamp(min=0)
            rr, qq = r[:, :, None], q[:, None, :]
            ratio = val.double() / self.total[rr, qq].clamp(min=1e-12)
            out.append(torch.where(self.zero[rr, qq], -math.inf, ratio).flatten(1).amax(1))
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)

    def peaks(self, wanted: torch.Tensor) -> torch.Tensor:
        """K float64 peaks of the classes in `wanted` (bool K); -inf elsewhere."""
        k = self.maps.num_classes
        dev = self.total.device
        peaks = torch.full((k,), -math.inf, dtype=torch.float64, device=dev)
        w = self.low.shape[2]
        whole = []
        for part in _chunks(k):
            idx = torch.arange(part.start, part.stop, device=dev)[wanted[part]]
            if not len(idx):
                continue
            ub = self.cell_bounds(idx).flatten(1)  # K' x (h * w)
            top = ub.argmax(1)
            lb = self.evaluate(idx, top // w, top % w)
            peaks[idx] = lb
            cand = ub > (lb[:, None] + PEAK_TOLERANCE).float()
            cand[torch.arange(len(idx), device=dev), top] = False
            many = cand.sum(1) > MAX_CELLS
            whole.append(idx[many])
            cand[many] = False
            pi, cell = cand.nonzero().unbind(1)
            if len(pi):
                vals = self.evaluate(idx[pi], cell // w, cell % w)
                peaks.scatter_reduce_(0, idx[pi], vals, reduce="amax")
        rest = torch.cat(whole) if whole else torch.zeros(0, dtype=torch.long, device=dev)
        if len(rest):
            peaks[rest] = whole_peaks(self.maps, rest, self.total, self.zero)
        if bool(self.zero.any()):  # where every score is <= 0 the normalised score is 1/K for all
            peaks = peaks.clamp(min=float(np.float32(1.0 / k)))
        return peaks

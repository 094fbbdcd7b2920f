"""Label map and per-class statistics from `ScoreMaps`, without all K maps at the image size.

`map_statistics(maps, ...)` returns what `class_statistics(maps.full(), ...)` returns: the label
map bit for bit, confidences and areas to float rounding (well under 1e-6). It reads the
working-resolution maps (K x h x w) twice, a few classes at a time, and resizes to the image size
only the classes that need it. Bilinear resizing makes every output value a convex combination of
the (at most 4) working-resolution values it reads, which gives the bounds used below.

label map
    Per block of SOURCE_BLOCK x SOURCE_BLOCK working-resolution pixels, the minimum and maximum of
    each class over the block (plus the row and column its last outputs also read) bound that
    class on every output pixel that reads the block. A class whose upper bound is below another
    class's lower bound cannot win there. Only the classes that can win somewhere (the
    "candidates") are resized, in chunks, and the argmax is taken over them in class order (ties
    go to the first class, as numpy's argmax). Resizing works channel by channel, so these values
    are bit for bit those of the full maps.
normalising sum (per pixel, over all classes, of the score clipped at zero)
    Classes that are >= 0 everywhere (by the bounds) enter linearly: one resize of their sum at
    the working resolution. Classes that change sign are resized and clipped, in chunks. With a
    threshold > 0 the sum decides which pixels stay unlabelled, so it is then computed exactly as
    `class_statistics` does (every class resized, clipped and added in class order in float32).
peak of an absent class (its confidence: the highest normalised score anywhere)
    Bounded cell by cell and evaluated only where it can be the peak (`zegformer.inference.peaks`).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from . import scoring
from .result import UNLABELED, ClassStat, class_statistics
from .peaks import PeakFinder, whole_peaks
from .score_maps import ScoreMaps

SOURCE_BLOCK = 8  # working-resolution pixels per side of a label-map bounding block
CHUNK = 8  # classes handled (resized, or bounded) at once; larger fresh chunks cost more


def _chunks(n: int, size: int = CHUNK):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _window_extremes(x: torch.Tensor, dim: int, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Min and max of x along `dim` over the windows [b*block, b*block + block] (inclusive; the
    window of the last block ends at the last index)."""
    n = x.shape[dim]
    n_full = n // block
    mins, maxs = [], []
    if n_full:
        mn, mx = torch.aminmax(x.narrow(dim, 0, n_full * block).unflatten(dim, (n_full, block)),
                               dim=dim + 1)
        mins.append(mn)
        maxs.append(mx)
    if n % block:
        mn, mx = torch.aminmax(x.narrow(dim, n_full * block, n % block), dim=dim, keepdim=True)
        mins.append(mn)
        maxs.append(mx)
    mn, mx = torch.cat(mins, dim), torch.cat(maxs, dim)
    if n > block:
        step = [slice(None)] * x.dim()
        step[dim] = slice(block, None, block)
        extra = x[tuple(step)]  # first index of the next block (a strided view)
        count = extra.shape[dim]
        head_mn, head_mx = mn.narrow(dim, 0, count), mx.narrow(dim, 0, count)
        torch.minimum(head_mn, extra, out=head_mn)
        torch.maximum(head_mx, extra, out=head_mx)
    return mn, mx


def block_bounds(low: torch.Tensor, block: int = SOURCE_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """Min and max of `low` (C x h x w) over each block's window: source rows b*block ..
    b*block + block (one more than the block: the second tap of its last outputs), same for cols.

    Returns:
        (bmin, bmax), each C x ceil(h / block) x ceil(w / block).
    """
    row_mn, row_mx = _window_extremes(low, 1, block)
    bmin = _window_extremes(row_mn, 2, block)[0]
    bmax = _window_extremes(row_mx, 2, block)[1]
    return bmin, bmax


def argmax_update(best: torch.Tensor | None, label: torch.Tensor | None, vals: torch.Tensor,
                  part: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold the classes `part` (ascending, later than those already seen; values K' x H x W) into
    the running (best value, first class with it). Within the chunk torch's max takes the first
    of equal values; a later chunk wins only with a strictly larger value: numpy's argmax. NaN
    propagates into `best` (then checked by callers)."""
    chunk_best, at = vals.max(dim=0)  # the first maximal index on ties (documented)
    chunk_label = part.to(vals.device)[at]
    if best is None or label is None:
        return chunk_best, chunk_label
    label = torch.where(chunk_best > best, chunk_label, label)
    return torch.maximum(best, chunk_best), label


def running_argmax(maps: ScoreMaps, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(best value, class of the first best) per pixel over the classes `index` (ascending)."""
    best = label = None
    for part, vals in maps.chunks(index, CHUNK):
        best, label = argmax_update(best, label, vals, part)
    assert best is not None and label is not None
    return best, label


def nonnegative_sum(low: torch.Tensor, nonneg: torch.Tensor) -> torch.Tensor:
    """h x w float64 sum of the working-resolution maps of the classes `nonneg` (K bool): resized,
    a lower bound of every output pixel's sum of clipped scores (before calibration offsets)."""
    total = torch.zeros(low.shape[1:], dtype=torch.float64, device=low.device)
    for part in _chunks(low.shape[0]):
        w = nonneg[part].to(low.dtype)
        if bool(w.any()):
            total += torch.einsum("k,khw->hw", w, low[part]).double()
    return total


def _bound_classes(maps: ScoreMaps) -> dict[str, torch.Tensor]:
    """First read of the working-resolution maps: block bounds (for the label map), which classes
    are >= 0 / <= 0 everywhere, and the h x w sum of the classes that are >= 0 everywhere."""
    low, offsets = maps.low(), maps.offsets()
    k = maps.num_classes
    lo_parts, hi_parts = [], []
    nonneg = torch.zeros(k, dtype=torch.bool, device=low.device)
    nonpos = torch.zeros(k, dtype=torch.bool, device=low.device)
    for part in _chunks(k):
        bmin, bmax = block_bounds(low[part])
        g = offsets[part][:, None, None]
        lo, hi = bmin - g, bmax - g
        lo_parts.append(lo)
        hi_parts.append(hi)
        nonneg[part] = lo.flatten(1).amin(1) >= 0
        nonpos[part] = hi.flatten(1).amax(1) <= 0
    linear = nonnegative_sum(low, nonneg) - offsets[nonneg].double().sum()
    return {"lo": torch.cat(lo_parts), "hi": torch.cat(hi_parts), "nonneg": nonneg,
            "mixed": ~nonneg & ~nonpos, "linear": linear}


def _candidates(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Ascending indices of the classes that may be the argmax somewhere (K x nby x nbx bounds)."""
    scale = float(torch.maximum(lo.abs().amax(), hi.abs().amax()))
    eps = 1e-5 * scale + 1e-30  # far above the rounding of a resized value (a few ulps of scale)
    can_win = hi >= lo.amax(0, keepdim=True) - eps
    return can_win.flatten(1).any(1).nonzero()[:, 0]


def label_map_from_maps(maps: ScoreMaps) -> np.ndarray:
    """H x W int32 argmax of the full maps (`maps.full().argmax(0)`), resizing only candidates."""
    low, offsets = maps.low(), maps.offsets()
    lo_parts, hi_parts = [], []
    for part in _chunks(maps.num_classes):
        bmin, bmax = block_bounds(low[part])
        lo_parts.append(bmin - offsets[part][:, None, None])
        hi_parts.append(bmax - offsets[part][:, None, None])
    lo, hi = torch.cat(lo_parts), torch.cat(hi_parts)
    if not _finite(lo, hi):
        return maps.full().cpu().numpy().argmax(0).astype(np.int32)
    _, label = running_argmax(maps, _candidates(lo, hi))
    return label.cpu().numpy().astype(np.int32)


def _finite(lo: torch.Tensor, hi: torch.Tensor) -> bool:
    """True when no score is NaN or infinite (max pooling carries NaN and infinities along)."""
    return bool(torch.isfinite(lo).all()) and bool(torch.isfinite(hi).all())


def _approximate_total(maps: ScoreMaps, linear: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
    """H x W float64 sum over classes of max(score, 0), to float rounding."""
    total = scoring.postprocess(linear[None], maps.crop, maps.size)[0].clone()
    for _, vals in maps.chunks(mixed.nonzero()[:, 0], CHUNK):
        total += vals.clamp(min=0).double().sum(0)
    return total.clamp(min=0)


def exact_total(maps: ScoreMaps) -> np.ndarray:
    """H x W float32 sum over classes of max(score, 0), added in class order as numpy does."""
    total = np.zeros(maps.size, dtype=np.float32)
    for _, vals in maps.chunks(torch.arange(maps.num_classes, device=maps.seen.device), CHUNK):
        for row in np.clip(vals.cpu().numpy(), 0.0, None):
            total += row
    return total


def _resized_pass(maps: ScoreMaps) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list]:
    """(best value, first best class, approximate sum of max(score, 0), the resized chunks) per
    pixel, every class resized (in chunks) and kept: for maps that are not smaller than the
    image, where bounds cost more than K x H x W (no larger than the maps themselves)."""
    best = label = None
    total = torch.zeros(maps.size, dtype=torch.float64, device=maps.seen.device)
    resized = []
    nonneg = maps.known_nonnegative()
    for part, vals in maps.chunks(torch.arange(maps.num_classes, device=maps.seen.device), CHUNK):
        best, label = argmax_update(best, label, vals, part)
        total += (vals if bool(nonneg[part].all()) else vals.clamp(min=0)).sum(0)
        resized.append((part, vals))
    assert best is not None and label is not None
    return best, label, total, resized


def map_statistics(maps: ScoreMaps, class_names: list[str], seen: list[bool],
                   threshold: float = 0.0) -> tuple[np.ndarray, list[ClassStat]]:
    """`class_statistics(maps.full().numpy(), ...)` without resizing every class (module doc).

    Returns:
        (label_map int32 H x W, list of K ClassStat).
    """
    k = maps.num_classes
    upsampled = maps.upsampled
    if upsampled:
        bounds = _bound_classes(maps)
        finite = _finite(bounds["lo"], bounds["hi"])
        if finite:
            best_raw, label = running_argmax(maps, _candidates(bounds["lo"], bounds["hi"]))
    else:
        best_raw, label, total, resized = _resized_pass(maps)
        finite = bool(torch.isfinite(best_raw).all()) and bool(torch.isfinite(total).all())
    if not finite:  # NaN / infinite scores: the full-size path, as before
        return class_statistics(maps.full().cpu().numpy(), class_names, seen, threshold)
    zero = best_raw <= 0  # every class <= 0 here: the normalised scores are all 1/K
    kf = np.float32(1.0 / k)
    if threshold > 0:  # the sum decides who stays unlabelled: compute it as class_statistics does
        total_np = exact_total(maps)
        pos = np.clip(best_raw.cpu().numpy(), 0.0, None)
        best_np = np.where(total_np > 0, pos / np.maximum(total_np, 1e-12), kf)
        total = torch.from_numpy(total_np).to(best_raw.device).double()
    else:
        if upsampled:
            total = _approximate_total(maps, bounds["linear"], bounds["mixed"])
        best = best_raw.clamp(min=0).double() / total.clamp(min=1e-12)
        best_np = torch.where(zero, float(kf), best).cpu().numpy()
    label_map = label.cpu().numpy().astype(np.int32)
    if threshold > 0:
        label_map[best_np < threshold] = UNLABELED
    labelled = label_map >= 0
    counts = np.bincount(label_map[labelled], minlength=k)
    best_sums = np.bincount(label_map[labelled], weights=best_np[labelled], minlength=k)
    absent = torch.from_numpy(counts == 0).to(best_raw.device)
    if upsampled:
        peaks_t = PeakFinder(maps, bounds["linear"], total, zero).peaks(absent)
    else:
        peaks_t = torch.full((k,), -math.inf, dtype=torch.float64, device=zero.device)
        idx = absent.nonzero()[:, 0]
        peaks_t[idx] = whole_peaks(maps, idx, total, zero, resized)
        if bool(zero.any()):
            peaks_t = peaks_t.clamp(min=float(kf))
    peaks = peaks_t.cpu().numpy()
    n_pix = label_map.size
    stats = []
    for i in range(k):
        present = bool(counts[i] > 0)
        conf = float(best_sums[i] / counts[i]) if present else float(peaks[i])
        stats.append(ClassStat(index=i, name=class_names[i], seen=bool(seen[i]),
                               confidence=min(max(conf, 0.0), 1.0),
                               area_fraction=float(counts[i]) / n_pix, present=present))
    return label_map, stats

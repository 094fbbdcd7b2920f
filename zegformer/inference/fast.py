"""The fast path: an explicit approximation of the decoupled scores (`predict(..., fast=True)`).

The exact path encodes the CLIP crop of every segment that could move a score by more than 1e-7
(`scoring.negligible_segments`). A trained ZegFormer spends most of its 100 queries on "no
object", and the few segments that carry the picture also carry most of the score mass. The fast
path therefore

1. weighs each segment by objectness x its mask's peak,
       w_q = (1 - P_seg(no object | q)) * max_x sigmoid(mask_q[x])
   (the factor by which the exact path bounds a segment's effect on any score), adds the
   weights of segments with the same binary mask (they share one crop), and encodes CLIP crops
   only for the heaviest crops: the fewest that hold `mass_fraction` of the total weight, at
   most `max_crops` (segments the exact path proves negligible are never encoded);
2. classifies every other segment with the segment classifier alone: its CLIP logits are replaced
   by its own segment logits, so its CLIP probabilities equal its segment-classifier
   probabilities and the geometric ensemble falls back to the classifier's opinion;
3. on CPU, runs the image tower with int8 dynamic quantisation of its linear layers
   (`torch.ao.quantization.quantize_dynamic`: the MLPs, about two thirds of ViT-B/16's FLOPs;
   the attention projections stay fp32). About 1.5x faster per crop on this machine, features
   within cosine 0.9993 of fp32 (rule-weights CLIP).

It is an approximation and results say so (`SegmentationResult.fast`). Measured agreement with
the exact path: see README ("Speed") and scripts/benchmark.py. With `max_crops` >= the number of
segments, `mass_fraction` 1 and `quantize` False it computes exactly what the exact path does.
"""
from __future__ import annotations

import copy
import threading
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..errors import ZegFormerError


@dataclass(frozen=True)
class FastSettings:
    """How the fast path approximates (see the module docstring).

    max_crops: most CLIP crops encoded per image.
    mass_fraction: stop adding segments once the kept ones hold this share of the score mass.
    quantize: int8 dynamic quantisation of the image tower's linear layers (CPU only; ignored on
        other devices).
    """

    max_crops: int = 10
    mass_fraction: float = 0.97
    quantize: bool = True

    def __post_init__(self) -> None:
        if self.max_crops < 0:
            raise ZegFormerError(f"max_crops must be at least 0, got {self.max_crops}")
        if not 0.0 <= self.mass_fraction <= 1.0:
            raise ZegFormerError(
                f"mass_fraction must be between 0 and 1, got {self.mass_fraction}")


DEFAULT_FAST = FastSettings()
ImageEncoder = Callable[[torch.Tensor], torch.Tensor]  # N x 3 x S x S -> N x D
FastOption = bool | FastSettings | None


def resolve_fast(fast: FastOption) -> FastSettings | None:
    """The settings a `fast` argument asks for: True -> DEFAULT_FAST, False / None -> None."""
    if fast is None or fast is False:
        return None
    if fast is True:
        return DEFAULT_FAST
    if isinstance(fast, FastSettings):
        return fast
    raise ZegFormerError(f"fast must be True, False or a FastSettings, got {fast!r}")


def segment_mass(seg_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Weight of each segment: (1 - P(no object)) * the largest value of its mask's sigmoid.

    Measured on a trained model (scripts/train_bench_model.py, 6 images, fraction 0.97 / 0.99):
    this weight kept argmax agreement 98.9% / 99.4%; objectness x soft area (the sum of the
    sigmoid) 98.3% / 98.8% with fewer crops, which loses small objects first.

    Args:
        seg_logits: Q x (K + 1), "no object" last; mask_logits: Q x H x W.

    Returns:
        Q float64 (>= 0).
    """
    objectness = 1.0 - seg_logits.double().softmax(-1)[:, -1]
    peak = mask_logits.double().sigmoid().flatten(1).amax(dim=1)
    return objectness * peak.to(objectness.device)


def mask_groups(mask_logits: torch.Tensor) -> torch.Tensor:
    """Q long ids, equal for segments with the same binary mask (sigmoid > 0.5).

    Equal binary masks give equal crops (one image-tower call serves them all), so the fast
    path counts and ranks crops, not segments. All empty masks form one group.
    """
    binary = (mask_logits.sigmoid() > 0.5).flatten(1).cpu().numpy()
    packed = np.packbits(binary, axis=1)
    ids: dict[bytes, int] = {}
    out = [ids.setdefault(row.tobytes(), len(ids)) for row in packed]
    return torch.tensor(out, dtype=torch.long, device=mask_logits.device)


def select_segments(mass: torch.Tensor, candidates: torch.Tensor, settings: FastSettings,
                    groups: torch.Tensor | None = None) -> torch.Tensor:
    """Segments whose CLIP crop the fast path encodes.

    Args:
        mass: Q (`segment_mass`).
        candidates: Q bool, the segments that may be encoded (not provably negligible).
        settings: max_crops and mass_fraction.
        groups: Q ids of segments sharing one crop (`mask_groups`); default: each its own.

    Returns:
        Q bool: the candidates of the heaviest groups (a group weighs the mass of its
        candidates), heaviest first, until they hold mass_fraction of the candidates' total
        mass, at most max_crops groups.
    """
    chosen = torch.zeros_like(candidates, dtype=torch.bool)
    if groups is None:
        groups = torch.arange(len(mass), device=mass.device)
    groups = groups.to(mass.device)
    members = torch.nonzero(candidates.to(mass.device)).flatten()
    if len(members) == 0 or settings.max_crops == 0:
        return chosen
    idx, inverse = torch.unique(groups[members], return_inverse=True)  # candidate groups
    m = torch.zeros(len(idx), dtype=mass.dtype, device=mass.device)
    m.index_add_(0, inverse, mass[members])
    order = m.argsort(descending=True, stable=True)
    total = m.sum()
    before = m[order].cumsum(0) - m[order]  # mass of the heavier ones
    if settings.mass_fraction >= 1.0 or total <= 0:
        needed = torch.ones_like(before, dtype=torch.bool)
    else:  # keep a segment while the heavier ones alone do not yet reach the fraction
        needed = before < settings.mass_fraction * total
    keep = order[needed][: settings.max_crops]  # indices into idx (groups)
    picked = torch.zeros(len(idx), dtype=torch.bool, device=mass.device)
    picked[keep] = True
    chosen[members[picked[inverse]].to(chosen.device)] = True
    return chosen


def fallback_clip_logits(clip_logits: torch.Tensor, seg_logits: torch.Tensor,
                         encoded: torch.Tensor, negligible: torch.Tensor) -> torch.Tensor:
    """CLIP logits with the segments left out by the fast path filled in by their segment logits.

    softmax([seg_logits[:K], no-object logit]) is the segment classifier's own probabilities, so
    for those rows CLIP "agrees" with the classifier. Provably negligible rows keep -inf, as in
    the exact path.

    Args:
        clip_logits: Q x K (-inf rows where not encoded); seg_logits: Q x (K + 1);
        encoded, negligible: Q bool.
    """
    out = clip_logits.clone()
    fill = ~encoded & ~negligible
    out[fill] = seg_logits[fill, :-1].to(out.dtype)
    return out


class QuantizedImageTower:
    """An int8 dynamically quantised copy of a CLIP image tower, built on first use (~1 s).

    Linear layers only (`torch.ao.quantization.quantize_dynamic`), CPU only. Thread-safe build.
    """

    def __init__(self, clip_model: nn.Module) -> None:
        self._source = clip_model
        self._tower: nn.Module | None = None
        self._lock = threading.Lock()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """N x 3 x S x S -> N x D (as `ClipAdapter.encode_image`, not normalised)."""
        return self.tower()(images.float())

    def tower(self) -> nn.Module:
        with self._lock:
            if self._tower is None:
                visual = copy.deepcopy(self._source.visual).float().cpu().eval()
                with warnings.catch_warnings():  # torch.ao's notice about moving to torchao
                    warnings.simplefilter("ignore")
                    self._tower = torch.ao.quantization.quantize_dynamic(
                        visual, {nn.Linear}, dtype=torch.qint8)
            return self._tower


def fast_image_encoder(default: ImageEncoder,
                       quantized: QuantizedImageTower, device: torch.device,
                       settings: FastSettings) -> tuple[ImageEncoder, bool]:
    """(the image tower the fast path uses, whether it is the quantised one)."""
    if settings.quantize and device.type == "cpu":
        return quantized, True
    return default, False

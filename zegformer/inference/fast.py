"""The fast path: an explicit approximation of the decoupled scores (`predict(..., fast=True)`).

The exact path encodes the CLIP crop of every segment that could move a score by more than 1e-7
(`scoring.negligible_segments`). A trained ZegFormer spends most of its 100 queries on "no
object", many of its object queries predict nearly the same mask, and the few segments that
carry the picture also carry most of the score mass. The fast path therefore
(`zegformer.inference.fast_selection` for steps 1-3)

1. weighs each segment by objectness x its mask's peak,
       w_q = (1 - P_seg(no object | q)) * max_x sigmoid(mask_q[x])
   (the factor by which the exact path bounds a segment's effect on any score);
2. puts segments whose binary masks overlap by IoU >= `share_iou` (default 0.9) in one cluster
   when they weigh at most half as much as its heaviest segment (equal masks always share: they
   give the same crop); that heaviest segment is encoded and the others borrow its CLIP logits.
   Similar masks give similar crops (the box of the mask, everything outside it zeroed), so one
   crop speaks for a trained model's weak duplicates; look-alikes as heavy as each other (as in
   untrained weights) keep their own crops;
3. encodes the crops of the heaviest clusters only: the fewest that hold `mass_fraction` of the
   total weight, at most `max_crops` (segments the exact path proves negligible are never
   encoded); every other segment is classified by the segment classifier alone: its CLIP logits
   are its own segment logits, so the geometric ensemble falls back to the classifier's opinion;
4. encodes the crops at a smaller side, `crop_size` (default 192 for ViT-B/16: 144 patch tokens
   instead of 196), with the tower's position embedding resized bicubically over the patch grid
   (the class token's row kept); the crops are made at that size directly;
5. optionally (`quantize`, CPU only, off by default), runs the image tower with int8 dynamic
   quantisation of its linear layers (`torch.ao.quantization.quantize_dynamic`: the MLPs,
   about two thirds of ViT-B/16's FLOPs). About 1.5x faster per crop on this machine, features
   within cosine 0.9993 of fp32, but it moves the argmax of more pixels than it saves time for.

Defaults (max_crops 10, mass_fraction 0.99, share_iou 0.9, crop_size 192, fp32), measured on a
model trained by scripts/train_bench_model.py (scripts/bench_fast_sizes.py, 8 validation images,
1 thread; docs/SPEED.md has the tables): 6.1x less CPU than the exact path at 99.55% argmax
agreement, with 3-4 crops per image instead of 9-17. It is an approximation and results say so
(`SegmentationResult.fast`). With `max_crops` >= the number of segments, `mass_fraction` 1,
`share_iou` None, `quantize` False and `crop_size` None it computes exactly what the exact path
does.
"""
from __future__ import annotations

import copy
import math
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ZegFormerError
from .crop_cache import CropFeatureCache
from .fast_selection import (SegmentPlan, complete_clip_logits, fallback_clip_logits,  # noqa: F401
                             mask_groups, plan_segments, segment_mass, select_segments)


@dataclass(frozen=True)
class FastSettings:
    """How the fast path approximates (see the module docstring).

    max_crops: most CLIP crops encoded per image.
    mass_fraction: stop adding segments once the kept ones hold this share of the score mass.
    quantize: int8 dynamic quantisation of the image tower's linear layers (CPU only; ignored on
        other devices).
    crop_size: side in pixels of the crops given to the image tower, a multiple of its patch
        size (16 for ViT-B/16; the position embedding is resized to that grid); None: CLIP's own
        input size (224), as the exact path.
    share_iou: segments whose binary masks overlap by at least this IoU share one crop (the
        heaviest one's; `fast_selection.similar_mask_clusters`); None: only equal masks do.
    """

    max_crops: int = 10
    mass_fraction: float = 0.99
    quantize: bool = False
    crop_size: int | None = 192
    share_iou: float | None = 0.9

    def __post_init__(self) -> None:
        if self.max_crops < 0:
            raise ZegFormerError(f"max_crops must be at least 0, got {self.max_crops}")
        if not 0.0 <= self.mass_fraction <= 1.0:
            raise ZegFormerError(
                f"mass_fraction must be between 0 and 1, got {self.mass_fraction}")
        if self.crop_size is not None and (isinstance(self.crop_size, bool)
                                           or not isinstance(self.crop_size, int)
                                           or self.crop_size < 1):
            raise ZegFormerError(
                f"crop_size must be a positive whole number of pixels or None, got "
                f"{self.crop_size!r}")
        if self.share_iou is not None and not 0.0 < self.share_iou <= 1.0:
            raise ZegFormerError(f"share_iou must be above 0 and at most 1, or None, got "
                                 f"{self.share_iou!r}")


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


def resized_position_embedding(pe: torch.Tensor, grid: int) -> torch.Tensor:
    """A ViT position embedding for a `grid` x `grid` patch grid.

    Args:
        pe: (1 + n * n) x C, the class token's first, then the n x n grid row by row.

    Returns:
        (1 + grid * grid) x C: the class token's row as it is, the grid resized bicubically
        (align_corners False); `pe` itself when grid == n.
    """
    n = math.isqrt(pe.shape[0] - 1)
    if n * n != pe.shape[0] - 1:
        raise ZegFormerError(f"position embedding of {pe.shape[0]} rows is not 1 + a square grid")
    if grid == n:
        return pe
    square = pe[1:].reshape(1, n, n, -1).permute(0, 3, 1, 2).float()  # 1 x C x n x n
    square = F.interpolate(square, size=(grid, grid), mode="bicubic", align_corners=False)
    square = square.permute(0, 2, 3, 1).reshape(grid * grid, -1).to(pe.dtype)
    return torch.cat([pe[:1], square], dim=0)


def resized_image_tower(visual: nn.Module, size: int) -> nn.Module:
    """A copy of an open_clip ViT image tower that takes size x size images.

    The patch embedding and the blocks are shared by value (deep copy); only the position
    embedding is resized (`resized_position_embedding`). At the tower's own size the copy computes
    the same as the tower.

    Args:
        visual: open_clip `VisionTransformer` (conv1, positional_embedding, image_size, ...).
        size: input side, a multiple of the patch size.

    Returns:
        nn.Module in eval mode: N x 3 x size x size -> N x D.
    """
    patch = int(visual.conv1.kernel_size[0])
    if size < patch or size % patch:
        raise ZegFormerError(f"crop_size must be a multiple of CLIP's patch size {patch}, "
                             f"got {size}")
    tower = copy.deepcopy(visual).eval()
    grid = size // patch
    pe = resized_position_embedding(tower.positional_embedding.detach(), grid)
    tower.positional_embedding = nn.Parameter(pe.clone(), requires_grad=False)
    tower.image_size = (size, size)
    tower.grid_size = (grid, grid)
    return tower


class FastImageTowers:
    """The fast path's image towers, built on first use and kept: int8 dynamically quantised
    (linear layers, `torch.ao.quantization.quantize_dynamic`, CPU, ~1 s to build) and / or
    resized to another input side (`resized_image_tower`). Thread-safe builds.

    Calling it runs the int8 tower at the input's own size (N x 3 x S x S -> N x D).
    """

    def __init__(self, clip_model: nn.Module) -> None:
        self._source = clip_model
        self._towers: dict[tuple[int, bool], nn.Module] = {}
        self._lock = threading.Lock()

    @property
    def native_size(self) -> int:
        size = self._source.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """N x 3 x S x S -> N x D (as `ClipAdapter.encode_image`, not normalised)."""
        return self.tower(images.shape[-1])(images.float())

    def encoder(self, size: int, quantize: bool) -> ImageEncoder:
        """The image tower for size x size crops, int8 (CPU) or as the source (its device)."""
        tower = self.tower(size, quantize)
        if quantize:
            return lambda images: tower(images.float())
        return tower

    def tower(self, size: int | None = None, quantize: bool = True) -> nn.Module:
        size = self.native_size if size is None else int(size)
        key = (size, quantize)
        with self._lock:
            if key not in self._towers:
                visual = self._source.visual
                if size != self.native_size:
                    visual = resized_image_tower(visual, size)  # a copy
                elif quantize:
                    visual = copy.deepcopy(visual)
                if quantize:
                    visual = visual.float().cpu().eval()
                    with warnings.catch_warnings():  # torch.ao's notice about moving to torchao
                        warnings.simplefilter("ignore")
                        visual = torch.ao.quantization.quantize_dynamic(
                            visual, {nn.Linear}, dtype=torch.qint8)
                self._towers[key] = visual
            return self._towers[key]


def fast_crop_size(settings: FastSettings, native: int) -> int:
    """The side of the crops the fast path makes (settings.crop_size, else CLIP's own)."""
    return native if settings.crop_size is None else settings.crop_size


class TowerFeatureCache:
    """One tower's view of a shared crop-feature cache: its keys carry the tower's name, so
    features of the int8 and fp32 towers at the same crop size never mix."""

    def __init__(self, cache: CropFeatureCache, tower: str) -> None:
        self._cache, self._prefix = cache, tower.encode() + b":"

    def get(self, key: bytes) -> torch.Tensor | None:
        return self._cache.get(self._prefix + key)

    def put(self, key: bytes, value: torch.Tensor) -> None:
        self._cache.put(self._prefix + key, value)


def fast_image_encoder(default: ImageEncoder,
                       quantized: FastImageTowers, device: torch.device,
                       settings: FastSettings) -> tuple[ImageEncoder, str | None]:
    """(the image tower the fast path uses, its name when it is one of the fast path's own:
    int8 and / or resized, e.g. "int8-160"; None for the exact path's tower).

    Its own towers keep their own crop features (they differ from the exact tower's).
    """
    size = fast_crop_size(settings, quantized.native_size)
    quantize = settings.quantize and device.type == "cpu"
    if not quantize and size == quantized.native_size:
        return default, None
    return quantized.encoder(size, quantize), f"{'int8' if quantize else 'fp'}-{size}"


@dataclass
class CropPlan:
    """What the fast path hands `scoring.clip_segment_logits`: which segments to encode (and
    who borrows their logits), with which image tower, at which crop side, with which
    crop-feature cache."""

    segments: SegmentPlan
    encode: ImageEncoder
    size: int
    cache: Any  # a CropFeatureCache-like get/put, or None

    @property
    def encoded(self) -> torch.Tensor:
        """Q bool: the segments whose crops are encoded."""
        return self.segments.encoded


def plan_crops(settings: FastSettings, seg_logits: torch.Tensor, masks: torch.Tensor,
               candidates: torch.Tensor, encode: ImageEncoder, size: int, cache: Any,
               towers: FastImageTowers | None, device: torch.device,
               tower_features: CropFeatureCache | None) -> CropPlan:
    """The fast path's crops: `plan_segments` over `masks`, and, when the predictor has fast
    towers, the int8 and / or resized tower with its own feature cache.

    Args:
        seg_logits: Q x (K + 1); masks: Q x H x W logits; candidates: Q bool (not negligible).
        encode, size, cache: the exact path's image tower, crop side and feature cache, used
            as they are when the fast tower is the exact one (or there are no fast towers).
        towers: the predictor's fast towers; tower_features: their shared feature cache.
    """
    segments = plan_segments(settings, seg_logits, masks, candidates)
    if towers is None:
        return CropPlan(segments, encode, size, cache)
    fast_encode, tower = fast_image_encoder(encode, towers, device, settings)
    if tower is not None:  # its own features (they differ from the exact tower's)
        cache = None if tower_features is None else TowerFeatureCache(tower_features, tower)
    return CropPlan(segments, fast_encode, fast_crop_size(settings, size), cache)

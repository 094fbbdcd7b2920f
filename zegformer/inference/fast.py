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
   within cosine 0.9993 of fp32 (rule-weights CLIP);
4. encodes the crops at a smaller side, `crop_size` (default 128 for ViT-B/16: 64 patch tokens
   instead of 196), with the tower's position embedding resized bicubically over the patch grid
   (the class token's row kept); the crops are made at that size directly. int8 at 128 costs
   about a quarter of int8 at 224 per crop.

Defaults (max_crops 10, mass_fraction 0.99, int8, crop_size 128), measured on a model trained by
scripts/train_bench_model.py (6 validation images, scripts/bench_fast_sizes.py): 5.6x less CPU
than the exact path at 99.06% argmax agreement; none of the settings tried reached both 5x and
99.5% there (docs/SPEED.md has the table). It is an approximation and results say so
(`SegmentationResult.fast`). With `max_crops` >= the number of segments, `mass_fraction` 1,
`quantize` False and `crop_size` None it computes exactly what the exact path does.
"""
from __future__ import annotations

import copy
import math
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ZegFormerError
from .crop_cache import CropFeatureCache


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
    """

    max_crops: int = 10
    mass_fraction: float = 0.99
    quantize: bool = True
    crop_size: int | None = 128

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
    """What the fast path hands `scoring.clip_segment_logits`: which segments to encode, with
    which image tower, at which crop side, with which crop-feature cache."""

    encoded: torch.Tensor  # Q bool
    encode: ImageEncoder
    size: int
    cache: Any  # a CropFeatureCache-like get/put, or None


def plan_crops(settings: FastSettings, seg_logits: torch.Tensor, masks: torch.Tensor,
               candidates: torch.Tensor, encode: ImageEncoder, size: int, cache: Any,
               towers: FastImageTowers | None, device: torch.device,
               tower_features: CropFeatureCache | None) -> CropPlan:
    """The fast path's crops: `select_segments` over the mask groups of `masks`, and, when the
    predictor has fast towers, the int8 and / or resized tower with its own feature cache.

    Args:
        seg_logits: Q x (K + 1); masks: Q x H x W logits; candidates: Q bool (not negligible).
        encode, size, cache: the exact path's image tower, crop side and feature cache, used
            as they are when the fast tower is the exact one (or there are no fast towers).
        towers: the predictor's fast towers; tower_features: their shared feature cache.
    """
    encoded = select_segments(segment_mass(seg_logits, masks), candidates, settings,
                              mask_groups(masks))
    if towers is None:
        return CropPlan(encoded, encode, size, cache)
    fast_encode, tower = fast_image_encoder(encode, towers, device, settings)
    if tower is not None:  # its own features (they differ from the exact tower's)
        cache = None if tower_features is None else TowerFeatureCache(tower_features, tower)
    return CropPlan(encoded, fast_encode, fast_crop_size(settings, size), cache)

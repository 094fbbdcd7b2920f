"""Scoring modes: named functions from one image's model outputs to per-class maps K x H x W.

| name                 | model kind          | what scores a pixel                                  |
|----------------------|---------------------|------------------------------------------------------|
| `decoupled`          | zegformer           | segments classified (+ CLIP crops), merged by masks  |
| `dense_clip`         | zegformer           | dense CLIP features (MaskCLIP-style), no grouping    |
| `per_pixel_baseline` | per_pixel_baseline  | the official per-pixel baseline head                 |

A user-facing mode ("decoupled" or "pixel") resolves to one of these through `resolve_mode`:
"pixel" means dense CLIP with a ZegFormer checkpoint and the baseline head with a baseline one.
Each function reads what it needs from `ScoringInputs` and returns float scores on the device:
K x H x W at the input size, or, when `inputs.lazy`, a `ScoreMaps` that resizes on demand.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ZegFormerError
from ..loading.settings import ModelSettings
from ..modeling.clip_adapter import ClipAdapter
from . import scoring
from .crop_cache import CropFeatureCache
from .fast import FastSettings, FastImageTowers, complete_clip_logits, plan_crops
from ..text import CLIP_TEMPLATES
from .preprocess import Preprocessed, normalize_and_pad, resize_shortest_edge
from .score_maps import ScoreMaps
from .tta import TTAPass

USER_MODES = ("decoupled", "pixel")
DENSE_CLIP_SHORT_SIDE = 448  # input short side for dense CLIP features in pixel mode
DENSE_CLIP_MAX_SIDE = 1344
ProgressFn = Callable[[float, str], None]


@dataclass
class ScoringInputs:
    """What a scoring mode may use for one image and vocabulary.

    rgb: H x W x 3 uint8 RGB image (already size-limited).
    seen: K bool tensor on the device, True for training-vocabulary classes.
    text: templates -> K x D L2-normalised class embeddings (cached by the caller).
    timer: key -> context manager adding the elapsed time to that key.
    autocast: context manager for reduced precision where the device allows it.
    augment: a test-time augmentation pass (`zegformer.inference.tta`), or None. A mode never
        resizes `rgb` itself: it asks `network_image` / `preprocess`, which apply the pass.
    """

    rgb: np.ndarray
    names: list[str]
    seen: torch.Tensor
    settings: ModelSettings
    model: nn.Module
    clip: ClipAdapter
    text: Callable[[str | Sequence[str]], torch.Tensor]
    timer: Callable[[str], AbstractContextManager]
    report: ProgressFn
    autocast: Callable[[], AbstractContextManager]
    augment: TTAPass | None = None
    plain: bool = False  # the official algorithm step for step (benchmarks): every CLIP crop encoded
    crop_stats: dict[str, int] | None = None  # filled by the decoupled mode: CLIP crop counts
    crop_features: CropFeatureCache | None = None  # CLIP crop features kept across calls
    lazy: bool = False  # return a ScoreMaps (scores at the working resolution), not K x H x W
    fast: FastSettings | None = None  # the fast approximation (`zegformer.inference.fast`)
    fast_towers: FastImageTowers | None = None  # the int8 and / or resized image towers
    fast_crop_features: CropFeatureCache | None = None  # crop features of that tower

    @property
    def device(self) -> torch.device:
        return self.seen.device

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of `rgb`: the size of the returned maps (with or without augmentation)."""
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])

    def network_image(self, short: int, max_size: int) -> torch.Tensor:
        """The image the network sees: 3 x h x w float 0-255 RGB on the device.

        Without augmentation, `rgb` resized to shortest edge `short` (long edge <= max_size);
        under a TTA pass, that image further resized and flipped as the pass says.
        """
        if self.augment is None:
            return resize_shortest_edge(self.rgb, short, max_size, self.device)
        img = self.augment.image(self.rgb, short, max_size, self.settings.min_size_test)
        img = img if img.flags.writeable else img.copy()  # torch refuses read-only arrays
        return torch.from_numpy(img).to(self.device).permute(2, 0, 1).float()

    def preprocess(self, short: int, max_size: int, mean: Sequence[float], std: Sequence[float],
                   divisor: int) -> Preprocessed:
        """`network_image`, normalised with mean / std and zero-padded to multiples of divisor."""
        x = self.network_image(short, max_size)
        return Preprocessed(resized=x, image=normalize_and_pad(x, mean, std, divisor))


ModeFn = Callable[[ScoringInputs], "torch.Tensor | ScoreMaps"]


@dataclass(frozen=True)
class ScoringMode:
    name: str
    model_kind: str  # the `kind` of model it needs
    fn: ModeFn


SCORING_MODES: dict[str, ScoringMode] = {}


def register_mode(name: str, model_kind: str):
    """Decorator adding a scoring function to SCORING_MODES under `name`."""
    def add(fn: ModeFn) -> ModeFn:
        SCORING_MODES[name] = ScoringMode(name, model_kind, fn)
        return fn
    return add


def resolve_mode(mode: str, model_kind: str) -> ScoringMode:
    """The scoring function for a user-facing mode ("decoupled" / "pixel") and a model kind."""
    if mode not in USER_MODES:
        raise ZegFormerError(f"mode must be one of {USER_MODES}, got {mode!r}")
    if model_kind == "per_pixel_baseline":
        if mode != "pixel":
            raise ZegFormerError("this checkpoint is the per-pixel baseline: only mode='pixel' works")
        return SCORING_MODES["per_pixel_baseline"]
    return SCORING_MODES["decoupled" if mode == "decoupled" else "dense_clip"]


def finish(inp: ScoringInputs, compute: Callable[[], torch.Tensor], valid_size: tuple[int, int],
           gamma: float = 0.0, factors: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None
           ) -> torch.Tensor | ScoreMaps:
    """Every mode's last step: `compute()` (K x h' x w' at the working resolution, >= 0: every
    mode computes probabilities or sums of them), cropped to `valid_size`, resized to the input
    size, `gamma` subtracted from seen classes. `factors`: see `ScoreMaps`.

    Returns K x H x W, or with `inp.lazy` the `ScoreMaps` (what they read computed now).
    """
    maps = ScoreMaps(compute, valid_size, inp.size, inp.seen, gamma, nonnegative=True,
                     factors=factors)
    if inp.lazy:
        maps.prepare()
        return maps
    return maps.full()


def model_input(inp: ScoringInputs) -> Preprocessed:
    """The image as the checkpoint's model sees it (MIN_SIZE_TEST, PIXEL_MEAN/STD, padding)."""
    s = inp.settings
    with inp.timer("preprocess"):
        return inp.preprocess(s.min_size_test, s.max_size_test, s.pixel_mean, s.pixel_std,
                              s.size_divisibility)


@register_mode("decoupled", "zegformer")
def decoupled(inp: ScoringInputs) -> torch.Tensor | ScoreMaps:
    """ZegFormer's segment-level scoring: the official `sem_seg` (see `scoring` for the formula)."""
    s = inp.settings
    pre = model_input(inp)
    inp.report(0.35, "segmenting")
    text = inp.text(s.prompt_ensemble_type)
    out = inp.model(pre.image, text)
    seg_logits = out.pred_logits[0].float()  # Q x (K + 1)
    with inp.timer("merge"):
        masks = F.interpolate(out.pred_masks.float(), size=pre.image.shape[-2:], mode="bilinear",
                              align_corners=False)[0]  # Q x Hp x Wp
    clip_logits = None
    if s.clip_classification:
        inp.report(0.55, "classifying segments with CLIP")
        clip_text = inp.text(CLIP_TEMPLATES)
        with inp.timer("clip_crops"):
            clip_img = normalize_and_pad(pre.resized, s.clip_pixel_mean, s.clip_pixel_std,
                                         s.size_divisibility)[0]
            scale = inp.clip.logit_scale.float()
            skip = None if inp.plain else scoring.negligible_segments(
                seg_logits, masks, inp.seen, logit_scale=scale, ensembling=s.ensembling,
                all_classes_as_novel=s.ensembling_all_cls, lam=s.ensemble_lambda)
            encode, cache = inp.clip.encode_image, None if inp.plain else inp.crop_features
            plan, encoded, size = None, None, inp.clip.image_size
            if inp.fast is not None and skip is not None:
                plan = plan_crops(inp.fast, seg_logits, masks, ~skip, encode, size, cache,
                                  inp.fast_towers, inp.device, inp.fast_crop_features)
                encoded, encode, size, cache = plan.encoded, plan.encode, plan.size, plan.cache
            with inp.autocast():
                clip_logits = scoring.clip_segment_logits(
                    clip_img, masks, encode, clip_text, scale,
                    style=s.clip_cls_style, size=size,
                    skip=skip if encoded is None else ~encoded, dedupe=not inp.plain,
                    feature_cache=cache, stats=inp.crop_stats).float()
            if plan is not None:
                clip_logits = complete_clip_logits(clip_logits, seg_logits, plan.segments, skip)
                if inp.crop_stats is not None:
                    shared = plan.segments.borrowing
                    inp.crop_stats.update(negligible=int(skip.sum()), shared=int(shared.sum()),
                                          fallback=int((~encoded & ~shared & ~skip).sum()))
    inp.report(0.85, "merging segments")
    with inp.timer("merge"):
        probs = scoring.decoupled_segment_probs(
            seg_logits, inp.seen, clip_logits=clip_logits, ensembling=s.ensembling,
            all_classes_as_novel=s.ensembling_all_cls, lam=s.ensemble_lambda)
        # More classes than segments: merging at the image size reads Q maps instead of K.
        factors = ((lambda: (probs, masks.sigmoid())) if probs.shape[1] > probs.shape[0]
                   else None)
        return finish(inp, lambda: scoring.semantic_merge(probs, masks), pre.size,
                      s.gzero_calibrate, factors)


@register_mode("dense_clip", "zegformer")
def dense_clip(inp: ScoringInputs) -> torch.Tensor | ScoreMaps:
    """Pixel-level scoring with dense CLIP features: softmax over classes of scale * cosine.

    The image is resized to whole patches (short side about DENSE_CLIP_SHORT_SIDE, both sides
    rounded to multiples of the patch size, so no padding), the softmax is taken on the patch
    grid (K x H/p x W/p) and those probabilities are resized bilinearly to the input size: the
    per-class statistics then read K small maps, not K x H x W (`zegformer.inference.statistics`).
    """
    s = inp.settings
    text = inp.text(CLIP_TEMPLATES)
    patch = inp.clip.patch_size
    with inp.timer("preprocess"):
        x = whole_patches(inp.network_image(DENSE_CLIP_SHORT_SIDE, DENSE_CLIP_MAX_SIDE), patch)
        img = normalize_and_pad(x, s.clip_pixel_mean, s.clip_pixel_std, patch)
    inp.report(0.4, "dense CLIP features")
    with inp.timer("clip_dense"), inp.autocast():
        feats = inp.clip.dense_features(img).float()[0]  # D x gh x gw
    with inp.timer("merge"):
        logits = inp.clip.logit_scale.float() * torch.einsum("dhw,kd->khw", feats, text)
        return finish(inp, lambda: scoring.pixel_probs(logits), tuple(logits.shape[-2:]))


def whole_patches(x: torch.Tensor, patch: int) -> torch.Tensor:
    """3 x h x w image resized (bilinear) so that both sides are multiples of `patch` (each
    rounded to the nearest multiple, at least one patch); unchanged when they already are."""
    h, w = x.shape[-2:]
    size = (max(patch, round(h / patch) * patch), max(patch, round(w / patch) * patch))
    if size == (h, w):
        return x
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]


@register_mode("per_pixel_baseline", "per_pixel_baseline")
def per_pixel_baseline(inp: ScoringInputs) -> torch.Tensor | ScoreMaps:
    """The official per-pixel baseline head: softmax over classes of its per-pixel logits."""
    s = inp.settings
    pre = model_input(inp)
    inp.report(0.4, "pixel embeddings")
    text = inp.text(s.prompt_ensemble_type)
    emb = inp.model(pre.image)
    with inp.timer("merge"):
        logits = inp.model.classify(emb, text)

        def compute() -> torch.Tensor:
            up = F.interpolate(logits.float(), scale_factor=4, mode="bilinear",
                               align_corners=False)[0]
            return scoring.pixel_probs(up)

        return finish(inp, compute, pre.size, s.gzero_calibrate)

"""Predictor: image + vocabulary -> SegmentationResult, on CPU or CUDA.

Pre-processing, stage timing, text caching and scoring around the pure modules. The evaluation
uses the same `scores` method, so what the app shows is what gets evaluated.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import scoring
from ..errors import ZegFormerError
from .image import limit_size, load_image, resize, shortest_edge_size
from ..modeling.clip_adapter import ClipAdapter
from .result import SegmentationResult, class_statistics
from ..loading.settings import ModelSettings
from ..text import CLIP_TEMPLATES, TextEmbedder, is_seen, parse_classes

MODES = ("decoupled", "pixel")
DENSE_CLIP_SHORT_SIDE = 448  # input short side for dense CLIP features in pixel mode
DENSE_CLIP_MAX_SIDE = 1344
ProgressFn = Callable[[float, str], None]


class Predictor:
    """ZegFormer ready to segment images with any vocabulary.

    Args:
        model: `ZegFormer` or `PerPixelBaseline` (eval mode, weights loaded).
        clip: the CLIP towers (text always; image tower for CLIP crops and dense features).
        tokenizer: CLIP tokenizer.
        settings: the config's ModelSettings.
        seen_classes: the checkpoint's training vocabulary ("seen" classes).
        device: where to run.
        untrained: True for random weights (results labelled so).
        description: short text for status lines ("config (weights file)").
        max_side: images with a longer side are downscaled to it first.
    """

    model: Any  # ZegFormer or PerPixelBaseline: submodules are read by name

    def __init__(self, model: torch.nn.Module, clip: ClipAdapter, tokenizer, settings: ModelSettings,
                 *, seen_classes: frozenset[str], device: torch.device | str = "cpu",
                 untrained: bool = False, description: str = "", clip_id: str = "clip",
                 max_side: int = 2048) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.clip = clip.to(self.device).eval()
        self.settings = settings
        self.seen_classes = frozenset(seen_classes)
        self.untrained = untrained
        self.description = description or settings.name
        self.max_side = max_side
        self.text = TextEmbedder(self.clip.encode_text, tokenizer, clip_id, self.device)
        s = settings
        self._mean = torch.tensor(s.pixel_mean, device=self.device).view(3, 1, 1)
        self._std = torch.tensor(s.pixel_std, device=self.device).view(3, 1, 1)
        self._clip_mean = torch.tensor(s.clip_pixel_mean, device=self.device).view(3, 1, 1)
        self._clip_std = torch.tensor(s.clip_pixel_std, device=self.device).view(3, 1, 1)

    @property
    def kind(self) -> str:
        """"zegformer" or "per_pixel_baseline"."""
        return getattr(self.model, "kind", "zegformer")

    @property
    def modes(self) -> tuple[str, ...]:
        """Scoring modes this model supports."""
        return MODES if self.kind == "zegformer" else ("pixel",)

    def describe(self) -> str:
        tag = " (untrained random weights)" if self.untrained else ""
        return f"{self.description}{tag}"

    def predict(self, image, classes: str | Sequence[str], mode: str = "decoupled", *,
                threshold: float = 0.0, progress: ProgressFn | None = None) -> SegmentationResult:
        """Segment `image` into `classes`.

        Args:
            image: PIL image, H x W x 3 uint8 RGB array (or gray / RGBA / 16-bit), or a path.
            classes: class names, as a list or one comma-separated string ("a | b" = synonyms).
            mode: "decoupled" (ZegFormer's segment-level scoring) or "pixel" (pixel-level).
            threshold: pixels whose best normalised score is below it are left unlabelled (-1).
            progress: optional callback(fraction, description).

        Returns:
            SegmentationResult with probs K x H x W at the (possibly downscaled) input size.
        """
        t0 = time.perf_counter()
        names = parse_classes(classes)
        if not 0.0 <= float(threshold) <= 1.0:
            raise ZegFormerError(f"threshold must be between 0 and 1, got {threshold}")
        rgb = load_image(image)
        original = rgb.shape[:2]
        rgb = limit_size(rgb, self.max_side)
        timings: dict[str, float] = {}
        probs = self.scores(rgb, names, mode, timings=timings, progress=progress)
        seen = [is_seen(n, self.seen_classes) for n in names]
        t = time.perf_counter()
        label_map, stats = class_statistics(probs, names, seen, threshold)
        timings["statistics"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t0
        return SegmentationResult(
            class_names=names, probs=probs, label_map=label_map, classes=stats, mode=mode,
            timings=timings, model=self.describe(), untrained=self.untrained,
            device=str(self.device), original_size=tuple(original),
        )

    @torch.inference_mode()
    def scores(self, rgb: np.ndarray, names: list[str], mode: str = "decoupled", *,
               timings: dict[str, float] | None = None,
               progress: ProgressFn | None = None) -> np.ndarray:
        """Per-class score maps K x H x W (float32, numpy) for an RGB uint8 image.

        In decoupled mode these are the official model's `sem_seg` for this image and vocabulary.
        """
        if mode not in MODES:
            raise ZegFormerError(f"mode must be one of {MODES}, got {mode!r}")
        if mode not in self.modes:
            raise ZegFormerError("this checkpoint is the per-pixel baseline: only mode='pixel' works")
        timings = {} if timings is None else timings
        report = progress or (lambda f, d: None)
        s = self.settings
        seen = torch.tensor([is_seen(n, self.seen_classes) for n in names], device=self.device)
        report(0.05, "encoding class names")
        with self._timer(timings, "text"):
            text = self.text(names, s.prompt_ensemble_type).to(self.device)
        h, w = rgb.shape[:2]
        report(0.15, "preprocessing")
        if mode == "pixel" and self.kind == "zegformer":
            out = self._dense_clip(rgb, names, timings, report)
        else:
            with self._timer(timings, "preprocess"):
                nh, nw = shortest_edge_size(h, w, s.min_size_test, s.max_size_test)
                x = torch.from_numpy(resize(rgb, (nh, nw))).to(self.device)
                x = x.permute(2, 0, 1).float()  # 3 x nh x nw, 0-255 RGB
            if self.kind == "per_pixel_baseline":
                out = self._per_pixel(x, text, seen, (h, w), timings, report)
            else:
                out = self._decoupled(x, text, names, seen, (h, w), timings, report)
        report(1.0, "done")
        return out.float().cpu().numpy()

    def _backbone(self, x: torch.Tensor, timings: dict[str, float]):
        """Normalise and pad the 0-255 image (3 x h x w), run the backbone.

        Returns:
            (1 x 3 x Hp x Wp normalised padded image, {"res2".."res5"} features).
        """
        with self._timer(timings, "preprocess"):
            img = _pad((x - self._mean) / self._std, self.settings.size_divisibility)[None]
        with self._timer(timings, "backbone"):
            feats = self.model.backbone(img)
        return img, feats

    def _decoupled(self, x, text, names, seen, out_size, timings, report) -> torch.Tensor:
        s, head = self.settings, self.model.sem_seg_head
        nh, nw = x.shape[-2:]
        img, feats = self._backbone(x, timings)
        report(0.35, "pixel decoder")
        with self._timer(timings, "pixel_decoder"):
            mask_features = head.pixel_decoder(feats)
        report(0.45, "segment decoder")
        with self._timer(timings, "transformer"):
            out = head.predictor(feats[head.transformer_in_feature], mask_features)
            seg_logits = head.predictor.classify(out["segment_embeds"], text)[0].float()
        with self._timer(timings, "merge"):
            masks = F.interpolate(out["pred_masks"].float(), size=img.shape[-2:], mode="bilinear",
                                  align_corners=False)[0]  # Q x Hp x Wp
        clip_logits = None
        if s.clip_classification:
            report(0.55, "classifying segments with CLIP")
            with self._timer(timings, "text"):
                clip_text = self.text(names, CLIP_TEMPLATES).to(self.device)
            with self._timer(timings, "clip_crops"):
                clip_img = _pad((x - self._clip_mean) / self._clip_std, s.size_divisibility)
                with self._autocast():
                    clip_logits = scoring.clip_segment_logits(
                        clip_img, masks, self.clip.encode_image, clip_text,
                        self.clip.logit_scale.float(), style=s.clip_cls_style,
                        size=self.clip.image_size).float()
        report(0.85, "merging segments")
        with self._timer(timings, "merge"):
            probs = scoring.decoupled_segment_probs(
                seg_logits, seen, clip_logits=clip_logits, ensembling=s.ensembling,
                all_classes_as_novel=s.ensembling_all_cls, lam=s.ensemble_lambda)
            sem = scoring.semantic_merge(probs, masks)
            sem = scoring.postprocess(sem, (nh, nw), out_size)
            sem = scoring.calibrate(sem, seen, s.gzero_calibrate)
        return sem

    def _per_pixel(self, x, text, seen, out_size, timings, report) -> torch.Tensor:
        s = self.settings
        nh, nw = x.shape[-2:]
        _, feats = self._backbone(x, timings)
        report(0.4, "pixel decoder")
        with self._timer(timings, "pixel_decoder"):
            emb = self.model.sem_seg_head(feats)
        with self._timer(timings, "merge"):
            logits = self.model.classify(emb, text)
            logits = F.interpolate(logits.float(), scale_factor=4, mode="bilinear",
                                   align_corners=False)[0]
            sem = scoring.postprocess(scoring.pixel_probs(logits), (nh, nw), out_size)
            sem = scoring.calibrate(sem, seen, s.gzero_calibrate)
        return sem

    def _dense_clip(self, rgb, names, timings, report) -> torch.Tensor:
        h, w = rgb.shape[:2]
        patch = self.clip.clip.visual.conv1.kernel_size[0]
        with self._timer(timings, "text"):
            text = self.text(names, CLIP_TEMPLATES).to(self.device)
        with self._timer(timings, "preprocess"):
            nh, nw = shortest_edge_size(h, w, DENSE_CLIP_SHORT_SIDE, DENSE_CLIP_MAX_SIDE)
            x = torch.from_numpy(resize(rgb, (nh, nw))).to(self.device).permute(2, 0, 1).float()
            img = _pad((x - self._clip_mean) / self._clip_std, patch)[None]
        report(0.4, "dense CLIP features")
        with self._timer(timings, "clip_dense"), self._autocast():
            feats = self.clip.dense_features(img).float()[0]  # D x gh x gw
        with self._timer(timings, "merge"):
            logits = self.clip.logit_scale.float() * torch.einsum("dhw,kd->khw", feats, text)
            logits = F.interpolate(logits[None], size=img.shape[-2:], mode="bilinear",
                                   align_corners=False)[0]
            return scoring.postprocess(scoring.pixel_probs(logits), (nh, nw), (h, w))

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.float16,
                              enabled=self.device.type == "cuda")

    @contextmanager
    def _timer(self, timings: dict[str, float], key: str) -> Iterator[None]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t


def _pad(x: torch.Tensor, divisor: int) -> torch.Tensor:
    """Zero-pad C x H x W bottom/right to multiples of `divisor` (no-op for divisor <= 0)."""
    if divisor <= 0:
        return x
    h, w = x.shape[-2:]
    ph, pw = (-h) % divisor, (-w) % divisor
    return F.pad(x, (0, pw, 0, ph)) if ph or pw else x

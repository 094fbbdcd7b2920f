"""Predictor: image + vocabulary -> SegmentationResult, on CPU or CUDA.

Pre-processing, stage timing, text caching and scoring around the pure modules. The evaluation
uses the same `scores` method, so what the app shows is what gets evaluated.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..errors import ZegFormerError
from ..loading.settings import ModelSettings, TTASettings
from ..modeling.clip_adapter import ClipAdapter
from ..text import TextEmbedder, is_seen, parse_classes
from ..text_cache import text_tower_digest
from .crop_cache import CropFeatureCache
from .fast import FastOption, FastImageTowers, resolve_fast
from .image import limit_size, load_image
from .modes import USER_MODES as MODES
from .modes import ProgressFn, ScoringInputs, resolve_mode
from .result import SegmentationResult, class_statistics
from .score_maps import ScoreMaps
from .statistics import label_map_from_maps, map_statistics
from .tta import run_tta

TTAOption = bool | TTASettings | None  # None: the config's TEST.AUG.ENABLED decides


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

    model: Any  # ZegFormer or PerPixelBaseline (both have `kind` and `stages()`)

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
        self.text = TextEmbedder(self.clip.encode_text, tokenizer, clip_id, self.device,
                                 weights_digest=lambda: text_tower_digest(self.clip.clip))
        self.crop_stats: dict[str, int] = {}  # last decoupled run: segments, skipped, encoded...
        self.crop_features = CropFeatureCache()  # CLIP crop features, reused for the same image
        self.fast_towers = FastImageTowers(self.clip.clip)  # built on first use
        self.fast_crop_features = CropFeatureCache()  # features of those towers
        # Held by every prediction; background work (warming text embeddings) takes it too, so
        # it runs between requests, never during one.
        self.lock = threading.RLock()

    @property
    def kind(self) -> str:
        """"zegformer" or "per_pixel_baseline"."""
        return getattr(self.model, "kind", "zegformer")

    @property
    def modes(self) -> tuple[str, ...]:
        """Scoring modes this model supports."""
        return MODES if self.kind == "zegformer" else ("pixel",)

    def test_augmentation(self, tta: TTAOption = None) -> TTASettings | None:
        """The test-time augmentation a `tta` argument asks for, or None for a single pass.

        Args:
            tta: True: the config's TEST.AUG sizes and flip; False: one plain pass; None: True
                when the config has TEST.AUG.ENABLED True; a TTASettings: those sizes and flip.
        """
        if tta is None:
            tta = self.settings.tta.enabled
        if isinstance(tta, TTASettings):
            return tta
        if not isinstance(tta, bool):
            raise ZegFormerError(f"tta must be True, False, None or a TTASettings, got {tta!r}")
        return self.settings.tta if tta else None

    def describe(self) -> str:
        tag = " (untrained random weights)" if self.untrained else ""
        return f"{self.description}{tag}"

    def predict(self, image, classes: str | Sequence[str], mode: str = "decoupled", *,
                threshold: float = 0.0, progress: ProgressFn | None = None,
                tta: TTAOption = None, plain: bool = False,
                full_maps: bool = False, fast: FastOption = False) -> SegmentationResult:
        """Segment `image` into `classes`.

        Args:
            image: PIL image, H x W x 3 uint8 RGB array (or gray / RGBA / 16-bit), or a path.
            classes: class names, as a list or one comma-separated string ("a | b" = synonyms).
            mode: "decoupled" (ZegFormer's segment-level scoring) or "pixel" (pixel-level).
            threshold: pixels whose best normalised score is below it are left unlabelled (-1).
            progress: optional callback(fraction, description).
            tta: test-time augmentation (see `test_augmentation`): the mean of the passes over
                TEST.AUG.MIN_SIZES (x2 with FLIP), each as slow as one plain prediction.
            plain: run the official algorithm step for step (every CLIP crop encoded, none skipped
                or reused), for benchmarks; the default skips only work that cannot change the
                result by more than `scoring.NEGLIGIBLE_SCORE`, and reuses the CLIP features of
                crops seen before (`crop_features`: the same image with another vocabulary).
            full_maps: resize all K score maps to the image size and take the statistics from
                them (`class_statistics`), the code path before they were taken from the
                working-resolution maps (`map_statistics`); the results are the same (label
                maps bit for bit). For benchmarks and tests.
            fast: the fast approximation (`zegformer.inference.fast`; True or a FastSettings):
                CLIP crops only for the segments carrying most of the score (at most 10),
                weaker look-alike segments borrowing their CLIP logits, the others classified
                by the segment classifier alone, crops of 192 pixels (not 224). Not the
                official numbers: the result's `fast` is True. It only changes the decoupled
                mode with CLIP classification (the other modes have no crops and stay exact,
                `fast` False).
                Measured: README "Speed".

        Returns:
            SegmentationResult with probs K x H x W at the (possibly downscaled) input size
            (computed when first read, unless `full_maps`); `tta_passes` says how many forward
            passes were averaged (1 without TTA).
        """
        with self.lock:
            return self._predict(image, classes, mode, threshold, progress, tta, plain,
                                 full_maps, fast)

    def _predict(self, image, classes: str | Sequence[str], mode: str, threshold: float,
                 progress: ProgressFn | None, tta: TTAOption, plain: bool, full_maps: bool,
                 fast: FastOption) -> SegmentationResult:
        t0 = time.perf_counter()
        names = parse_classes(classes)
        if not 0.0 <= float(threshold) <= 1.0:
            raise ZegFormerError(f"threshold must be between 0 and 1, got {threshold}")
        rgb = decoded = load_image(image)
        original = rgb.shape[:2]
        rgb = limit_size(rgb, self.max_side)
        timings: dict[str, float] = {}
        aug = self.test_augmentation(tta)
        run = dict(timings=timings, progress=progress, tta=aug if aug is not None else False,
                   plain=plain, fast=fast)
        seen = [is_seen(n, self.seen_classes) for n in names]
        probs: Any
        if full_maps:
            probs = self.scores(rgb, names, mode, **run)
            kept_maps = None
            t = time.perf_counter()
            label_map, stats = class_statistics(probs, names, seen, threshold)
        else:
            maps = self.score_maps(rgb, names, mode, **run)
            t = time.perf_counter()
            with torch.inference_mode():
                label_map, stats = map_statistics(maps, names, seen, threshold)
            maps.release()  # a kept result holds only the small model outputs
            probs = _full_probs(maps)
            kept_maps = maps  # another threshold later: `rethreshold.with_threshold`
        timings["statistics"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t0
        return SegmentationResult(
            class_names=names, probs=probs, label_map=label_map, classes=stats, mode=mode,
            timings=timings, model=self.describe(), untrained=self.untrained,
            device=str(self.device), original_size=tuple(original), image=decoded,
            score_maps=kept_maps,
            tta_passes=aug.n_passes if aug is not None else 1,
            fast=self.applies_fast(fast, mode),
        )

    def applies_fast(self, fast: FastOption, mode: str = "decoupled") -> bool:
        """Whether `fast` changes what `mode` computes (the decoupled mode with CLIP crops)."""
        return (resolve_fast(fast) is not None and mode == "decoupled"
                and self.kind == "zegformer" and self.settings.clip_classification)

    @torch.inference_mode()
    def scores(self, rgb: np.ndarray, names: list[str], mode: str = "decoupled", *,
               timings: dict[str, float] | None = None,
               progress: ProgressFn | None = None, tta: TTAOption = None,
               plain: bool = False, fast: FastOption = False) -> np.ndarray:
        """Per-class score maps K x H x W (float32, numpy) for an RGB uint8 image.

        In decoupled mode these are the official model's `sem_seg` for this image and vocabulary
        (with `tta`, the official `SemanticSegmentorWithTTA` average: `zegformer.inference.tta`).
        The mode's function comes from the registry in `zegformer.inference.modes`.
        """
        out = self._run_mode(rgb, names, mode, timings, progress, tta, plain, lazy=False,
                             fast=fast)
        return out.float().cpu().numpy()

    @torch.inference_mode()
    def score_maps(self, rgb: np.ndarray, names: list[str], mode: str = "decoupled", *,
                   timings: dict[str, float] | None = None,
                   progress: ProgressFn | None = None, tta: TTAOption = None,
                   plain: bool = False, fast: FastOption = False) -> ScoreMaps:
        """The scores of `scores` before their resize to the image size (`ScoreMaps`):
        `score_maps(...).full()` equals `scores(...)`; `.channels(idx)` resizes only some classes.
        With test-time augmentation the passes are averaged at the image size (as the official
        model does), so the maps are already full size.
        """
        out = self._run_mode(rgb, names, mode, timings, progress, tta, plain, lazy=True,
                             fast=fast)
        if isinstance(out, ScoreMaps):
            return out
        full = out.float()
        n = len(names)
        return ScoreMaps(lambda: full, tuple(full.shape[-2:]), tuple(full.shape[-2:]),
                         torch.zeros(n, dtype=torch.bool, device=full.device))

    @torch.inference_mode()
    def label_map(self, rgb: np.ndarray, names: list[str], mode: str = "decoupled", *,
                  tta: TTAOption = None, fast: FastOption = False) -> np.ndarray:
        """H x W int32 `scores(...).argmax(0)`, resizing only the classes that can win a pixel."""
        return label_map_from_maps(self.score_maps(rgb, names, mode, tta=tta, fast=fast))

    def _run_mode(self, rgb: np.ndarray, names: list[str], mode: str,
                  timings: dict[str, float] | None, progress: ProgressFn | None,
                  tta: TTAOption, plain: bool, lazy: bool, fast: FastOption = False) -> Any:
        with self.lock:
            return self._run_locked(rgb, names, mode, timings, progress, tta, plain, lazy, fast)

    def _run_locked(self, rgb: np.ndarray, names: list[str], mode: str,
                    timings: dict[str, float] | None, progress: ProgressFn | None,
                    tta: TTAOption, plain: bool, lazy: bool, fast: FastOption) -> Any:
        scoring_mode = resolve_mode(mode, self.kind)
        if plain and resolve_fast(fast) is not None:
            raise ZegFormerError("plain (the official algorithm) and fast (an approximation) "
                                 "exclude each other")
        aug = self.test_augmentation(tta)
        timings = {} if timings is None else timings
        report = progress or (lambda f, d: None)
        seen = torch.tensor([is_seen(n, self.seen_classes) for n in names], device=self.device)
        report(0.05, "encoding class names")

        def text(templates) -> torch.Tensor:
            with self._timer(timings, "text"):
                return self.text(names, templates).to(self.device)

        self.crop_stats = {}  # filled by the decoupled mode
        inputs = ScoringInputs(
            rgb=rgb, names=names, seen=seen, settings=self.settings, model=self.model,
            clip=self.clip, text=text, timer=lambda key: self._timer(timings, key),
            report=report, autocast=self._autocast, plain=plain, crop_stats=self.crop_stats,
            crop_features=self.crop_features, lazy=lazy and aug is None,
            fast=None if plain else resolve_fast(fast), fast_towers=self.fast_towers,
            fast_crop_features=self.fast_crop_features)
        report(0.15, "preprocessing")
        with self._stage_timers(timings):
            out = scoring_mode.fn(inputs) if aug is None else run_tta(scoring_mode.fn, inputs, aug)
        report(1.0, "done")
        return out

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.float16,
                              enabled=self.device.type == "cuda")

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def _timer(self, timings: dict[str, float], key: str) -> Iterator[None]:
        self._sync()
        t = time.perf_counter()
        yield
        self._sync()
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t

    @contextmanager
    def _stage_timers(self, timings: dict[str, float]) -> Iterator[None]:
        """Time the model's stages (`model.stages()`: backbone, pixel decoder, transformer) with
        forward hooks, so that the one `model.forward` call is still reported stage by stage."""
        start: dict[str, float] = {}
        handles = []

        def before(key):
            def hook(module, args):
                self._sync()
                start[key] = time.perf_counter()
            return hook

        def after(key):
            def hook(module, args, output):
                self._sync()
                timings[key] = timings.get(key, 0.0) + time.perf_counter() - start.pop(key)
            return hook

        for key, module in self.model.stages().items():
            handles.append(module.register_forward_pre_hook(before(key)))
            handles.append(module.register_forward_hook(after(key)))
        try:
            yield
        finally:
            for h in handles:
                h.remove()


def _full_probs(maps: ScoreMaps):
    """() -> K x H x W float32 numpy of `maps` (computed again from the small model outputs)."""
    def compute() -> np.ndarray:
        with torch.inference_mode():
            out = maps.full().float().cpu().numpy()
        maps.release()
        return out
    return compute

"""The exact decoupled path's shortcuts, each against the plain official algorithm.

Plain = `clip_segment_logits(..., dedupe=False)` with no `skip`: every crop made and encoded,
`chunk` at a time, as the official code does. Each shortcut (shared crops, skipped negligible
segments, batching) must give the same scores to 1e-5 on a random tiny CLIP, with masks that are
empty, one pixel thick, identical across segments and full-image.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zegformer.inference import scoring
from zegformer.inference.crop_cache import CropFeatureCache
from zegformer.loading.clip import build_clip
from zegformer.modeling.clip_adapter import ClipAdapter

H, W = 48, 64
K = 5
SEEN = torch.tensor([True, True, False, True, False])
STYLES = ("cropmask", "crop", "mask")


@pytest.fixture(scope="module")
def clip() -> ClipAdapter:
    return ClipAdapter(build_clip("tiny", seed=3)).eval()


class CountingTower:
    """Wraps encode_image; records how many crops each call received."""

    def __init__(self, encode):
        self.encode = encode
        self.calls: list[int] = []

    def __call__(self, crops: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(crops))
        return self.encode(crops)


def _rect(y1: int, y2: int, x1: int, x2: int) -> torch.Tensor:
    m = torch.full((H, W), -8.0)
    m[y1:y2 + 1, x1:x2 + 1] = 8.0
    return m


def _masks() -> tuple[torch.Tensor, int]:
    """Q x H x W mask logits covering the awkward cases, and the number of distinct cropmask crops.

    0, 1 empty (same crop: all zeros); 2 one row thick and 3 one pixel (box = whole image, distinct
    content); 4, 5 full image (same crop); 6, 7 the same rectangle; 8 a random blob and 10 the same
    blob with other soft logits (same binary mask, so the same crop, but its own sigmoid in the
    merge); 9 another blob; 11 one column thick.
    """
    g = torch.Generator().manual_seed(0)
    blob = torch.randn(H, W, generator=g) * 3
    rows = [
        torch.full((H, W), -8.0), torch.full((H, W), -3.0),
        _rect(20, 20, 5, 50), _rect(30, 30, 40, 40),
        torch.full((H, W), 6.0), torch.full((H, W), 2.0),
        _rect(5, 30, 10, 40), _rect(5, 30, 10, 40),
        blob, torch.randn(H, W, generator=g) * 3, torch.where(blob > 0, blob + 1.0, blob - 1.0),
        _rect(0, H - 1, 7, 7),
    ]
    return torch.stack(rows), 8


def _image() -> torch.Tensor:
    return torch.randn(3, H, W, generator=torch.Generator().manual_seed(1))


def _text(clip: ClipAdapter) -> torch.Tensor:
    t = torch.randn(K, clip.embed_dim, generator=torch.Generator().manual_seed(2))
    return t / t.norm(dim=-1, keepdim=True)


def _final_scores(seg_logits, clip_logits, masks, *, ensembling=True, all_novel=False):
    """The predictor's merge in float64: probs -> merge -> postprocess -> calibrate."""
    probs = scoring.decoupled_segment_probs(seg_logits.double(), SEEN,
                                            clip_logits=clip_logits.double(),
                                            ensembling=ensembling, all_classes_as_novel=all_novel)
    sem = scoring.semantic_merge(probs, masks.double())
    sem = scoring.postprocess(sem, (H - 5, W - 7), (30, 41))
    return scoring.calibrate(sem, SEEN, 0.1)


# ---------------------------------------------------------------- shared crops and batching


@pytest.mark.parametrize("style", STYLES)
def test_shared_crops_give_the_plain_logits(clip, style):
    masks, distinct = _masks()
    scale = clip.logit_scale
    plain_tower, tower = CountingTower(clip.encode_image), CountingTower(clip.encode_image)
    plain = scoring.clip_segment_logits(_image(), masks, plain_tower, _text(clip), scale,
                                        style=style, chunk=5, dedupe=False)
    stats: dict[str, int] = {}
    fast = scoring.clip_segment_logits(_image(), masks, tower, _text(clip), scale, style=style,
                                       chunk=5, stats=stats)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=0)
    assert plain_tower.calls == [5, 5, 2]  # official: every crop, `chunk` at a time
    assert sum(tower.calls) == stats["encoded"] < len(masks)
    assert len(tower.calls) == 1  # all 8 distinct crops in one call (batch_size 20)
    if style == "cropmask":
        assert stats == {"segments": 12, "skipped": 0, "distinct": distinct, "cached": 0,
                         "encoded": distinct}
    if style == "crop":  # the plain crop depends on the box only
        boxes = scoring.mask_boxes(masks.sigmoid() > 0.5)
        assert stats["encoded"] == len({tuple(b.tolist()) for b in boxes}) < distinct
    # Equal crops get bit-equal logits (one encoding copied), different crops different ones.
    assert torch.equal(fast[0], fast[1]) and torch.equal(fast[6], fast[7])
    if style != "crop":  # one row vs one pixel: both whole-image boxes, different content
        assert not torch.equal(fast[2], fast[3])


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_batch_size_does_not_change_the_logits(clip, batch_size):
    masks, distinct = _masks()
    plain = scoring.clip_segment_logits(_image(), masks, clip.encode_image, _text(clip),
                                        clip.logit_scale, dedupe=False)
    tower = CountingTower(clip.encode_image)
    out = scoring.clip_segment_logits(_image(), masks, tower, _text(clip), clip.logit_scale,
                                      batch_size=batch_size)
    torch.testing.assert_close(out, plain, atol=1e-5, rtol=0)
    assert len(tower.calls) == math.ceil(distinct / batch_size)
    assert max(tower.calls) <= batch_size


def test_features_of_seen_crops_are_reused_for_a_new_vocabulary(clip):
    """The masks do not depend on the class names: a second vocabulary on the same image gives
    the same crops, whose cached features give the plain logits against the new text."""
    masks, distinct = _masks()
    cache = CropFeatureCache()
    tower = CountingTower(clip.encode_image)
    first: dict[str, int] = {}
    scoring.clip_segment_logits(_image(), masks, tower, _text(clip), clip.logit_scale,
                                feature_cache=cache, stats=first)
    assert first["encoded"] == distinct == len(cache)
    other_text = _text(clip).flip(0)[:3]
    second: dict[str, int] = {}
    out = scoring.clip_segment_logits(_image(), masks, tower, other_text, clip.logit_scale,
                                      feature_cache=cache, stats=second)
    assert second == {"segments": 12, "skipped": 0, "distinct": distinct, "cached": distinct,
                      "encoded": 0}
    assert sum(tower.calls) == distinct  # nothing encoded the second time
    plain = scoring.clip_segment_logits(_image(), masks, clip.encode_image, other_text,
                                        clip.logit_scale, dedupe=False)
    torch.testing.assert_close(out, plain, atol=1e-5, rtol=0)
    # Another image: other crops, encoded (the empty masks' all-zero crop is the one reused).
    third: dict[str, int] = {}
    scoring.clip_segment_logits(_image() + 1.0, masks, tower, other_text, clip.logit_scale,
                                feature_cache=cache, stats=third)
    assert third["cached"] == 1 and third["encoded"] == distinct - 1


def test_crop_feature_cache_is_a_bounded_lru():
    cache = CropFeatureCache(max_entries=2)
    cache.put(b"a", torch.ones(3))
    cache.put(b"b", torch.zeros(3))
    assert cache.get(b"a") is not None  # refreshes a
    cache.put(b"c", torch.ones(3))
    assert cache.get(b"b") is None and cache.get(b"a") is not None and len(cache) == 2
    CropFeatureCache(max_entries=0).put(b"a", torch.ones(3))
    assert cache.hits == 2 and cache.misses == 1


def test_dedupe_alone_keeps_the_final_scores(clip):
    masks, _ = _masks()
    seg_logits = torch.randn(len(masks), K + 1, generator=torch.Generator().manual_seed(4)) * 3
    args = (_image(), masks, clip.encode_image, _text(clip), clip.logit_scale)
    plain = _final_scores(seg_logits, scoring.clip_segment_logits(*args, dedupe=False), masks)
    fast = _final_scores(seg_logits, scoring.clip_segment_logits(*args), masks)
    assert (fast - plain).abs().max() < 1e-5


# ---------------------------------------------------------------- the bound behind skipping


@pytest.mark.parametrize("ensembling, all_novel", [(True, False), (False, False), (True, True),
                                                   (False, True)])
def test_probability_bounds_hold_for_any_clip_output(ensembling, all_novel):
    g = torch.Generator().manual_seed(5)
    q, scale = 400, 100.0
    seg = torch.randn(q, K + 1, generator=g, dtype=torch.float64) * 30
    seg[:, -1] += torch.linspace(-50, 250, q, dtype=torch.float64)  # up to a certain "no object"
    cos = torch.rand(q, K, generator=g, dtype=torch.float64) * 2 - 1
    cos[:50] = 1.0  # CLIP as sure as it can be of every class
    cos[50:100] = -1.0
    cos[100:150, 0] = 1.0
    cos[100:150, 1:] = -1.0  # all of CLIP's mass on one seen class
    cos[150:200, 2] = 1.0
    cos[150:200, :2] = -1.0  # ... on one novel class
    probs = scoring.decoupled_segment_probs(seg, SEEN, clip_logits=scale * cos,
                                            ensembling=ensembling, all_classes_as_novel=all_novel)
    bounds = scoring.segment_prob_bounds(seg, SEEN, logit_scale=scale, ensembling=ensembling,
                                         all_classes_as_novel=all_novel)
    assert bounds.shape == (q, K) and bounds.dtype == torch.float64
    assert (probs <= bounds * (1 + 1e-9) + 1e-300).all()
    if ensembling or all_novel:  # the bounds named in the docstring
        p = seg.softmax(-1)[:, :-1]
        lam = 2 / 3
        loose = p ** (1 - lam) if all_novel else torch.where(SEEN, p ** lam, p ** (1 - lam))
        assert (bounds <= loose * (1 + 1e-12)).all()
    # The bound is not vacuous: far from 1 where "no object" wins.
    assert bounds[-50:].max() < 1e-30


# ---------------------------------------------------------------- skipping negligible segments


def _negligible_case():
    """Masks with segments that cannot matter: a certain "no object" (3, 7), a mask far below
    threshold everywhere (0), and both (1)."""
    masks, _ = _masks()
    masks[0] = -60.0
    masks[1] = -45.0
    seg = torch.randn(len(masks), K + 1, generator=torch.Generator().manual_seed(6)) * 2
    seg[[1, 3, 7], -1] = 400.0
    return masks, seg


@pytest.mark.parametrize("ensembling, all_novel", [(True, False), (False, False), (True, True)])
def test_skipping_negligible_segments_keeps_the_scores(clip, ensembling, all_novel):
    masks, seg = _negligible_case()
    scale = clip.logit_scale
    skip = scoring.negligible_segments(seg, masks, SEEN, logit_scale=scale, ensembling=ensembling,
                                       all_classes_as_novel=all_novel)
    assert skip.tolist() == [i in (0, 1, 3, 7) for i in range(len(masks))]
    args = (_image(), masks, None, _text(clip), scale)
    tower = CountingTower(clip.encode_image)
    stats: dict[str, int] = {}
    logits = scoring.clip_segment_logits(*args[:2], tower, *args[3:], skip=skip, stats=stats)
    plain = scoring.clip_segment_logits(*args[:2], clip.encode_image, *args[3:], dedupe=False)
    assert torch.isneginf(logits[skip]).all() and torch.isfinite(logits[~skip]).all()
    assert stats["skipped"] == 4 and sum(tower.calls) == stats["encoded"] == 6
    kw = dict(ensembling=ensembling, all_novel=all_novel)
    diff = (_final_scores(seg, logits, masks, **kw) - _final_scores(seg, plain, masks, **kw)).abs()
    assert diff.max() <= scoring.NEGLIGIBLE_SCORE


def test_a_loose_tolerance_skips_more_and_stays_within_it(clip):
    """With a large tolerance segments that do matter get skipped: the change is real but never
    more than the tolerance (the sum of the skipped segments' bounds)."""
    masks, seg = _negligible_case()
    scale = clip.logit_scale
    tol = 0.3
    skip = scoring.negligible_segments(seg, masks, SEEN, logit_scale=scale, tol=tol)
    assert skip.sum() > 4
    args = (_image(), masks, clip.encode_image, _text(clip), scale)
    diff = (_final_scores(seg, scoring.clip_segment_logits(*args, skip=skip), masks)
            - _final_scores(seg, scoring.clip_segment_logits(*args, dedupe=False), masks)).abs()
    assert 1e-6 < diff.max() <= tol


def test_nothing_is_skipped_without_a_tolerance_or_when_all_segments_matter(clip):
    masks, seg = _negligible_case()
    scale = clip.logit_scale
    assert not scoring.negligible_segments(seg, masks, SEEN, logit_scale=scale, tol=0).any()
    seg[:, -1] = -5.0  # no segment is "no object"
    masks = masks.clamp(min=1.0)  # every mask covers the image
    assert not scoring.negligible_segments(seg, masks, SEEN, logit_scale=scale).any()


def test_all_segments_skipped(clip):
    masks = torch.full((4, H, W), -80.0)
    seg = torch.zeros(4, K + 1)
    skip = scoring.negligible_segments(seg, masks, SEEN, logit_scale=clip.logit_scale)
    assert skip.all()
    tower = CountingTower(clip.encode_image)
    logits = scoring.clip_segment_logits(_image(), masks, tower, _text(clip), clip.logit_scale,
                                         skip=skip)
    assert tower.calls == [] and logits.shape == (4, K) and torch.isneginf(logits).all()
    probs = scoring.decoupled_segment_probs(seg, SEEN, clip_logits=logits)
    assert torch.equal(probs, torch.zeros(4, K))


# ---------------------------------------------------------------- through the predictor


@pytest.fixture()
def rigged_predictor(tiny_predictor, monkeypatch):
    """The tiny predictor with segments made empty, full, identical and certain "no object"."""
    model = tiny_predictor.model
    forward = model.forward

    def rigged_forward(*args, **kwargs):
        out = forward(*args, **kwargs)
        m = out.pred_masks.clone()  # 1 x Q x h x w
        m[0, 0] = -60.0  # empty and negligible
        m[0, 1] = -9.0  # empty
        m[0, 2] = 9.0  # full image
        m[0, 3] = m[0, 4]  # identical
        out.pred_masks = m
        logits = out.pred_logits.clone()
        logits[0, 5, -1] = 500.0  # certain "no object"
        out.pred_logits = logits
        return out

    monkeypatch.setattr(model, "forward", rigged_forward)
    return tiny_predictor


def test_predictor_exact_path_equals_plain(rigged_predictor):
    image = np.random.default_rng(7).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    names = ["cat", "dog", "grass", "sky"]
    rigged_predictor.crop_features.clear()
    plain = rigged_predictor.predict(image, names, plain=True)
    plain_stats = dict(rigged_predictor.crop_stats)
    assert len(rigged_predictor.crop_features) == 0  # the plain path neither reads nor fills it
    fast = rigged_predictor.predict(image, names)
    stats = dict(rigged_predictor.crop_stats)
    q = plain_stats["segments"]
    assert plain_stats["skipped"] == 0 and plain_stats["encoded"] == q
    assert stats["skipped"] == 2  # 0 (empty, far below threshold) and 5 ("no object")
    assert stats["encoded"] == stats["distinct"] == q - 3  # and 3 shares 4's crop
    assert np.abs(fast.probs - plain.probs).max() < 1e-5
    assert np.array_equal(fast.label_map, plain.label_map)
    # Another vocabulary on the same image: no crop encoded, the plain result all the same.
    other = ["person", "tree", "water"]
    again = rigged_predictor.predict(image, other)
    assert rigged_predictor.crop_stats["encoded"] == 0
    assert rigged_predictor.crop_stats["cached"] == q - 3
    plain_other = rigged_predictor.predict(image, other, plain=True)
    assert np.abs(again.probs - plain_other.probs).max() < 1e-5


def _official_boxes(binary: torch.Tensor) -> torch.Tensor:
    """The official box rule written out: argmax / argmin over cumulative counts."""
    h, w = binary.shape[-2:]
    out = []
    for m in binary:
        def span(counts):
            c = counts.cumsum(0).float()
            return int(torch.where(c == 0, torch.inf, c).argmin()), int(c.argmax())
        x1, x2 = span(m.sum(0))
        y1, y2 = span(m.sum(1))
        out.append([x1, y1, x2, y2] if (y2 - y1) * (x2 - x1) != 0 else [0, 0, w, h])
    return torch.tensor(out, dtype=torch.float32)


def test_mask_boxes_equal_the_official_cumsum_rule():
    g = torch.Generator().manual_seed(8)
    masks, _ = _masks()
    sparse = torch.rand(40, H, W, generator=g) > 0.999  # a few scattered pixels, often 0 or 1
    blobs = torch.rand(40, H, W, generator=g) > 0.5
    binary = torch.cat([masks > 0, sparse, blobs, torch.zeros(1, H, W, dtype=torch.bool)])
    assert torch.equal(scoring.mask_boxes(binary), _official_boxes(binary))

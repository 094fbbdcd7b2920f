"""Statistics from the working-resolution maps (`map_statistics`, the default of `predict`) equal
the full-size path (`class_statistics` on all K maps at the image size, `predict(full_maps=True)`):
label maps bit for bit, confidences and areas within 1e-6, `probs` computed lazily and equal."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zegformer.data.vocabularies import load_vocabulary
from zegformer.inference.result import UNLABELED, class_statistics
from zegformer.inference.score_maps import ScoreMaps
from zegformer.inference.statistics import block_bounds, label_map_from_maps, map_statistics

RNG = np.random.default_rng(3)
LARGE = RNG.integers(0, 256, (176, 250, 3), dtype=np.uint8)  # above the tiny model's 160 short side
SMALL = RNG.integers(0, 256, (72, 96, 3), dtype=np.uint8)  # below it: the maps are downscaled


def _assert_same(new_labels, new_stats, old_labels, old_stats):
    np.testing.assert_array_equal(new_labels, old_labels)
    assert [s.present for s in new_stats] == [s.present for s in old_stats]
    assert [(s.index, s.name, s.seen) for s in new_stats] == \
        [(s.index, s.name, s.seen) for s in old_stats]
    np.testing.assert_allclose([s.confidence for s in new_stats],
                               [s.confidence for s in old_stats], rtol=0, atol=1e-6)
    np.testing.assert_allclose([s.area_fraction for s in new_stats],
                               [s.area_fraction for s in old_stats], rtol=0, atol=1e-6)


def _same_results(new, old):
    _assert_same(new.label_map, new.classes, old.label_map, old.classes)


def _median_best(result) -> float:
    """A threshold that leaves about half of the pixels unlabelled."""
    probs = np.clip(result.probs, 0, None)
    norm = probs.max(0) / np.maximum(probs.sum(0), 1e-12)
    return float(np.median(norm))


@pytest.fixture(scope="module")
def baseline_predictor():
    from zegformer import load_random_predictor

    return load_random_predictor(device="cpu", opts=[
        "MODEL.META_ARCHITECTURE", "SemanticSegmentorGzero",
        "MODEL.SEM_SEG_HEAD.NAME", "ZeroshotPerPixelBaselineHead"])


@pytest.fixture(scope="module")
def ade_names():
    return load_vocabulary("ade20k_full_847")["classes"]


@pytest.fixture(scope="module")
def coco_names():
    return load_vocabulary("coco_stuff_171")["classes"]


# ---------------------------------------------------------------- the tiny model, real vocabularies


def test_847_classes_decoupled_matches_full_size_path(tiny_predictor, ade_names):
    old = tiny_predictor.predict(LARGE, ade_names, mode="decoupled", full_maps=True)
    new = tiny_predictor.predict(LARGE, ade_names, mode="decoupled")
    _same_results(new, old)
    assert not new.probs_computed  # nothing asked for K x H x W yet
    np.testing.assert_array_equal(new.probs, old.probs)  # computed now, the same numbers
    assert new.probs_computed and new.probs.shape == (847, 176, 250)


@pytest.mark.parametrize("mode", ["decoupled", "pixel"])
def test_171_classes_with_a_threshold(tiny_predictor, coco_names, mode):
    base = tiny_predictor.predict(LARGE, coco_names, mode=mode, full_maps=True)
    threshold = _median_best(base)
    old = tiny_predictor.predict(LARGE, coco_names, mode=mode, threshold=threshold, full_maps=True)
    new = tiny_predictor.predict(LARGE, coco_names, mode=mode, threshold=threshold)
    unlabelled = (old.label_map == UNLABELED).mean()
    assert 0.2 < unlabelled < 0.8  # the threshold really splits the image
    _same_results(new, old)
    np.testing.assert_array_equal(new.probs, old.probs)


@pytest.mark.parametrize("mode", ["decoupled", "pixel"])
def test_image_smaller_than_the_model_input(tiny_predictor, coco_names, mode):
    old = tiny_predictor.predict(SMALL, coco_names, mode=mode, full_maps=True)
    new = tiny_predictor.predict(SMALL, coco_names, mode=mode)
    _same_results(new, old)


def test_baseline_pixel_mode(baseline_predictor, coco_names):
    old = baseline_predictor.predict(LARGE, coco_names[:40], mode="pixel", full_maps=True)
    new = baseline_predictor.predict(LARGE, coco_names[:40], mode="pixel")
    _same_results(new, old)
    np.testing.assert_array_equal(new.probs, old.probs)


def test_label_map_and_score_maps_equal_scores(tiny_predictor, coco_names):
    coco_names = coco_names[:60]
    for mode in ("decoupled", "pixel"):
        full = tiny_predictor.scores(LARGE, coco_names, mode)
        maps = tiny_predictor.score_maps(LARGE, coco_names, mode)
        with torch.inference_mode():
            np.testing.assert_array_equal(maps.full().numpy(), full)
            np.testing.assert_array_equal(maps.channels(torch.tensor([3, 50, 59])).numpy(),
                                          full[[3, 50, 59]])
        np.testing.assert_array_equal(tiny_predictor.label_map(LARGE, coco_names, mode),
                                      full.argmax(0))


def test_lazy_probs_survive_pickling(tiny_predictor):
    r = tiny_predictor.predict(LARGE, "cat, dog, grass, sky", mode="decoupled")
    copy = pickle.loads(pickle.dumps(r))
    np.testing.assert_array_equal(copy.probs, r.probs)
    np.testing.assert_array_equal(copy.label_map, r.label_map)


# ---------------------------------------------------------------- made-up maps: the corner cases


def _maps(low: torch.Tensor, size: tuple[int, int], seen=None, gamma: float = 0.0,
          pad: int = 0) -> ScoreMaps:
    k, h, w = low.shape
    padded = F.pad(low, (0, pad, 0, pad), value=7.0)  # padding must never be read
    seen_t = torch.zeros(k, dtype=torch.bool) if seen is None else torch.tensor(seen)
    return ScoreMaps(lambda: padded, (h, w), size, seen_t, gamma)


def _smooth(k: int, h: int, w: int, seed: int, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(k, max(h // 4, 1), max(w // 4, 1), generator=g)
    fine = F.interpolate(coarse[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    return lo + (hi - lo) * (0.9 * fine + 0.1 * torch.rand(k, h, w, generator=g))


def _check(maps: ScoreMaps, threshold: float = 0.0, seen=None):
    k = maps.num_classes
    names = [f"c{i}" for i in range(k)]
    flags = seen or [False] * k
    with torch.inference_mode():
        full = maps.full().numpy()
        new = map_statistics(maps, names, flags, threshold)
        assert np.array_equal(label_map_from_maps(maps), full.argmax(0))
    old = class_statistics(full, names, flags, threshold)
    _assert_same(*new, *old)
    return new


@pytest.mark.parametrize("size", [(37, 53), (16, 20), (9, 13), (5, 7)])
def test_made_up_maps_up_down_and_same_size(size):
    low = _smooth(60, 16, 20, seed=1)
    _check(_maps(low, size, pad=3))


def test_calibration_makes_classes_change_sign():
    k = 40
    low = _smooth(k, 12, 18, seed=2, hi=0.3)
    seen = [i % 2 == 0 for i in range(k)]
    maps = _maps(low, (40, 61), seen=seen, gamma=0.1)
    full = maps.full()
    assert (full < 0).any() and (full > 0).any()  # some calibrated classes cross zero
    labels, _ = _check(maps, seen=seen)
    _check(maps, threshold=0.06, seen=seen)
    assert len(np.unique(labels)) > 1


def test_ties_go_to_the_first_class():
    low = _smooth(6, 10, 10, seed=4)
    low[4] = low[1]  # class 4 equals class 1 everywhere: it must never win
    low[5] = low[1]
    labels, stats = _check(_maps(low, (31, 29)))
    assert not (labels == 4).any() and not (labels == 5).any()
    assert not stats[4].present


def test_equal_classes_within_and_across_chunks_go_to_the_first():
    low = _smooth(20, 10, 12, seed=12)
    low[3] += 0.6  # class 3 wins most pixels ...
    for copy in (5, 12, 13):  # ... and its copies (5 in its chunk of 8, 12 and 13 in the next)
        low[copy] = low[3]
    labels, stats = _check(_maps(low, (31, 37)))
    assert (labels == 3).mean() > 0.5
    assert not np.isin(labels, [5, 12, 13]).any()
    assert not any(stats[i].present for i in (5, 12, 13))


def test_pixels_where_every_score_is_negative():
    low = _smooth(8, 10, 12, seed=5, lo=-1.0, hi=1.0)
    low[:, :5] -= 3.0  # the top half is negative for every class: normalised scores are 1/K
    labels, stats = _check(_maps(low, (25, 30)))
    _check(_maps(low, (25, 30)), threshold=0.3)
    assert all(s.confidence >= 1 / 8 - 1e-6 for s in stats)


def test_one_dominant_class_and_many_absent_ones():
    low = _smooth(300, 20, 24, seed=6, hi=0.01)
    low[7] += 1.0
    labels, stats = _check(_maps(low, (61, 70)))
    assert set(np.unique(labels)) == {7}
    assert sum(s.present for s in stats) == 1


def test_nan_scores_take_the_full_size_path():
    low = _smooth(5, 8, 8, seed=7)
    low[2, 3, 3] = float("nan")
    maps = _maps(low, (20, 20))
    with torch.inference_mode():
        full = maps.full().numpy()
        labels, _ = map_statistics(maps, list("abcde"), [False] * 5)
    np.testing.assert_array_equal(labels, class_statistics(full, list("abcde"), [False] * 5)[0])


def test_block_bounds_enclose_every_resized_value():
    low = _smooth(4, 21, 19, seed=8, lo=-1, hi=1)
    bmin, bmax = block_bounds(low, 8)
    full = F.interpolate(low[None], size=(50, 47), mode="bilinear", align_corners=False)[0]
    scale_y, scale_x = 21 / 50, 19 / 47
    for y in range(50):
        for x in range(47):
            by = int(max((y + 0.5) * scale_y - 0.5, 0)) // 8
            bx = int(max((x + 0.5) * scale_x - 0.5, 0)) // 8
            assert (bmin[:, by, bx] - 1e-6 <= full[:, y, x]).all()
            assert (full[:, y, x] <= bmax[:, by, bx] + 1e-6).all()


@pytest.mark.parametrize("k", [3, 5, 40])
def test_any_subset_of_classes_resizes_like_the_full_maps(k):
    low = _smooth(k, 13, 17, seed=9)
    maps = _maps(low, (29, 41), pad=2)
    with torch.inference_mode():
        full = maps.full()
        g = torch.Generator().manual_seed(k)
        for n in range(1, min(k, 8) + 1):
            idx = torch.randperm(k, generator=g)[:n].sort().values
            assert torch.equal(maps.channels(idx), full[idx]), n
            assert torch.equal(maps.channels(slice(0, n)), full[:n]), n


def test_replace_keeps_probs_lazy(tiny_predictor):
    r = tiny_predictor.predict(LARGE, "cat, dog, grass, sky", mode="decoupled")
    copy = r.replace(mode="decoupled", timings={})
    assert not r.probs_computed and not copy.probs_computed
    np.testing.assert_array_equal(copy.probs, r.probs)
    assert copy.label_map is r.label_map and copy.timings == {}

"""Decoupled scores merged at the image size (`ScoreMaps.factors`): the Q segment masks resized
once, then the classes merged a block at a time. Checked here: the same scores as the official
order (merge at the working resolution, then resize) to float rounding; `channels(idx)` equal to
`full()[idx]` bit for bit for any classes; the statistics equal to the full-size path; and the
predictor taking this path only when the image is no larger than the maps and K > Q."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zegformer.data.vocabularies import load_vocabulary
from zegformer.inference.result import class_statistics
from zegformer.inference.score_maps import MERGE_BLOCK, ScoreMaps
from zegformer.inference.statistics import label_map_from_maps, map_statistics


def _factored(q: int, k: int, crop: tuple[int, int], size: tuple[int, int], seed: int,
              pad: int = 3, gamma: float = 0.0, seen_every: int = 0) -> ScoreMaps:
    """Maps like the decoupled mode's: P(class | segment) (Q x K, rows sum to <= 1) times
    sigmoid masks (Q x h' x w', smooth, padded by `pad` rows and columns)."""
    g = torch.Generator().manual_seed(seed)
    probs = (3 * torch.randn(q, k + 1, generator=g)).softmax(1)[:, :k]
    h, w = crop
    coarse = torch.randn(q, max(h // 4, 2), max(w // 4, 2), generator=g) * 4
    logits = F.interpolate(coarse[None], size=(h + pad, w + pad), mode="bilinear",
                           align_corners=False)[0]
    masks = logits.sigmoid()
    seen = torch.tensor([seen_every > 0 and i % seen_every == 0 for i in range(k)])
    return ScoreMaps(lambda: torch.einsum("qk,qhw->khw", probs, masks), crop, size, seen, gamma,
                     nonnegative=True, factors=lambda: (probs, masks))


def _official_order(maps: ScoreMaps) -> ScoreMaps:
    """The same maps without factors: merged at the working resolution, then resized."""
    return dataclasses.replace(maps, factors=None, _scores=None, _full=None,
                               _resized_factors=None, _block=None)


def _assert_same_labels_where_decided(labels: np.ndarray, scores: np.ndarray) -> None:
    """Equal argmax wherever the best class leads the second by more than float rounding."""
    top2 = np.sort(scores, axis=0)[-2:]
    decided = top2[1] - top2[0] > 1e-5
    assert decided.mean() > 0.99
    np.testing.assert_array_equal(labels[decided], scores.argmax(0)[decided])


@pytest.mark.parametrize("size", [(23, 31), (40, 52), (17, 52)])
def test_merging_at_the_image_size_gives_the_official_scores(size):
    maps = _factored(q=12, k=150, crop=(40, 52), size=size, seed=1)
    assert maps.merged_at_image_size
    with torch.inference_mode():
        merged = maps.full()
        official = _official_order(maps).full()
        assert maps._scores is None  # the K working-resolution maps were never built
    assert merged.shape == (150, *size)
    torch.testing.assert_close(merged, official, rtol=0, atol=1e-6)
    _assert_same_labels_where_decided(merged.numpy().argmax(0), official.numpy())


def test_larger_images_keep_the_official_order():
    maps = _factored(q=12, k=150, crop=(20, 26), size=(30, 40), seed=2)
    assert not maps.merged_at_image_size
    with torch.inference_mode():
        assert torch.equal(maps.full(), _official_order(maps).full())


def test_any_classes_come_out_as_in_the_full_maps():
    k = 2 * MERGE_BLOCK + 22  # three blocks, the last one short
    maps = _factored(q=10, k=k, crop=(24, 30), size=(19, 23), seed=3)
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        full = maps.full().clone()
        picks = [torch.randperm(k, generator=g)[:n].sort().values for n in (1, 3, 8, 40, k)]
        picks += [torch.tensor([k - 1, 0, 70, 70]),  # any order, repeats
                  torch.arange(MERGE_BLOCK - 3, MERGE_BLOCK + 5)]  # across a block boundary
        for idx in picks:
            assert torch.equal(maps.channels(idx), full[idx]), idx.tolist()
        for part in (slice(0, 8), slice(60, 68), slice(120, k), slice(5, 6)):
            assert torch.equal(maps.channels(part), full[part]), part
        maps.release()
        assert torch.equal(maps.channels(torch.tensor([7, 130])), full[[7, 130]])


@pytest.mark.parametrize("threshold", [0.0, 0.05])
def test_statistics_equal_the_full_size_path(threshold):
    k = 140
    maps = _factored(q=16, k=k, crop=(30, 41), size=(26, 33), seed=4, gamma=0.02, seen_every=3)
    names, seen = [f"c{i}" for i in range(k)], [i % 3 == 0 for i in range(k)]
    with torch.inference_mode():
        full = maps.full().numpy()
        assert (full < 0).any()  # calibration makes some seen classes negative
        labels, stats = map_statistics(maps, names, seen, threshold)
        np.testing.assert_array_equal(label_map_from_maps(maps), full.argmax(0))
    old_labels, old_stats = class_statistics(full, names, seen, threshold)
    np.testing.assert_array_equal(labels, old_labels)
    assert len(np.unique(labels)) > 3
    np.testing.assert_allclose([s.confidence for s in stats], [s.confidence for s in old_stats],
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose([s.area_fraction for s in stats],
                               [s.area_fraction for s in old_stats], rtol=0, atol=1e-6)


def test_the_predictor_merges_small_images_at_their_size(tiny_predictor):
    names = load_vocabulary("coco_stuff_171")["classes"]  # more classes than the 10 queries
    image = np.random.default_rng(5).integers(0, 256, (72, 96, 3), dtype=np.uint8)
    maps = tiny_predictor.score_maps(image, names, "decoupled")
    assert maps.merged_at_image_size and maps._scores is None
    with torch.inference_mode():
        merged = maps.full().numpy()
        official = _official_order(maps).full().numpy()
    np.testing.assert_allclose(merged, official, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(merged, tiny_predictor.scores(image, names, "decoupled"))
    result = tiny_predictor.predict(image, names, mode="decoupled")
    _assert_same_labels_where_decided(result.label_map, official)
    # Fewer classes than queries: nothing to gain, the official order stays.
    assert not tiny_predictor.score_maps(image, names[:6], "decoupled").merged_at_image_size

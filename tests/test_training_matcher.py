"""Hungarian matcher: brute force over every assignment on small cases (costs recomputed pair by
pair, independently of the einsum code), the nearest downsampling of targets, padding, empty
targets, bad input, and the official matchings of both golden files."""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zegformer.errors import ZegFormerError
from zegformer.training.matcher import HungarianMatcher

DATA = Path(__file__).resolve().parent / "data" / "training"


def _pair_cost(logits, pred_mask, label, target_mask, w_class=1.0, w_mask=20.0, w_dice=1.0):
    """The official matching cost of ONE query and ONE target (h x w target given)."""
    p = torch.softmax(logits.double(), -1)[label]
    x, y = pred_mask.double().flatten(), target_mask.double().flatten()
    s = torch.sigmoid(x)
    focal_each = torch.where(y > 0.5, 0.25 * (1 - s) ** 2 * -torch.log(s),
                             0.75 * s ** 2 * -torch.log(1 - s))
    dice = 1 - (2 * (s * y).sum() + 1) / (s.sum() + y.sum() + 1)
    return float(-w_class * p + w_mask * focal_each.mean() + w_dice * dice)


def _brute_force(cost: np.ndarray) -> tuple[list[int], list[int]]:
    """The cheapest one-to-one assignment by trying all of them: (queries, targets) sorted."""
    num_q, num_t = cost.shape
    best, best_pairs = math.inf, None
    if num_t <= num_q:
        for qs in itertools.permutations(range(num_q), num_t):  # query of each target
            total = sum(cost[q, t] for t, q in enumerate(qs))
            if total < best:
                best, best_pairs = total, sorted((q, t) for t, q in enumerate(qs))
    else:
        for ts in itertools.permutations(range(num_t), num_q):  # target of each query
            total = sum(cost[q, t] for q, t in enumerate(ts))
            if total < best:
                best, best_pairs = total, sorted(enumerate(ts))
    return [q for q, _ in best_pairs], [t for _, t in best_pairs]


@pytest.mark.parametrize("num_queries,num_targets,seed", [
    (4, 1, 0), (4, 3, 1), (5, 5, 2), (6, 4, 3), (3, 5, 4), (2, 2, 5)])
def test_matches_brute_force(num_queries, num_targets, seed):
    g = torch.Generator().manual_seed(seed)
    k, h, w = 4, 3, 5
    logits = torch.randn(1, num_queries, k + 1, generator=g) * 2
    masks = torch.randn(1, num_queries, h, w, generator=g) * 3
    labels = torch.randint(0, k, (num_targets,), generator=g)
    tmasks = torch.rand(num_targets, h, w, generator=g) > 0.5
    (rows, cols), = HungarianMatcher()({"pred_logits": logits, "pred_masks": masks},
                                       [{"labels": labels, "masks": tmasks}])
    cost = np.array([[_pair_cost(logits[0, q], masks[0, q], labels[t], tmasks[t])
                      for t in range(num_targets)] for q in range(num_queries)])
    want_q, want_t = _brute_force(cost)
    assert rows.tolist() == want_q and cols.tolist() == want_t
    assert rows.dtype == cols.dtype == torch.int64
    assert len(rows) == min(num_queries, num_targets)


def test_cost_weights_change_the_winner():
    """Query 0 has the right class but a wrong mask, query 1 the right mask but a wrong class:
    the class-only matcher picks 0, the mask-only matcher picks 1."""
    logits = torch.tensor([[[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]]])
    target = torch.tensor([[[True, False], [True, False]]])
    masks = torch.stack([(~target[0]).float() * 8 - 4, target[0].float() * 8 - 4])[None]
    out = {"pred_logits": logits, "pred_masks": masks}
    tgt = [{"labels": torch.tensor([0]), "masks": target}]
    assert HungarianMatcher(1, 0, 0)(out, tgt)[0][0].tolist() == [0]
    assert HungarianMatcher(0, 20, 1)(out, tgt)[0][0].tolist() == [1]
    assert HungarianMatcher(0, 0, 1)(out, tgt)[0][0].tolist() == [1]


def test_targets_are_downsampled_nearest_to_the_prediction_size():
    """H x W = 7 x 8 targets against 3 x 4 predictions: the cost equals the cost against the
    target sampled at rows floor(i * 7 / 3) = 0, 2, 4 and columns floor(j * 8 / 4) = 0, 2, 4, 6."""
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(5, 4, generator=g)
    pred = torch.randn(5, 3, 4, generator=g)
    labels = torch.tensor([0, 2])
    big = (torch.rand(2, 7, 8, generator=g) > 0.5).float()
    small = big[:, [0, 2, 4]][:, :, [0, 2, 4, 6]]
    m = HungarianMatcher()
    got = m.cost_matrix(logits, pred, labels, big)
    want = m.cost_matrix(logits, pred, labels, small)
    assert torch.equal(got, want)
    by_pair = torch.tensor([[_pair_cost(logits[q], pred[q], labels[t], small[t])
                             for t in range(2)] for q in range(5)], dtype=torch.float64)
    assert torch.allclose(got.double(), by_pair, rtol=1e-5, atol=1e-6)
    # and not a bilinear / area resize
    area = F.interpolate(big[:, None], size=(3, 4), mode="area")[:, 0]
    assert not torch.allclose(got, m.cost_matrix(logits, pred, labels, area))


def test_targets_of_different_sizes_are_zero_padded_to_the_largest():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 4, generator=g)
    masks = torch.randn(2, 4, 4, 6, generator=g)
    t0 = torch.rand(2, 8, 12, generator=g) > 0.5
    t1 = torch.rand(3, 6, 10, generator=g) > 0.5
    padded1 = torch.zeros(3, 8, 12, dtype=torch.bool)
    padded1[:, :6, :10] = t1
    out = {"pred_logits": logits, "pred_masks": masks}
    m = HungarianMatcher()
    got = m(out, [{"labels": torch.tensor([0, 1]), "masks": t0},
                  {"labels": torch.tensor([2, 0, 1]), "masks": t1}])
    want = m(out, [{"labels": torch.tensor([0, 1]), "masks": t0},
                   {"labels": torch.tensor([2, 0, 1]), "masks": padded1}])
    for (a, b), (c, d) in zip(got, want):
        assert torch.equal(a, c) and torch.equal(b, d)


def test_images_without_targets_get_empty_matches():
    g = torch.Generator().manual_seed(1)
    out = {"pred_logits": torch.randn(2, 3, 4, generator=g),
           "pred_masks": torch.randn(2, 3, 2, 2, generator=g)}
    targets = [{"labels": torch.zeros(0, dtype=torch.int64),
                "masks": torch.zeros(0, 4, 4, dtype=torch.bool)},
               {"labels": torch.tensor([1]), "masks": torch.ones(1, 4, 4, dtype=torch.bool)}]
    (r0, c0), (r1, c1) = HungarianMatcher()(out, targets)
    assert r0.numel() == c0.numel() == 0 and r0.dtype == torch.int64
    assert len(r1) == len(c1) == 1


@pytest.mark.parametrize("target,message", [
    ({"labels": torch.tensor([5]), "masks": torch.ones(1, 2, 2, dtype=torch.bool)},
     "in \\[0, 3\\)"),
    ({"labels": torch.tensor([0, 1]), "masks": torch.ones(1, 2, 2, dtype=torch.bool)}, "same n"),
    ({"labels": torch.tensor([0.0]), "masks": torch.ones(1, 2, 2, dtype=torch.bool)}, "integers"),
    ({"masks": torch.ones(1, 2, 2, dtype=torch.bool)}, "needs 'labels'"),
])
def test_bad_targets_are_refused(target, message):
    out = {"pred_logits": torch.zeros(1, 2, 4), "pred_masks": torch.zeros(1, 2, 2, 2)}
    with pytest.raises(ZegFormerError, match=message):
        HungarianMatcher()(out, [target])
    with pytest.raises(ZegFormerError, match="2 targets for a batch of 1"):
        HungarianMatcher()(out, [target, target])


def test_nan_predictions_give_a_clear_error():
    out = {"pred_logits": torch.zeros(1, 2, 4), "pred_masks": torch.full((1, 2, 2, 2), math.nan)}
    tgt = [{"labels": torch.tensor([0]), "masks": torch.ones(1, 2, 2, dtype=torch.bool)}]
    with pytest.raises(ZegFormerError, match="not finite"):
        HungarianMatcher()(out, tgt)


def test_official_matching_small_golden():
    d = np.load(DATA / "criterion_seed42_small.npz")
    out = {"pred_logits": torch.tensor(d["logits_5"]), "pred_masks": torch.tensor(d["masks_5"])}
    targets = [{"labels": torch.tensor(d[f"labels_{b}"]), "masks": torch.tensor(d[f"tmasks_{b}"])}
               for b in range(2)]
    for b, (rows, cols) in enumerate(HungarianMatcher(1, 20, 1)(out, targets)):
        assert rows.tolist() == d[f"match_src_{b}"].tolist()
        assert cols.tolist() == d[f"match_tgt_{b}"].tolist()


def test_official_matching_r101_golden_all_layers():
    """The real model's outputs (trimmed to the matched queries plus the strongest competitors,
    see tests/data/training/trim_train_forward_loss.py): every layer's official matching."""
    d = np.load(DATA / "train_forward_R101_salt-pub_loss.npz")
    targets = [{"labels": torch.tensor(d[f"target_labels_{b}"]),
                "masks": torch.tensor(np.unpackbits(d[f"target_masks_packed_{b}"]).reshape(
                    d[f"target_masks_shape_{b}"]).astype(bool))} for b in range(2)]
    ids = d["kept_query_ids"]  # L x B x kept
    for layer in range(6):
        logits = torch.stack([torch.tensor(d["pred_logits"][layer, b, ids[layer, b]])
                              for b in range(2)])
        out = {"pred_logits": logits, "pred_masks": torch.tensor(d["kept_pred_masks"][layer])}
        for b, (rows, cols) in enumerate(HungarianMatcher(1, 20, 1)(out, targets)):
            assert ids[layer, b][rows.numpy()].tolist() == d[f"match_src_l{layer}_b{b}"].tolist()
            assert cols.tolist() == d[f"match_tgt_l{layer}_b{b}"].tolist()

"""The fast path's crop sharing (`FastSettings.share_iou`): segments with similar masks take the
CLIP logits of one encoded crop (`zegformer.inference.fast_selection`)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zegformer import load_random_predictor
from zegformer.errors import ZegFormerError
from zegformer.inference import fast as F
from zegformer.inference import fast_selection as S

NAMES = ["sky", "grass", "cat", "dog", "tree"]


def _masks() -> torch.Tensor:
    """5 segments on 20 x 20: 0 = a 10 x 10 square, 1 = the square one row taller (IoU 10/11),
    2 = a disjoint 6 x 6 square, 3 = the square again (the same binary mask as 0), 4 = empty."""
    m = torch.full((5, 20, 20), -6.0)
    m[0, :10, :10] = 6.0
    m[1, :11, :10] = 6.0
    m[2, 12:18, 12:18] = 6.0
    m[3, :10, :10] = 2.0
    return m


def test_similar_masks_form_one_cluster_led_by_the_heaviest_group():
    m = _masks()
    groups = S.mask_groups(m)
    assert groups[0] == groups[3]
    every = torch.ones(5, dtype=torch.bool)
    mass = torch.tensor([1.0, 3.0, 2.0, 1.5, 0.0], dtype=torch.float64)
    c = S.similar_mask_clusters(m, groups, every, mass, min_iou=0.8)
    # group {0, 3} weighs 2.5 < 3 (segment 1): segment 1 leads; 0 and 3 join it
    assert c[0] == c[1] == c[3] == groups[1]
    assert c[2] == groups[2] and c[4] == groups[4]
    strict = S.similar_mask_clusters(m, groups, every, mass, min_iou=0.95)
    assert torch.equal(strict, groups)  # 10/11 < 0.95: only equal masks share


def test_non_candidates_neither_join_nor_lead_a_cluster():
    m = _masks()
    groups = S.mask_groups(m)
    cand = torch.tensor([True, False, True, True, True])
    mass = torch.tensor([1.0, 3.0, 2.0, 1.5, 0.0], dtype=torch.float64)
    c = S.similar_mask_clusters(m, groups, cand, mass, min_iou=0.8)
    assert c[1] == groups[1] and c[0] == c[3] == groups[0]


def test_plan_encodes_representatives_and_lets_members_borrow():
    m = _masks()
    # segment logits: K = 4 + no object; objectness decides the mass
    seg = torch.zeros(5, 5)
    seg[:, -1] = torch.tensor([4.0, -4.0, -2.0, 3.0, 5.0])  # 0 and 3: weak echoes of 1
    every = torch.ones(5, dtype=torch.bool)
    plan = S.plan_segments(F.FastSettings(max_crops=10, mass_fraction=1.0, share_iou=0.8),
                           seg, m, every)
    src = plan.source.tolist()
    assert src[1] == 1 and src[2] == 2  # representatives encode their own crop
    assert src[0] == 1 and src[3] == 1  # similar masks borrow segment 1's logits
    assert plan.encoded.tolist() == [False, True, True, False, True]  # the empty mask too
    one = S.plan_segments(F.FastSettings(max_crops=1, mass_fraction=1.0, share_iou=0.8),
                          seg, m, every)
    assert one.source.tolist() == [1, 1, -1, 1, -1]
    off = S.plan_segments(F.FastSettings(max_crops=10, mass_fraction=1.0, share_iou=None),
                          seg, m, every)
    assert off.source.tolist() == [0, 1, 2, 3, 4]
    assert not bool(off.borrowing.any())


def test_completed_logits_copy_borrowed_rows_and_fall_back_for_the_rest():
    g = torch.Generator().manual_seed(0)
    seg = torch.randn(5, 5, generator=g)
    clip = torch.full((5, 4), float("-inf"))
    clip[1] = torch.randn(4, generator=g)
    plan = S.SegmentPlan(torch.tensor([1, 1, -1, 1, -1]))
    negligible = torch.tensor([False, False, False, False, True])
    out = S.complete_clip_logits(clip, seg, plan, negligible)
    assert torch.equal(out[0], clip[1]) and torch.equal(out[3], clip[1])
    assert torch.equal(out[2], seg[2, :-1])
    assert torch.isinf(out[4]).all()


def test_bad_share_iou_is_a_one_line_error():
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ZegFormerError, match="share_iou"):
            F.FastSettings(share_iou=bad)


def test_predictor_reports_shared_segments_and_stays_flagged(monkeypatch):
    """On a tiny random model, sharing at IoU 0.05 (and any weight ratio: its segments weigh
    alike) makes most segments borrow: fewer crops are encoded than without sharing, and
    crop_stats counts the borrowers."""
    monkeypatch.setattr(S, "BORROWER_WEIGHT_RATIO", 1.0)
    p = load_random_predictor(device="cpu", seed=1)
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    loose = F.FastSettings(max_crops=100, mass_fraction=1.0, quantize=False, crop_size=None,
                           share_iou=0.05)
    off = F.FastSettings(max_crops=100, mass_fraction=1.0, quantize=False, crop_size=None,
                         share_iou=None)
    p.predict(image, NAMES, fast=off)
    plain = dict(p.crop_stats)
    p.crop_features.clear()
    r = p.predict(image, NAMES, fast=loose)
    shared = dict(p.crop_stats)
    assert r.fast is True
    assert plain["shared"] == 0
    assert shared["shared"] > 0
    assert shared["distinct"] < plain["distinct"]
    assert shared["shared"] + shared["distinct"] <= plain["segments"]


def test_a_look_alike_as_heavy_as_its_leader_keeps_its_own_crop():
    """Untrained-like weights: similar masks of equal weight each carry their own CLIP opinion,
    so neither borrows; a weak echo (a trained model's duplicate) does borrow."""
    m = _masks()
    groups = S.mask_groups(m)
    every = torch.ones(5, dtype=torch.bool)
    equal = torch.tensor([1.0, 1.0, 2.0, 0.0, 0.0], dtype=torch.float64)
    c = S.similar_mask_clusters(m, groups, every, equal, min_iou=0.8, max_weight_ratio=0.5)
    assert c[0] != c[1]
    echo = torch.tensor([0.1, 1.0, 2.0, 0.0, 0.0], dtype=torch.float64)
    c = S.similar_mask_clusters(m, groups, every, echo, min_iou=0.8, max_weight_ratio=0.5)
    assert c[0] == c[1] == groups[1]
    assert S.BORROWER_WEIGHT_RATIO < 1.0

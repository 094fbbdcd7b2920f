"""Scoring functions against numbers worked out by hand (arithmetic in the comments).

Probabilities are chosen as cubes (0.512 = 0.8^3, 0.216 = 0.6^3, ...) so that the powers 1/3 and
2/3 of the ensembling (lambda = 2/3) are exact decimals.
"""
from __future__ import annotations

import math

import pytest
import torch

from zegformer.inference import scoring

F64 = torch.float64


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


SEEN = torch.tensor([True, True, False])  # classes 0 and 1 seen, class 2 novel

# Segment classifier probabilities (K = 3 classes + "no object"), rows sum to 1:
#   row 0: 0.512 + 0.216 + 0.027 + 0.245 = 1
#   row 1: 0.001 + 0.343 + 0.125 + 0.531 = 1
P_SEG_FULL = t([[0.512, 0.216, 0.027, 0.245],
                [0.001, 0.343, 0.125, 0.531]])
P_SEG = P_SEG_FULL[:, :3]
# CLIP probabilities over the K classes (the rest is CLIP's "no object" share):
#   row 0: seen mean (0.2 + 0.05) / 2 = 0.125 = 0.5^3; novel 0.729 = 0.9^3; no object 0.021
#   row 1: seen mean (0.001 + 0.015) / 2 = 0.008 = 0.2^3; novel 0.216 = 0.6^3; no object 0.768
P_CLIP = t([[0.2, 0.05, 0.729],
            [0.001, 0.015, 0.216]])
# Ensembled by hand:
#   row 0 seen:  0.512^(2/3) * 0.125^(1/3) = 0.64 * 0.5 = 0.32
#                0.216^(2/3) * 0.125^(1/3) = 0.36 * 0.5 = 0.18
#         novel: 0.027^(1/3) * 0.729^(2/3) = 0.3 * 0.81 = 0.243
#   row 1 seen:  0.001^(2/3) * 0.008^(1/3) = 0.01 * 0.2 = 0.002
#                0.343^(2/3) * 0.008^(1/3) = 0.49 * 0.2 = 0.098
#         novel: 0.125^(1/3) * 0.216^(2/3) = 0.5 * 0.36 = 0.18
ENSEMBLED = t([[0.32, 0.18, 0.243],
               [0.002, 0.098, 0.18]])


def test_ensemble_by_hand():
    out = scoring.ensemble(P_SEG, P_CLIP, SEEN)
    torch.testing.assert_close(out, ENSEMBLED, atol=1e-12, rtol=0)


def test_ensemble_does_not_modify_its_inputs():
    p_clip = P_CLIP.clone()
    scoring.ensemble(P_SEG, p_clip, SEEN)
    assert torch.equal(p_clip, P_CLIP)


def test_seen_columns_get_the_row_mean_of_clip():
    # lambda = 0: seen -> p^0 * mean_seen(c)^1 = the row mean; novel -> p^1 * c^0 = p.
    out = scoring.ensemble(P_SEG, P_CLIP, SEEN, lam=0.0)
    torch.testing.assert_close(out, t([[0.125, 0.125, 0.027],
                                       [0.008, 0.008, 0.125]]), atol=1e-12, rtol=0)


def test_seen_and_novel_use_opposite_weights():
    # Same p and c for both classes: p = 0.512 (0.8^3), c = 0.001 (0.1^3).
    # seen:  p^(2/3) c^(1/3) = 0.64 * 0.1 = 0.064
    # novel: p^(1/3) c^(2/3) = 0.8 * 0.01 = 0.008
    p = t([[0.512, 0.512]])
    c = t([[0.001, 0.001]])
    out = scoring.ensemble(p, c, torch.tensor([True, False]))
    torch.testing.assert_close(out, t([[0.064, 0.008]]), atol=1e-12, rtol=0)


def test_ensembling_all_cls_uses_novel_weights_everywhere_without_the_mean():
    # p^(1/3) * c^(2/3) for every class, CLIP's seen columns kept as they are:
    #   0.512^(1/3) * 0.125^(2/3) = 0.8 * 0.25 = 0.2
    #   0.216^(1/3) * 0.008^(2/3) = 0.6 * 0.04 = 0.024
    #   0.027^(1/3) * 0.729^(2/3) = 0.3 * 0.81 = 0.243
    p = t([[0.512, 0.216, 0.027]])
    c = t([[0.125, 0.008, 0.729]])
    out = scoring.ensemble(p, c, SEEN, all_classes_as_novel=True)
    torch.testing.assert_close(out, t([[0.2, 0.024, 0.243]]), atol=1e-12, rtol=0)


def test_ensemble_with_no_seen_or_no_novel_class():
    all_novel = scoring.ensemble(P_SEG, P_CLIP, torch.tensor([False, False, False]))
    torch.testing.assert_close(all_novel, P_SEG ** (1 / 3) * P_CLIP ** (2 / 3))
    # All seen: row 0 mean of c = (0.2 + 0.05 + 0.729) / 3 = 0.3263...
    all_seen = scoring.ensemble(P_SEG, P_CLIP, torch.tensor([True, True, True]))
    mean0 = (0.2 + 0.05 + 0.729) / 3
    torch.testing.assert_close(all_seen[0], t([0.64, 0.36, 0.09]) * mean0 ** (1 / 3))


# ---------------------------------------------------------------- from logits


def _clip_logits(p_clip: torch.Tensor, seg_full: torch.Tensor) -> torch.Tensor:
    """CLIP logits such that softmax([clip, seg "no object" logit]) = [p_clip, 1 - sum(p_clip)].

    With seg logits log(p), the appended logit is log(p_bg); logits log(c * p_bg / c_bg) give
    softmax shares proportional to (c, c_bg), i.e. exactly (c, c_bg).
    """
    c_bg = 1 - p_clip.sum(dim=1, keepdim=True)
    return (p_clip * seg_full[:, -1:] / c_bg).log()


SEG_LOGITS = P_SEG_FULL.log()
CLIP_LOGITS = _clip_logits(P_CLIP, P_SEG_FULL)


def test_segment_class_probs_drops_no_object():
    torch.testing.assert_close(scoring.segment_class_probs(SEG_LOGITS), P_SEG)
    # Equal logits over K + 1 = 3 entries: each 1/3, then "no object" is dropped.
    torch.testing.assert_close(scoring.segment_class_probs(torch.zeros(1, 3, dtype=F64)),
                               t([[1 / 3, 1 / 3]]))


def test_decoupled_without_clip_is_the_segment_classifier():
    out = scoring.decoupled_segment_probs(SEG_LOGITS, SEEN)
    torch.testing.assert_close(out, P_SEG, atol=1e-12, rtol=0)


def test_decoupled_with_clip_without_ensembling_is_clip_with_the_no_object_logit():
    out = scoring.decoupled_segment_probs(SEG_LOGITS, SEEN, clip_logits=CLIP_LOGITS,
                                          ensembling=False)
    # Exactly the CLIP probabilities: no seen-class mean, no segment classifier.
    torch.testing.assert_close(out, P_CLIP, atol=1e-12, rtol=0)


def test_decoupled_with_clip_and_ensembling():
    out = scoring.decoupled_segment_probs(SEG_LOGITS, SEEN, clip_logits=CLIP_LOGITS,
                                          ensembling=True)
    torch.testing.assert_close(out, ENSEMBLED, atol=1e-12, rtol=0)


def test_decoupled_ensembling_all_cls_alone():
    # Official: ENSEMBLING_ALL_CLS is used with ENSEMBLING False (they are mutually exclusive).
    # Row 0: p^(1/3) c^(2/3) = 0.8 * 0.2^(2/3), 0.6 * 0.05^(2/3), 0.3 * 0.81.
    out = scoring.decoupled_segment_probs(SEG_LOGITS, SEEN, clip_logits=CLIP_LOGITS,
                                          ensembling=False, all_classes_as_novel=True)
    row0 = t([0.8 * 0.2 ** (2 / 3), 0.6 * 0.05 ** (2 / 3), 0.243])
    torch.testing.assert_close(out[0], row0, atol=1e-12, rtol=0)


# ---------------------------------------------------------------- merge, calibration


def test_semantic_merge_by_hand():
    # Masks: sigmoid(0) = 0.5, sigmoid(log 3) = 0.75, sigmoid(-log 3) = 0.25.
    l3 = math.log(3)
    masks = t([[[0.0, l3]], [[-l3, 0.0]]])  # Q=2 x H=1 x W=2 -> sigmoids [.5, .75], [.25, .5]
    probs = t([[0.6, 0.2], [0.1, 0.8]])  # Q x K
    # class 0: 0.6*[.5, .75] + 0.1*[.25, .5] = [0.3 + 0.025, 0.45 + 0.05] = [0.325, 0.5]
    # class 1: 0.2*[.5, .75] + 0.8*[.25, .5] = [0.1 + 0.2, 0.15 + 0.4]   = [0.3, 0.55]
    out = scoring.semantic_merge(probs, masks)
    torch.testing.assert_close(out, t([[[0.325, 0.5]], [[0.3, 0.55]]]), atol=1e-12, rtol=0)


def test_calibration_subtracts_only_from_seen_classes():
    scores = t([[[0.5, 0.2]], [[0.4, 0.9]], [[0.3, 0.05]]])  # K=3 x 1 x 2
    seen = torch.tensor([True, False, True])
    out = scoring.calibrate(scores, seen, 0.1)
    torch.testing.assert_close(out, t([[[0.4, 0.1]], [[0.4, 0.9]], [[0.2, -0.05]]]),
                               atol=1e-12, rtol=0)
    assert torch.equal(scores, t([[[0.5, 0.2]], [[0.4, 0.9]], [[0.3, 0.05]]]))  # not in place
    for gamma in (0.0, -1.0):  # official: only when GZERO_CALIBRATE > 0
        assert torch.equal(scoring.calibrate(scores, seen, gamma), scores)
    assert torch.equal(scoring.calibrate(scores, torch.zeros(3, dtype=torch.bool), 0.1), scores)


def test_pixel_probs_softmax_over_classes():
    logits = t([[[0.0]], [[math.log(3)]]])  # e^0 : e^log3 = 1 : 3
    torch.testing.assert_close(scoring.pixel_probs(logits), t([[[0.25]], [[0.75]]]))


# ---------------------------------------------------------------- boxes and crops


def _mask(h, w, *rects):
    m = torch.zeros(h, w, dtype=torch.bool)
    for y1, y2, x1, x2 in rects:  # inclusive pixel ranges
        m[y1:y2 + 1, x1:x2 + 1] = True
    return m


def test_mask_boxes_official_rule():
    h, w = 5, 6
    masks = torch.stack([
        _mask(h, w, (1, 3, 2, 4)),  # rows 1..3, cols 2..4
        _mask(h, w, (0, 0, 0, 0), (4, 4, 5, 5)),  # two corners: box spans both
        _mask(h, w),  # empty
        _mask(h, w, (2, 2, 1, 4)),  # one row thick: zero area
        _mask(h, w, (0, 4, 3, 3)),  # one column thick
        _mask(h, w, (3, 3, 3, 3)),  # one pixel
    ])
    # (x1, y1, x2, y2) = first/last foreground column and row; zero area -> (0, 0, W, H).
    expected = torch.tensor([[2, 1, 4, 3], [0, 0, 5, 4], [0, 0, 6, 5], [0, 0, 6, 5],
                             [0, 0, 6, 5], [0, 0, 6, 5]], dtype=torch.float32)
    assert torch.equal(scoring.mask_boxes(masks), expected)


def _ramp_image(h: int, w: int) -> torch.Tensor:
    """3 x H x W with a distinct value per pixel: c * 10000 + y * 100 + x."""
    c = torch.arange(3.0)[:, None, None]
    y = torch.arange(float(h))[None, :, None]
    x = torch.arange(float(w))[None, None, :]
    return c * 10000 + y * 100 + x


def _logits(mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, torch.tensor(10.0), torch.tensor(-10.0))


@pytest.mark.parametrize("style", ["cropmask", "crop", "mask"])
def test_clip_crops_shapes(style):
    image = torch.randn(3, 24, 40)
    masks = _logits(torch.stack([_mask(24, 40, (2, 10, 3, 30)), _mask(24, 40)]))
    out = scoring.clip_crops(image, masks, style, size=16)
    assert out.shape == (2, 3, 16, 16) and out.dtype == torch.float32


def test_clip_crops_unknown_style():
    with pytest.raises(ValueError, match="CLIP_CLS_STYLE"):
        scoring.clip_crops(torch.zeros(3, 4, 4), torch.zeros(1, 4, 4), "blur")


# Two 8 x 8 blocks: rows/cols 8..15 and 24..31 of a 40 x 40 image. Box (x1, y1, x2, y2) =
# (8, 8, 31, 31); roi_align(aligned=True) covers [7.5, 30.5] in pixel-centre coordinates, so with
# output size 23 each bin is one pixel wide with one sample at its centre 8 + i: crop[i, j] is
# exactly pixel (8 + i, 8 + j), and the last foreground row/column (31) lies just outside.
TWO_BLOCKS = _mask(40, 40, (8, 15, 8, 15), (24, 31, 24, 31))


def test_cropmask_crop_content():
    image = _ramp_image(40, 40)
    crop = scoring.clip_crops(image, _logits(TWO_BLOCKS)[None], "cropmask", size=23)[0]
    inside = torch.zeros(23, 23, dtype=torch.bool)
    inside[0:8, 0:8] = True  # pixels 8..15
    inside[16:23, 16:23] = True  # pixels 24..30
    expected = torch.where(inside, image[:, 8:31, 8:31], torch.tensor(0.0))
    torch.testing.assert_close(crop, expected, atol=1e-3, rtol=0)
    assert crop[0, 0, 22].item() == 0.0  # top-right quadrant: outside the mask
    assert crop[1, 0, 0].item() == pytest.approx(10000 + 8 * 100 + 8)


def test_crop_style_keeps_the_image_outside_the_mask():
    image = _ramp_image(40, 40)
    crop = scoring.clip_crops(image, _logits(TWO_BLOCKS)[None], "crop", size=23)[0]
    torch.testing.assert_close(crop, image[:, 8:31, 8:31], atol=1e-3, rtol=0)


def test_empty_mask_crops_the_whole_image():
    # Fallback box (0, 0, W, H) covers [-0.5, 39.5]: with size 40 the samples are pixels 0..39.
    image = _ramp_image(40, 40)
    empty = _logits(torch.zeros(1, 40, 40, dtype=torch.bool))
    torch.testing.assert_close(scoring.clip_crops(image, empty, "crop", size=40)[0], image,
                               atol=1e-3, rtol=0)
    assert scoring.clip_crops(image, empty, "cropmask", size=40).abs().max() == 0


def test_mask_style_resizes_image_and_mask_logits_before_masking():
    # Official "mask" style: image and mask logits are each resized to size x size (bilinear,
    # 4 -> 2 averages 2 x 2 blocks), then sigmoid > 0.5 and multiply.
    image = torch.tensor([[1.0, 2.0, 5.0, 5.0],
                          [3.0, 4.0, 5.0, 5.0],
                          [7.0, 7.0, 8.0, 8.0],
                          [7.0, 7.0, 8.0, 8.0]]).expand(3, 4, 4)
    logits = torch.tensor([[[10.0, -1.0, -9.0, -9.0],
                            [-1.0, -1.0, -9.0, -9.0],
                            [9.0, 9.0, -9.0, 9.0],
                            [9.0, 9.0, 9.0, -9.0]]])
    # Block means of the logits: (10-3)/4 = 1.75 > 0 -> kept; -9 -> dropped; 9 -> kept;
    # (-9+9+9-9)/4 = 0 -> sigmoid 0.5, not > 0.5 -> dropped.
    # Block means of the image: 2.5, 5, 7, 8 -> [[2.5, 0], [7, 0]].
    out = scoring.clip_crops(image, logits, "mask", size=2)
    torch.testing.assert_close(out[0, 0], torch.tensor([[2.5, 0.0], [7.0, 0.0]]))
    assert out.shape == (1, 3, 2, 2)


def test_clip_segment_logits_with_a_fake_image_tower():
    # Left half red (1, 0, 0), right half green (0, 1, 0); segment 0 = left, 1 = right.
    image = torch.zeros(3, 16, 32)
    image[0, :, :16] = 1.0
    image[1, :, 16:] = 1.0
    masks = _logits(torch.stack([_mask(16, 32, (0, 15, 0, 15)), _mask(16, 32, (0, 15, 16, 31))]))

    def encode_image(crops):  # mean colour of the crop: N x 3
        return crops.mean(dim=(2, 3))

    text = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.6, 0.8, 0.0]])
    logits = scoring.clip_segment_logits(image, masks, encode_image, text, torch.tensor(100.0),
                                         style="cropmask", size=8, chunk=1)
    # Crop 0 holds only red (features (r, 0, 0) -> unit (1, 0, 0)): cosines [1, 0, 0.6].
    # Crop 1 holds only green: cosines [0, 1, 0.8]. Times the scale 100.
    torch.testing.assert_close(logits, torch.tensor([[100.0, 0.0, 60.0], [0.0, 100.0, 80.0]]),
                               atol=1e-4, rtol=0)


# ---------------------------------------------------------------- post-processing


def test_postprocess_crops_padding_before_resizing():
    scores = torch.full((2, 4, 6), 100.0)  # padding holds 100
    scores[:, :2, :3] = torch.tensor([[0.0, 1.0, 1.0], [2.0, 3.0, 3.0]])
    out = scoring.postprocess(scores, (2, 3), (2, 3))
    assert torch.equal(out, scores[:, :2, :3])  # same size: just the crop
    # 2 x 2 region [[0, 1], [2, 3]] = x + 2y, resized to 4 x 4 (bilinear, align_corners=False):
    # source coordinate of output o = (o + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25, clamped to
    # [0, 1] -> weights give 0, 0.25, 0.75, 1 along each axis; value = cx + 2 * cy.
    scores2 = torch.full((1, 3, 3), 100.0)
    scores2[0, :2, :2] = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    out2 = scoring.postprocess(scores2, (2, 2), (4, 4))[0]
    c = torch.tensor([0.0, 0.25, 0.75, 1.0])
    torch.testing.assert_close(out2, c[None, :] + 2 * c[:, None])

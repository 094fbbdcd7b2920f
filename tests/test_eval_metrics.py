"""Standard metrics: SMALL_TARGETS.md worked examples 1 and 1b, and their invariants."""
import json
import math
import os

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from zegformer.evaluation.metrics import (  # noqa: E402
    confusion_matrix,
    harmonic,
    per_class_stats,
    standard_metrics,
)
from zegformer.evaluation.report import clean_json  # noqa: E402

I = 255  # noqa: E741 - ignore label, as in the spec's drawings
GT1 = np.array([[1, 1, 1, 1], [1, 2, 2, 1], [1, 2, 2, I], [0, 0, 0, I]])
PRED1 = np.array([[1, 1, 1, 1], [1, 2, 1, 1], [0, 2, 2, 1], [0, 0, 1, 1]])
NAMES = ["cat", "grass", "frisbee"]


def test_example_1_per_class_counts():
    conf = confusion_matrix(GT1, PRED1, 3, I)
    assert conf.sum() == 14  # 16 pixels, 2 ignored; their predictions are discarded
    s = per_class_stats(conf)
    assert s["tp_px"].tolist() == [2, 6, 3]
    assert s["gt_px"].tolist() == [3, 7, 4]
    assert s["pred_px"].tolist() == [3, 8, 3]
    np.testing.assert_allclose(s["iou"], [0.5, 6 / 9, 0.75], atol=1e-4)


@pytest.mark.parametrize("mode", ["compat", "strict"])
def test_example_1_aggregates(mode):
    m = standard_metrics(confusion_matrix(GT1, PRED1, 3, I), NAMES, ["frisbee"])[mode]
    assert m["mIoU"] == pytest.approx(0.6389, abs=1e-4)
    assert m["pACC"] == pytest.approx(11 / 14, abs=1e-4)
    assert m["mACC"] == pytest.approx(0.7579, abs=1e-4)
    assert m["fwIoU"] == pytest.approx(0.6548, abs=1e-4)
    seen = m["seen_IoU"] if mode == "compat" else m["seen_mIoU"]
    unseen = m["unseen_IoU"] if mode == "compat" else m["unseen_mIoU"]
    assert seen == pytest.approx(0.5833, abs=1e-4)
    assert unseen == pytest.approx(0.75, abs=1e-4)
    assert m["hIoU"] == pytest.approx(0.65625, abs=1e-4)


def test_example_1_acc_split_quirk_and_fix():
    m = standard_metrics(confusion_matrix(GT1, PRED1, 3, I), NAMES, ["frisbee"])
    # ZegFormer's "seen_acc" is in fact the seen IoU mean ...
    assert m["compat"]["seen_acc"] == pytest.approx(0.5833, abs=1e-4)
    # ... the strict mode uses accuracy: (2/3 + 6/7) / 2
    assert m["strict"]["seen_mACC"] == pytest.approx((2 / 3 + 6 / 7) / 2, abs=1e-4)
    assert m["compat"]["IoU-grass"] == pytest.approx(6 / 9)
    assert m["compat"]["ACC-cat"] == pytest.approx(2 / 3)


def test_example_1b_conventions_diverge():
    pred = PRED1.copy()
    pred[0, 0] = 3  # a 4th, unseen class absent from the ground truth
    names = NAMES + ["kite"]
    conf = confusion_matrix(GT1, pred, 4, I)
    m = standard_metrics(conf, names, ["frisbee", "kite"])
    s = per_class_stats(conf)
    assert s["iou"][1] == pytest.approx(5 / 9, abs=1e-4)
    assert m["compat"]["mIoU"] == pytest.approx(0.4514, abs=1e-4)
    # mmsegmentation: IoU over classes with a non-empty union (the absent class scores 0)
    union = s["gt_px"] + s["pred_px"] - s["tp_px"]
    mmseg = np.mean(np.where(union > 0, s["tp_px"] / np.maximum(union, 1), np.nan)[union > 0])
    assert mmseg == pytest.approx(0.4514, abs=1e-4)
    assert m["strict"]["mIoU"] == pytest.approx(0.6019, abs=1e-4)
    assert math.isnan(m["compat"]["unseen_IoU"])
    assert math.isnan(m["compat"]["hIoU"])
    assert m["strict"]["seen_mIoU"] == pytest.approx(0.5278, abs=1e-4)
    assert m["strict"]["unseen_mIoU"] == pytest.approx(0.75, abs=1e-4)
    assert m["strict"]["hIoU"] == pytest.approx(0.6196, abs=1e-4)


def test_harmonic_edge_rules():
    assert harmonic(0.0, 0.0) == 0.0
    assert harmonic(None, 0.5) is None
    assert harmonic(0.5, float("nan")) is None
    assert harmonic(0.625, 0.2) == pytest.approx(0.30303, abs=1e-5)


def test_ignore_pixels_change_nothing():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 4, size=(20, 30))
    gt[rng.random(gt.shape) < 0.3] = I
    pred = rng.integers(0, 4, size=gt.shape)
    other = pred.copy()
    other[gt == I] = rng.integers(0, 4, size=int((gt == I).sum()))
    names = ["a", "b", "c", "d"]
    a = standard_metrics(confusion_matrix(gt, pred, 4, I), names, ["d"])
    b = standard_metrics(confusion_matrix(gt, other, 4, I), names, ["d"])
    assert json.dumps(clean_json(a)) == json.dumps(clean_json(b))
    assert not np.array_equal(pred, other)


def test_unlabelled_predictions_are_misses_not_false_positives():
    gt = np.array([[0, 0], [1, 1]])
    pred = np.array([[0, -1], [1, -1]])
    s = per_class_stats(confusion_matrix(gt, pred, 2, I))
    assert s["pred_px"].tolist() == [1, 1]
    np.testing.assert_allclose(s["iou"], [0.5, 0.5])


def test_bad_values_and_shapes_raise():
    with pytest.raises(ValueError, match="outside the 3 classes"):
        confusion_matrix(np.array([[0, 5]]), np.array([[0, 1]]), 3, I)
    with pytest.raises(ValueError, match="predicted values"):
        confusion_matrix(np.array([[0, 1]]), np.array([[0, 3]]), 3, I)
    with pytest.raises(ValueError, match="differ in size"):
        confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 3), int), 3, I)
    with pytest.raises(ValueError, match="does not fit"):
        standard_metrics(np.zeros((3, 3), np.int64), NAMES, [])


def test_json_has_no_nan():
    pred = PRED1.copy()
    pred[0, 0] = 3
    m = standard_metrics(confusion_matrix(GT1, pred, 4, I), NAMES + ["kite"], ["kite"])
    with pytest.raises(ValueError):
        json.dumps(m, allow_nan=False)  # compat holds NaN (ZegFormer's behaviour) ...
    text = json.dumps(clean_json(m), allow_nan=False)  # ... written as null
    assert json.loads(text)["compat"]["IoU-kite"] is None


def test_empty_split_is_undefined_not_zero():
    m = standard_metrics(confusion_matrix(GT1, PRED1, 3, I), NAMES, [])
    assert m["strict"]["unseen_mIoU"] is None
    assert m["strict"]["hIoU"] is None
    assert math.isnan(m["compat"]["unseen_IoU"])

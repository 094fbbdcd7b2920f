"""Objects, per-object metrics, buckets, aggregation: SMALL_TARGETS.md examples 2-5, invariants."""
import os

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from zegformer.evaluation.aggregate import aggregate, iiou  # noqa: E402
from zegformer.evaluation.buckets import abs_bucket, rel_bucket  # noqa: E402
from zegformer.evaluation.metrics import confusion_matrix, per_class_stats  # noqa: E402
from zegformer.data.objects import (  # noqa: E402
    Instance,
    InstanceSet,
    extract_objects,
    instances_from_id_map,
)
from zegformer.evaluation.small_targets import ClassInfo, evaluate_image  # noqa: E402


def grid(text):
    return np.array([[int(c) for c in line] for line in text.split()])


GT3 = grid("""11111111 12211111 12211111 11111111 11122221 11122221 11122221 11111111""")
PRED3 = grid("""12111111 12211111 12111111 11111111 11122222 11122222 21122222 11111111""")
CLASSES3 = ClassInfo(["sky", "grass", "frisbee"], np.array([False, False, True]))


def run3(min_area=1, gt=GT3, pred=PRED3):
    objs = extract_objects(gt, 255, None, min_area=min_area)
    return evaluate_image("ex3", gt, pred, objs, CLASSES3, 255, min_area=min_area)


def test_example_2_connectivity():
    mask = np.zeros((3, 3), int)
    mask[0, 0] = mask[1, 1] = 1
    eight = extract_objects(mask, 255, None, min_area=1)
    four = extract_objects(mask, 255, None, min_area=1, connectivity=4)
    assert [o.area for o in eight.kept if o.class_id == 1] == [2]
    assert [o.area for o in four.kept if o.class_id == 1] == [1, 1]


def test_example_3_per_object_metrics():
    rows = [r for r in run3().objects if r["class_name"] == "frisbee"]
    assert len(rows) == 2
    o1, o2 = sorted(rows, key=lambda r: r["area_px"])
    expect = {
        "area_px": (4, 12), "tp_px": (3, 12), "coverage": (0.75, 1.0), "pred_comp_area": (4, 15),
        "siou": (0.6, 0.8), "fp_share": (1.25, 3.75), "iou_k": (3 / 5.25, 12 / 15.75),
        "det_25": (1, 1), "det_50": (1, 1), "det_75": (0, 1),
    }
    for key, (v1, v2) in expect.items():
        assert o1[key] == pytest.approx(v1, abs=1e-4), key
        assert o2[key] == pytest.approx(v2, abs=1e-4), key
    assert o1["iou_k"] == pytest.approx(0.5714, abs=1e-4)
    assert o2["iou_k"] == pytest.approx(0.7619, abs=1e-4)
    assert o1["abs_bucket"] == o2["abs_bucket"] == "XS"
    assert (o1["maj_pred_class"], o1["maj_pred_frac"]) == (2, 0.75)
    assert o2["split"] == "unseen" and o2["source"] == "cc"


def test_example_3_image_iou_and_predicted_segments():
    res = run3()
    assert per_class_stats(res.conf)["iou"][2] == pytest.approx(15 / 21, abs=1e-4)
    segs = sorted((s for s in res.segments if s["class_id"] == 2), key=lambda s: s["area_px"])
    assert [s["area_px"] for s in segs] == [1, 4, 15]
    assert segs[0]["siou_pred"] == 0.0  # the pixel at (6, 0) touches no frisbee: FP segment
    assert segs[1]["siou_pred"] == pytest.approx(0.6) and segs[2]["siou_pred"] == pytest.approx(0.8)


def test_example_3_default_min_area_drops_both_objects():
    res = run3(min_area=16)
    assert not [r for r in res.objects if r["class_id"] == 2]
    assert sorted(d["area_px"] for d in res.dropped if d["class_id"] == 2) == [4, 12]
    assert not [s for s in res.segments if s["class_id"] == 2]  # 1, 4, 15 px < 16: not scored
    splits, class_rows = aggregate(res.objects, res.segments, CLASSES3, min_area=16)
    assert splits["abs"]["XS"]["unseen"]["n_classes"] == 0
    assert splits["abs"]["XS"]["unseen"]["recall@0.5"] is None  # excluded, not 0
    assert not [r for r in class_rows if r["class_id"] == 2]


@pytest.mark.parametrize("area, abs_b, rel_b", [
    (100, "XS", "R0"), (1024, "M", "R1"), (5000, "M", "R2"), (9216, "L", "R2"), (20000, "L", "R2"),
])
def test_example_4_buckets(area, abs_b, rel_b):
    assert abs_bucket(area) == abs_b
    assert rel_bucket(area, 480, 640) == rel_b


def test_bucket_edges():
    for lo, hi, b_lo, b_hi in [(255, 256, "XS", "S"), (1023, 1024, "S", "M"),
                               (9215, 9216, "M", "L"), (15, 16, "below_min", "XS")]:
        assert (abs_bucket(lo), abs_bucket(hi)) == (b_lo, b_hi)
    # relative areas exactly 0.001, 0.01 and 0.1 go to the upper bucket
    assert rel_bucket(999, 1000, 1000) == "R0" and rel_bucket(1000, 1000, 1000) == "R1"
    assert rel_bucket(3071, 480, 640) == "R1" and rel_bucket(3072, 480, 640) == "R2"
    assert rel_bucket(30719, 480, 640) == "R2" and rel_bucket(30720, 480, 640) == "R3"
    assert abs_bucket(1, min_area=1) == "XS"


def _rows(cls, n, hits):
    return [{"area_px": 300, "img_h": 480, "img_w": 640, "class_id": cls, "source": "cc",
             "siou": 0.9 if k < hits else 0.1, "coverage": 1.0, "tp_px": 1, "fn_px": 0,
             "fp_share": 0.0, "maj_pred_class": cls} for k in range(n)]


def test_example_5_bucket_aggregation():
    classes = ClassInfo(["A", "B", "C", "D"], np.array([False, False, True, True]))
    rows = _rows(0, 4, 3) + _rows(1, 2, 1) + _rows(2, 5, 1)
    s = aggregate(rows, [], classes, min_area=16)[0]["abs"]["S"]
    assert s["seen"]["recall@0.5"] == pytest.approx(0.625)
    assert s["unseen"]["recall@0.5"] == pytest.approx(0.2)
    assert s["harmonic"]["recall@0.5"] == pytest.approx(0.30303, abs=1e-5)
    assert s["all"]["recall@0.5"] == pytest.approx(0.4833, abs=1e-4)
    assert s["seen"]["recall@0.5_micro"] == pytest.approx(4 / 6, abs=1e-4)
    assert (s["unseen"]["n_classes"], s["unseen"]["n_objects"]) == (1, 5)  # D excluded


def test_perfect_prediction():
    rng = np.random.default_rng(3)
    gt = np.zeros((40, 50), int)
    for c in (1, 2, 3):
        for _ in range(4):
            y, x = rng.integers(0, 36), rng.integers(0, 46)
            gt[y : y + rng.integers(2, 5), x : x + rng.integers(2, 5)] = c
    gt[rng.random(gt.shape) < 0.05] = 255
    pred = np.where(gt == 255, 1, gt)
    classes = ClassInfo(list("abcd"), np.array([False, False, True, True]))
    res = evaluate_image("p", gt, pred, extract_objects(gt, 255, None, 1), classes, 255, 1)
    assert res.objects
    for r in res.objects:
        assert r["coverage"] == r["siou"] == r["iou_k"] == 1.0 and r["fp_share"] == 0.0
        assert r["det_25"] == r["det_50"] == r["det_75"] == 1
    assert all(s["siou_pred"] == 1.0 for s in res.segments)  # no FP segment
    np.testing.assert_allclose(per_class_stats(res.conf)["iou"][[0, 1, 2, 3]], 1.0)


def test_ignore_pixels_change_no_object_metric():
    gt = GT3.copy()
    gt[0, :3] = 255
    gt[5, 7] = 255
    a, b = PRED3.copy(), PRED3.copy()
    b[gt == 255] = 0
    ra, rb = run3(1, gt, a), run3(1, gt, b)
    assert ra.objects == rb.objects and ra.segments == rb.segments
    assert np.array_equal(ra.conf, rb.conf)


def test_apportioning_sums_to_class_totals():
    rng = np.random.default_rng(7)
    gt = (rng.random((30, 30)) < 0.3).astype(int) * 2
    pred = np.where(rng.random(gt.shape) < 0.2, 2 - gt, gt)
    classes = ClassInfo(["a", "b", "c"], np.array([False, False, True]))
    res = evaluate_image("x", gt, pred, extract_objects(gt, 255, None, 1), classes, 255, 1)
    s = per_class_stats(res.conf)
    for c in (0, 2):
        rows = [r for r in res.objects if r["class_id"] == c]
        assert sum(r["tp_px"] for r in rows) == s["tp_px"][c]
        assert sum(r["fp_share"] for r in rows) == pytest.approx(s["fp_px"][c])


def test_one_blob_over_two_neighbours_is_not_punished():
    gt = np.zeros((6, 10), int)
    gt[1:5, 1:4] = 1
    gt[1:5, 4:8] = 1  # two touching objects of class 1, as instances
    ids = np.zeros_like(gt)
    ids[1:5, 1:4], ids[1:5, 4:8] = 1, 2
    inst = InstanceSet(instances_from_id_map(ids), covered_classes=frozenset({1}))
    objs = extract_objects(gt, 255, inst, min_area=1)
    assert sorted((o.source, o.area) for o in objs.kept if o.class_id == 1) == [
        ("instance", 12), ("instance", 16)]
    classes = ClassInfo(["bg", "thing"], np.array([False, True]))
    res = evaluate_image("n", gt, gt.copy(), objs, classes, 255, 1)
    rows = [r for r in res.objects if r["class_id"] == 1]
    assert [r["siou"] for r in rows] == [1.0, 1.0]  # Q_k is the shared blob, minus A_k
    assert [r["pred_comp_area"] for r in rows] == [28, 28]


def test_dropped_objects_still_shield_siou():
    gt = np.zeros((6, 12), int)
    gt[1:5, 1:6] = 1  # 20 px, kept
    gt[1:3, 6:8] = 1  # 4 px neighbour, dropped by min_area = 16
    ids = np.zeros_like(gt)
    ids[1:5, 1:6], ids[1:3, 6:8] = 1, 2
    objs = extract_objects(gt, 255, InstanceSet(instances_from_id_map(ids)), min_area=16)
    assert [o.area for o in objs.kept if o.class_id == 1] == [20]
    assert [o.area for o in objs.dropped if o.class_id == 1] == [4]
    res = evaluate_image("d", gt, gt.copy(), objs, ClassInfo(["bg", "t"], np.array([0, 1], bool)),
                         255, 16)
    assert [r["siou"] for r in res.objects if r["class_id"] == 1] == [1.0]


def test_instance_rule_crowd_mismatch_and_intersection():
    gt = np.zeros((10, 10), int)
    gt[0:4, 0:4] = 1
    gt[6:9, 6:9] = 1
    gt[0:2, 6:9] = 2
    full = np.ones((4, 5), bool)  # instance box spills one column over class-0 pixels
    inst = InstanceSet([
        Instance(0, 0, full, class_id=1),  # O = mask & {gt == 1}: 16 px
        Instance(6, 6, np.ones((3, 3), bool), class_id=1, crowd=True),  # crowd: not an object
        Instance(0, 6, np.ones((2, 3), bool), class_id=1),  # class disagrees everywhere: dropped
    ], covered_classes=frozenset({1}))
    objs = extract_objects(gt, 255, inst, min_area=1)
    ones = [o for o in objs.kept if o.class_id == 1]
    assert [(o.source, o.area, o.bbox) for o in ones] == [("instance", 16, (0, 0, 4, 4))]
    assert objs.n_mismatched == 1
    assert [o.source for o in objs.kept if o.class_id in (0, 2)] == ["cc", "cc"]


def test_instance_class_from_ground_truth_majority():
    gt = np.full((4, 4), 255)
    gt[:2] = 3
    ids = np.zeros((4, 4), int)
    ids[:, :2] = 7  # half of it lies on ignore pixels
    objs = extract_objects(gt, 255, InstanceSet(instances_from_id_map(ids)), min_area=1)
    assert [(o.class_id, o.area) for o in objs.kept] == [(3, 4)]


def test_iiou_weights_by_mean_object_size():
    classes = ClassInfo(["c"], np.array([False]))
    rows = [{"class_id": 0, "area_px": 10, "tp_px": 5, "fn_px": 5, "source": "cc"},
            {"class_id": 0, "area_px": 30, "tp_px": 30, "fn_px": 0, "source": "cc"}]
    summary, per_class = iiou(rows, np.array([4.0]), classes, min_area=1)
    # mean area 20: weights 2 and 2/3 -> iTP = 10 + 20, iFN = 10, FP = 4
    assert per_class[0] == pytest.approx(30 / 44)
    assert summary["seen"] == pytest.approx(30 / 44) and summary["unseen"] is None


def test_bad_arguments():
    with pytest.raises(ValueError, match="min_area"):
        extract_objects(GT3, 255, None, min_area=0)
    with pytest.raises(ValueError, match="connectivity"):
        extract_objects(GT3, 255, None, connectivity=6)
    with pytest.raises(ValueError, match="positive"):
        rel_bucket(10, 0, 5)
    assert confusion_matrix(GT3, PRED3, 3, 255).sum() == 64

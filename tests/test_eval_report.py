"""summary.json / CSV formats (SMALL_TARGETS.md 8.5), plots, and `zegformer.evaluation.compare_cli`."""
import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

os.environ["HF_HUB_OFFLINE"] = "1"

from zegformer.evaluation.cli import main  # noqa: E402
from zegformer.evaluation.compare_cli import main as compare_main  # noqa: E402
from zegformer.evaluation import synthetic  # noqa: E402
from zegformer.evaluation.compare import compare_runs, load_summary  # noqa: E402
from zegformer.data.datasets import DatasetError  # noqa: E402
from zegformer.evaluation.report import OBJECT_COLUMNS  # noqa: E402

SPEC_OBJECT_COLUMNS = (
    "image_id, object_id, source, class_id, class_name, split, area_px, img_h, img_w, rel_area, "
    "bbox_x, bbox_y, bbox_w, bbox_h, abs_bucket, rel_bucket, tp_px, fn_px, coverage, fp_share, "
    "iou_k, siou, pred_comp_area, det_25, det_50, det_75, maj_pred_class, maj_pred_frac"
).split(", ")
RECORD_KEYS = {"n_classes", "n_objects", "recall@0.25", "recall@0.5", "recall@0.75",
               "mean_coverage", "mean_sIoU", "bucket_mIoU", "recall@0.5_micro"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs on one synthetic dataset: perfect predictions (A) and small novel misses (B)."""
    tmp = tmp_path_factory.mktemp("runs")
    imgs = synthetic.write_dataset(tmp / "d", "folder", 4)
    out = {}
    for rule in ("perfect", "small_unseen_miss"):
        preds = synthetic.write_predictions(tmp / f"p_{rule}", imgs, rule, "folder")
        out[rule] = tmp / rule
        assert main(["--dataset", "folder", "--root", str(tmp / "d"), "--output",
                     str(out[rule]), "--from-predictions", str(preds), "--no-progress"]) == 0
    return out


def test_summary_json_layout(runs):
    s = json.loads((runs["small_unseen_miss"] / "small_target/summary.json").read_text())
    assert set(s) >= {"meta", "standard", "buckets", "iiou"}
    meta = s["meta"]
    for key in ("dataset", "split_file", "n_images", "model", "checkpoint", "ignore_label",
                "min_area", "connectivity", "tau", "abs_edges", "rel_edges", "object_source",
                "dropped_small", "version"):
        assert key in meta, key
    assert meta["connectivity"] == 8 and meta["tau"] == [0.25, 0.5, 0.75]
    assert meta["abs_edges"] == [16, 256, 1024, 9216] and meta["rel_edges"] == [0.001, 0.01, 0.1]
    assert set(meta["object_source"]) == {"instance", "cc"}
    assert set(s["standard"]["strict"]) >= {"mIoU", "fwIoU", "mACC", "pACC", "seen_mIoU",
                                            "unseen_mIoU", "hIoU"}
    assert set(s["buckets"]["abs"]) >= {"XS", "S", "M", "L", "COCO_small", "COCO_medium",
                                        "COCO_large"}
    assert list(s["buckets"]["rel"])[:4] == ["R0", "R1", "R2", "R3"]
    for rec in s["buckets"]["abs"]["XS"].values():
        assert RECORD_KEYS <= set(rec)
    assert set(s["iiou"]) >= {"mean", "seen", "unseen", "harmonic"}
    assert s["buckets"]["rel"]["R0"]["seen"]["recall@0.5"] is None  # no objects: null, not NaN
    json.dumps(s, allow_nan=False)
    fractions = [v for k in ("standard", "buckets", "iiou") for v in _leaves(s[k])
                 if isinstance(v, float)]
    assert len(fractions) > 100 and all(0.0 <= v <= 1.0 for v in fractions)


def _leaves(x):
    if isinstance(x, dict):
        for v in x.values():
            yield from _leaves(v)
    elif isinstance(x, list):
        for v in x:
            yield from _leaves(v)
    else:
        yield x


def test_csv_columns(runs):
    st = runs["small_unseen_miss"] / "small_target"
    with open(st / "objects.csv") as f:
        header = next(csv.reader(f))
    assert header[: len(SPEC_OBJECT_COLUMNS)] == SPEC_OBJECT_COLUMNS
    assert tuple(header) == OBJECT_COLUMNS
    with open(st / "bucket_class.csv") as f:
        assert next(csv.reader(f))[:6] == ["scheme", "bucket", "class_id", "class_name", "split",
                                           "n_objects"]
    with open(st / "bucket_split.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["split"] for r in rows} == {"seen", "unseen", "all", "harmonic"}
    with open(st / "per_class.csv") as f:
        assert next(csv.reader(f)) == ["class_id", "class_name", "split", "gt_px", "pred_px",
                                       "tp_px", "iou", "acc", "iiou"]
    cells = [c.lower() for r in csv.reader(open(st / "bucket_split.csv")) for c in r]
    assert not {"nan", "inf", "-inf", "none"} & set(cells)


def test_size_curve_plots(runs):
    for scheme in ("abs", "rel"):
        with Image.open(runs["perfect"] / f"small_target/size_curve_{scheme}.png") as im:
            assert im.format == "PNG" and im.size == (840, 576)  # 7 x 4.8 in at 120 dpi
            arr = np.asarray(im.convert("RGB"))
        assert (arr < 250).any(axis=-1).mean() > 0.02  # not a blank canvas


def test_compare_two_runs(runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert compare_main([str(runs["perfect"]), str(runs["small_unseen_miss"]), "--output",
                         str(out), "--labels", "perfect", "miss"]) == 0
    text = capsys.readouterr().out
    assert "small novel objects: -100.0 points" in text
    rows = {(r["scheme"], r["bucket"]): r for r in json.loads((out / "compare.json").read_text())[
        "rows"]}
    xs = rows[("abs", "XS")]
    assert (xs["unseen_a"], xs["unseen_b"], xs["unseen_delta"]) == (1.0, 0.0, -1.0)
    assert xs["seen_delta"] == 0.0 and rows[("abs", "L")]["unseen_delta"] == 0.0
    assert rows[("abs", "XS")]["harmonic_b"] == 0.0
    assert (out / "compare.csv").is_file()
    with Image.open(out / "compare_abs.png") as im:
        assert im.format == "PNG"
    default = compare_main([str(runs["perfect"]), str(runs["small_unseen_miss"])])
    assert default == 0 and (runs["small_unseen_miss"] / "compare_vs_perfect").is_dir()


def test_compare_refuses_incomparable_runs(runs, tmp_path, capsys):
    a = load_summary(runs["perfect"])
    b = load_summary(runs["perfect"] / "small_target")
    b["meta"]["min_area"] = 1
    with pytest.raises(DatasetError, match="differ in min_area"):
        compare_runs(a, b)
    with pytest.raises(DatasetError, match="unknown metric"):
        compare_runs(a, a, "accuracy")
    assert compare_main([str(tmp_path / "nothing"), str(runs["perfect"])]) == 1
    assert "no evaluation found" in capsys.readouterr().err

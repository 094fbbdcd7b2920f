"""End to end: `python -m zegformer.evaluate` on synthetic datasets in every layout.

The test writes the data (images, label maps, object masks) and the predictions itself, so the
answers are known: with the `small_unseen_miss` rule every seen object is found and every unseen
object under 1024 px is mislabelled as a seen class.
"""
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)

from zegformer.evaluation.cli import main  # noqa: E402
from zegformer.evaluation import synthetic  # noqa: E402
from zegformer.evaluation.aggregate import aggregate  # noqa: E402
from zegformer.evaluation.buckets import abs_bucket  # noqa: E402
from zegformer.evaluation.metrics import confusion_matrix, standard_metrics  # noqa: E402
from zegformer.evaluation.report import RUN_FIELDS, clean_json, read_csv  # noqa: E402
from zegformer.evaluation.runner import load_prediction  # noqa: E402
from zegformer.evaluation.small_targets import ClassInfo  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IGNORE = {"ade847": 65535}


def strict_json(path):
    def refuse(name):
        raise AssertionError(f"{path} contains {name}")

    return json.loads(Path(path).read_text(), parse_constant=refuse)


def write_predictions(directory, imgs, layout, rule="small_unseen_miss"):
    """The test's own prediction files: 8-bit PNG, or 16-bit for ADE's 847 classes."""
    directory.mkdir(parents=True, exist_ok=True)
    for im in imgs:
        pred = synthetic.predict(im, rule, layout)
        dtype = np.uint16 if layout == "ade847" else np.uint8
        Image.fromarray(pred.astype(dtype)).save(directory / f"{im.image_id}.png")
    return directory


def independent_miou(label_files, pred_dir, n, ignore, unseen):
    """IoU by boolean masks straight from the files: no code shared with the evaluator."""
    inter, union, gt_px = np.zeros(n), np.zeros(n), np.zeros(n)
    for f in label_files:
        gt = np.asarray(Image.open(f)).astype(np.int64)
        pred = np.asarray(Image.open(pred_dir / f"{f.stem}.png")).astype(np.int64)
        valid = gt != ignore
        for c in set(np.unique(gt[valid])) | set(np.unique(pred[valid])):
            g, p = (gt == c) & valid, (pred == c) & valid
            inter[c] += (g & p).sum()
            union[c] += (g | p).sum()
            gt_px[c] += g.sum()
    has = gt_px > 0
    iou = np.where(has, inter / np.maximum(union, 1), np.nan)
    compat = iou[has].sum() / (union > 0).sum()
    return np.nanmean(iou), np.nanmean(iou[~unseen & has]), np.nanmean(iou[unseen & has]), compat


def expected_counts(imgs, layout, min_area=16):
    """(abs bucket, split) -> number of headline objects, from the placed squares."""
    n = Counter()
    for im in imgs:
        for o in im.objects:
            if o.area >= min_area:
                n[(abs_bucket(o.area, min_area), "unseen" if o.unseen else "seen")] += 1
        if layout == "ade847":  # ADE annotates sky and grass as instances too (both seen)
            n[("M", "seen")] += 2
    return n


@pytest.mark.parametrize("layout", ["folder", "coco-stuff", "voc", "ade847"])
def test_from_predictions_every_layout(tmp_path, layout):
    imgs = synthetic.write_dataset(tmp_path / "data", layout, 3)
    preds = write_predictions(tmp_path / "preds", imgs, layout)
    out = tmp_path / "out"
    plots = [] if layout == "folder" else ["--no-plots"]  # plots: once is enough (slow-ish)
    assert main(["--dataset", layout, "--root", str(tmp_path / "data"), "--output", str(out),
                 "--from-predictions", str(preds), "--no-progress", *plots]) == 0
    st = out / "small_target"
    s = strict_json(st / "summary.json")
    assert s["meta"]["n_images"] == 3 and s["meta"]["dropped_small"] == 3  # the 3x3 squares
    assert s["meta"]["headline_source"] == "instance"
    names, unseen = synthetic.layout_classes(layout)
    unseen_mask = np.array([c in unseen for c in names])
    labels = sorted(Path(s["meta"]["split_file"]).iterdir())
    miou, seen, uns, compat = independent_miou(labels, preds, len(names),
                                               IGNORE.get(layout, 255), unseen_mask)
    strict = s["standard"]["strict"]
    assert strict["mIoU"] == pytest.approx(miou, abs=1e-9)
    assert strict["seen_mIoU"] == pytest.approx(seen, abs=1e-9)
    assert strict["unseen_mIoU"] == pytest.approx(uns, abs=1e-9)
    assert s["standard"]["compat"]["mIoU"] == pytest.approx(compat, abs=1e-9)
    if layout == "folder":  # every class has pixels: both conventions agree
        assert s["standard"]["compat"]["unseen_IoU"] == pytest.approx(uns, abs=1e-9)
    else:  # most official unseen classes have no pixels here: ZegFormer's mean is NaN -> null
        assert s["standard"]["compat"]["unseen_IoU"] is None
    counts = expected_counts(imgs, layout)
    for bucket in ("XS", "S", "M", "L"):
        rec = s["buckets"]["abs"][bucket]
        for split in ("seen", "unseen"):
            assert rec[split]["n_objects"] == counts[(bucket, split)], (bucket, split)
        assert rec["seen"]["recall@0.5"] in (1.0, None)
        want = 0.0 if bucket in ("XS", "S") else 1.0
        if counts[(bucket, "unseen")]:
            assert rec["unseen"]["recall@0.5"] == want
            assert rec["unseen"]["mean_coverage"] == want
    xs = s["buckets"]["abs"]["XS"]
    assert xs["unseen"]["dominant_other_seen_micro"] == 1.0  # novel -> seen confusion shown
    assert xs["harmonic"]["recall@0.5"] == 0.0
    rows = read_csv(st / "objects.csv")
    unseen_small = [r for r in rows if r["split"] == "unseen" and int(r["area_px"]) < 1024
                    and r["source"] == "instance"]
    first_seen = names.index(synthetic.CLASSES[layout][2][0])
    assert unseen_small and {int(r["maj_pred_class"]) for r in unseen_small} == {first_seen}
    for name in ("bucket_class", "bucket_split", "per_class", "segments", "dropped_small"):
        assert (st / f"{name}.csv").is_file()
    for png in ("size_curve_abs.png", "size_curve_rel.png"):
        assert (st / png).is_file() == (layout == "folder")
    if layout in ("folder", "coco-stuff"):  # stuff classes are connected components
        cc = s["buckets_cc"]["abs"]["M"]["all"]
        assert cc["n_objects"] == 6 and cc["recall@0.5"] == 1.0


def test_buckets_recompute_from_objects_csv(tmp_path):
    imgs = synthetic.write_dataset(tmp_path / "data", "folder", 3)
    preds = tmp_path / "p"
    synthetic.write_predictions(preds, imgs, "noisy", "folder")
    out = tmp_path / "out"
    args = ["--dataset", "folder", "--root", str(tmp_path / "data"), "--from-predictions",
            str(preds), "--no-progress", "--no-plots"]
    assert main(args + ["--output", str(out)]) == 0
    s = strict_json(out / "small_target/summary.json")
    names, unseen = synthetic.layout_classes("folder")
    classes = ClassInfo(names, np.array([c in unseen for c in names]))
    rows = read_csv(out / "small_target/objects.csv")
    segs = read_csv(out / "small_target/segments.csv")
    splits, _ = aggregate(rows, segs, classes, 16, source="instance")
    assert json.dumps(clean_json(splits), sort_keys=True) == json.dumps(s["buckets"],
                                                                         sort_keys=True)
    # min_area = 1 as a sensitivity run: the 3x3 squares become XS objects
    assert main(args + ["--output", str(tmp_path / "o1"), "--min-area", "1"]) == 0
    s1 = strict_json(tmp_path / "o1/small_target/summary.json")
    assert s1["meta"]["dropped_small"] == 0
    n0, n1 = (x["buckets"]["abs"]["XS"]["all"]["n_objects"] for x in (s, s1))
    assert n1 == n0 + 3


def _sections(summary):
    out = {k: v for k, v in summary.items() if k != "meta"}
    out["meta"] = {k: v for k, v in summary["meta"].items()
                   if k not in RUN_FIELDS + ("model", "mode", "untrained")}
    return json.dumps(out, sort_keys=True)


def test_random_model_run_resume_and_recompute(tmp_path, capsys):
    synthetic.write_dataset(tmp_path / "data", "folder", 3)
    out = tmp_path / "run"
    args = ["--dataset", "folder", "--root", str(tmp_path / "data"), "--output", str(out),
            "--random-weights", "--no-progress", "--no-plots"]
    assert main(args + ["--max-images", "1"]) == 0  # an "interrupted" run: one image done
    assert main(args) == 0
    s = strict_json(out / "small_target/summary.json")
    assert s["meta"]["reused_predictions"] == 1 and s["meta"]["untrained"] is True
    assert "untrained" in s["meta"]["model"]
    pred_files = sorted((out / "predictions").glob("*.png"))
    assert [p.stem for p in pred_files] == ["img_001", "img_002", "img_003"]
    # the CLI's metrics equal the ones recomputed from the saved predictions
    names, unseen = synthetic.layout_classes("folder")
    conf = sum(confusion_matrix(np.asarray(Image.open(tmp_path / f"data/labels/{p.name}")),
                                load_prediction(p, len(names)), len(names), 255)
               for p in pred_files)
    assert clean_json(standard_metrics(conf, names, unseen)) == s["standard"]
    assert main(args[:4] + ["--output", str(tmp_path / "again"), "--from-predictions",
                            str(out / "predictions"), "--no-progress", "--no-plots"]) == 0
    again = strict_json(tmp_path / "again/small_target/summary.json")
    assert _sections(again) == _sections(s)
    # resuming after a lost file re-predicts only that image, with the same result
    before = (out / "predictions/img_002.png").read_bytes()
    (out / "predictions/img_002.png").unlink()
    assert main(args) == 0
    resumed = strict_json(out / "small_target/summary.json")
    assert resumed["meta"]["reused_predictions"] == 2
    assert (out / "predictions/img_002.png").read_bytes() == before
    assert _sections(resumed) == _sections(s)
    capsys.readouterr()
    assert main(args + ["--mode", "pixel"]) == 1  # never mix two models' predictions
    assert "holds predictions of another run" in capsys.readouterr().err


def test_cli_errors(tmp_path, capsys):
    assert main(["--dataset", "folder", "--root", str(tmp_path / "x"), "--output",
                 str(tmp_path / "o"), "--from-predictions", str(tmp_path)]) == 1
    assert "dataset root" in capsys.readouterr().err
    assert main(["--dataset", "folder", "--root", str(tmp_path), "--output", str(tmp_path)]) == 2
    assert "--config-file" in capsys.readouterr().err
    imgs = synthetic.write_dataset(tmp_path / "d", "folder", 2)
    preds = write_predictions(tmp_path / "p", imgs, "folder")
    base = ["--dataset", "folder", "--root", str(tmp_path / "d"), "--output", str(tmp_path / "o"),
            "--no-progress", "--from-predictions", str(preds)]
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(preds / "img_002.png")
    assert main(base) == 1
    assert "is 5x5 but the label map" in capsys.readouterr().err
    (preds / "img_002.png").unlink()
    assert main(base) == 1
    assert "no prediction for 'img_002'" in capsys.readouterr().err
    Image.fromarray(np.full((128, 192), 7, np.uint8)).save(preds / "img_002.png")
    assert main(base) == 1
    assert "values [7] outside the class list" in capsys.readouterr().err
    assert main(base[:-2] + ["--config-file", "nope.yaml", "--max-images", "0"]) == 2


def test_python_dash_m_entry_point(tmp_path):
    imgs = synthetic.write_dataset(tmp_path / "d", "folder", 2)
    preds = write_predictions(tmp_path / "p", imgs, "folder", rule="perfect")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "zegformer.evaluate", "--dataset", "folder", "--root",
         str(tmp_path / "d"), "--output", str(tmp_path / "o"), "--from-predictions", str(preds)],
        capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "100%" in proc.stderr and "img" in proc.stderr  # tqdm bar with rate / ETA
    assert "seen | novel" in proc.stdout and "R@.5 novel" in proc.stdout
    s = strict_json(tmp_path / "o/small_target/summary.json")
    assert s["standard"]["strict"]["mIoU"] == 1.0 and s["iiou"]["harmonic"] == 1.0

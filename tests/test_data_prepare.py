"""Dataset preparation: raw-format fixtures per dataset -> the official prepared layouts.

Expected values come from the official scripts' id tables (written out below as facts: raw id,
name, output ids), not from the package's own tables.
"""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from PIL import Image

from zegformer.data.official import build_dataset
from zegformer.data.prepare import prepare_dataset
from zegformer.data.prepare.__main__ import main
from zegformer.errors import DatasetError

# COCO-Stuff stuffthingmaps id -> (name, seen id or None, unseen id or None, all id), from the
# official COCO_CATEGORIES_Seen / _Unseen tables of prepare_coco_stuff_sem_seg_*.py.
COCO_FACTS = {
    0: ("person", 0, None, 0), 10: ("fire hydrant", 10, None, 10), 12: ("stop sign", 11, None, 11),
    19: ("sheep", 18, None, 18), 20: ("cow", None, 0, 156), 21: ("elephant", 19, None, 19),
    24: ("giraffe", None, 1, 157), 89: ("toothbrush", 72, None, 72), 91: ("banner", 73, None, 73),
    99: ("cardboard", None, 7, 163), 123: ("grass", None, 9, 165), 168: ("tree", None, 13, 169),
    171: ("wall-concrete", None, 14, 170), 172: ("wall-other", 146, None, 146),
    181: ("wood", 155, None, 155),
}
COCO_UNSEEN = ["cow", "giraffe", "suitcase", "frisbee", "skateboard", "carrot", "scissors",
               "cardboard", "clouds", "grass", "playingfield", "river", "road", "tree",
               "wall-concrete"]
# ADE20K class-mask id -> (name, trainId, rare), from ADE20K_SEM_SEG_FULL_CATEGORIES.
ADE_FACTS = {2978: ("wall", 0, False), 2185: ("runway", 52, False), 170: ("beds", 376, True),
             3148: ("adding machine, totalizer, totaliser", 846, True)}


def _expected(raw: np.ndarray, table: dict[int, int | None], ignore: int) -> np.ndarray:
    out = np.full(raw.shape, ignore, dtype=np.int64)
    for v, o in table.items():
        if o is not None:
            out[raw == v] = o
    return out


def _read(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im).astype(np.int64)


def _mtimes(root) -> dict:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def _coco_raw(root, rng):
    base = root / "coco" / "coco_stuff" / "annotations"
    values = np.array(list(COCO_FACTS) + [255])
    raws = {}
    for split, n in (("train2017", 2), ("val2017", 3)):
        (base / split).mkdir(parents=True)
        for i in range(n):
            raw = rng.choice(values, size=(24 + i, 32)).astype(np.uint8)
            raw[:2, :len(values)] = values  # every fact occurs
            name = f"{split}_{i:06d}.png"
            Image.fromarray(raw).save(base / split / name)
            raws[(split, name)] = raw
    return raws


def test_coco_stuff_outputs_match_the_official_tables(tmp_path):
    raws = _coco_raw(tmp_path, np.random.default_rng(0))
    report = prepare_dataset("coco-stuff", tmp_path, workers=1, progress=False)
    assert report.ok, report.format()
    base = tmp_path / "coco" / "coco_stuff"
    seen = {v: f[1] for v, f in COCO_FACTS.items()}
    unseen = {v: f[2] for v, f in COCO_FACTS.items()}
    full = {v: f[3] for v, f in COCO_FACTS.items()}
    outputs = {"train2017": [("train2017", seen)],
               "val2017": [("val2017_seen", seen), ("val2017_unseen", unseen),
                           ("val2017_all", full)]}
    for (split, name), raw in raws.items():
        for out_dir, table in outputs[split]:
            path = base / "annotations_detectron2" / out_dir / name
            with Image.open(path) as im:
                assert im.mode == "L" and im.format == "PNG"
            np.testing.assert_array_equal(_read(path), _expected(raw, table, 255), err_msg=out_dir)
    assert (base / "images_detectron2" / "val2017_unseen").is_dir()
    split = base / "split"
    seen_names = json.loads((split / "seen_classnames.json").read_text())
    assert len(seen_names) == 156 and seen_names[0] == "person" and seen_names[-1] == "wood"
    assert json.loads((split / "unseen_classnames.json").read_text()) == COCO_UNSEEN
    assert json.loads((split / "all_classnames.json").read_text()) == seen_names + COCO_UNSEEN
    all_ids = json.loads((split / "all_indexes.json").read_text())
    for v, (name, _, _, a) in COCO_FACTS.items():  # names and ids line up with the tables
        assert all_ids[a] == v and (seen_names + COCO_UNSEEN)[a] == name
    assert report.splits["annotations_detectron2/val2017_all"].written == 3
    assert report.splits["annotations_detectron2/val2017_unseen"].classes == {0, 1, 7, 9, 13, 14}
    # The evaluation reads what was written.
    ds = build_dataset("coco-stuff", tmp_path, need_images=False)
    assert [r.image_id for r in ds.records] == [f"val2017_{i:06d}" for i in range(3)]
    np.testing.assert_array_equal(ds.load_gt(ds.records[1]),
                                  _expected(raws[("val2017", "val2017_000001.png")], full, 255))


def test_rerun_is_a_no_op_and_a_damaged_output_is_redone(tmp_path):
    _coco_raw(tmp_path, np.random.default_rng(1))
    prepare_dataset("coco-stuff", tmp_path, workers=1, progress=False)
    before = _mtimes(tmp_path)
    again = prepare_dataset("coco-stuff", tmp_path, workers=1, progress=False)
    assert _mtimes(tmp_path) == before
    assert all(s.written == 0 for s in again.splits.values())
    assert again.splits["annotations_detectron2/val2017_seen"].skipped == 3
    assert len(again.class_files_kept) == 6 and not again.class_files_written
    assert "skipped" in again.format()
    # A half-written output (e.g. a killed run of another tool) is found and redone.
    damaged = tmp_path / "coco/coco_stuff/annotations_detectron2/val2017_all/val2017_000002.png"
    damaged.write_bytes(damaged.read_bytes()[:-20])
    third = prepare_dataset("coco-stuff", tmp_path, workers=1, progress=False)
    assert third.splits["annotations_detectron2/val2017_all"].written == 1
    after = _mtimes(tmp_path)
    assert [p for p in after if after[p] != before[p]] == [damaged]


def test_bad_files_are_reported_and_the_others_finish(tmp_path, capsys):
    _coco_raw(tmp_path, np.random.default_rng(2))
    val = tmp_path / "coco/coco_stuff/annotations/val2017"
    (val / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    Image.fromarray(np.full((4, 4), 11, np.uint8)).save(val / "unused_id.png")  # id 11 is unused
    rc = main(["coco-stuff", "--root", str(tmp_path), "--workers", "2", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "FAILED: 2 files" in out
    assert f"{val / 'unused_id.png'} has label values [11] outside" in out
    assert f"cannot read label map {val / 'corrupt.png'}" in out
    written = tmp_path / "coco/coco_stuff/annotations_detectron2/val2017_all"
    assert sorted(p.name for p in written.iterdir()) == [f"val2017_{i:06d}.png" for i in range(3)]


def test_wrong_root_is_one_line_naming_the_expected_folder(tmp_path, capsys):
    assert main(["coco-stuff", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(tmp_path / "coco/coco_stuff/annotations") in err
    assert main(["voc", "--root", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(DatasetError, match="ADE20K_2021_17_01/index_ade20k.pkl"):
        prepare_dataset("ade847", tmp_path, progress=False)


def test_voc_outputs_v2_split_and_class_files(tmp_path):
    base = tmp_path / "VOCZERO"
    rng = np.random.default_rng(3)
    values = np.array([0, 1, 5, 15, 16, 18, 20, 255])
    stems = {"train": ["2008_004469", "2099_000001"], "val": ["2007_000033"]}  # first: SPNet list
    raws = {}
    for split, names in stems.items():
        (base / "annotations" / split).mkdir(parents=True)
        (base / "images" / split).mkdir(parents=True)
        for s in names:
            raw = rng.choice(values, size=(20, 28)).astype(np.uint8)
            raw[0, :len(values)] = values
            Image.fromarray(raw).save(base / "annotations" / split / f"{s}.png")
            Image.fromarray(rng.integers(0, 255, (20, 28, 3), dtype=np.uint8)).save(
                base / "images" / split / f"{s}.jpg")
            raws[(split, s)] = raw
    report = prepare_dataset("voc", tmp_path, workers=1, progress=False)
    assert report.ok, report.format()
    seen = {v: v - 1 for v in range(1, 16)}
    unseen = {v: v - 16 for v in range(16, 21)}
    full = {v: v - 1 for v in range(1, 21)}
    for (split, s), raw in raws.items():
        for out, table in ([("train_seen", seen)] if split == "train" else
                           [("val_seen", seen), ("val_unseen", unseen), ("val_all", full)]):
            got = _read(base / "annotations_detectron2" / out / f"{s}.png")
            np.testing.assert_array_equal(got, _expected(raw, table, 255), err_msg=out)
    v2 = base / "annotations_detectron2_v2"
    assert [p.name for p in (v2 / "train_seen").iterdir()] == ["2008_004469.png"]
    np.testing.assert_array_equal(_read(v2 / "train_seen/2008_004469.png"),
                                  _expected(raws[("train", "2008_004469")], seen, 255))
    copied = base / "images_detectron2/train_seen/2008_004469.jpg"
    assert copied.read_bytes() == (base / "images/train/2008_004469.jpg").read_bytes()
    assert list((v2 / "val_seen").iterdir()) == [] and (base / "images_detectron2/val_seen").is_dir()
    names = json.loads((base / "all_classnames.json").read_text())
    assert names[10] == "diningtable" and names[15] == "potted plant" and len(names) == 20
    assert json.loads((base / "unseen_classnames.json").read_text()) == [
        "potted plant", "sheep", "sofa", "train", "tvmonitor"]
    assert (base / "seen_categories.json").read_text() == (base / "seen_classnames.json").read_text()
    ds = build_dataset("voc", tmp_path)
    np.testing.assert_array_equal(ds.load_gt(ds.records[0]),
                                  _expected(raws[("val", "2007_000033")], full, 255))


def _seg_png(path, classes: np.ndarray) -> None:
    rgb = np.zeros(classes.shape + (3,), np.uint8)
    rgb[..., 0] = classes // 256 * 10
    rgb[..., 1] = classes % 256
    rgb[..., 2] = np.arange(classes.size).reshape(classes.shape) % 7  # instance channel
    Image.fromarray(rgb).save(path)


def _ade_raw(root, rng, extra_value=None):
    base = root / "ADE20K_2021_17_01"
    entries = [("validation/home/bedroom", "ADE_val_00000001.jpg", (600, 800)),
               ("validation/home/kitchen", "ADE_val_00000002.jpg", (30, 40)),
               ("training/urban/street", "ADE_frame_00000003.jpg", (40, 30))]
    outside = 5  # an ADE20K class that is not one of the 847
    values = np.array([0, outside, *ADE_FACTS])
    folders, names, masks = [], [], {}
    for folder, name, (h, w) in entries:
        d = base / "images" / "ADE" / folder
        d.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(d / name,
                                                                              quality=95)
        cls = np.repeat(np.repeat(rng.choice(values, size=(h // 10, w // 10)), 10, 0), 10, 1)
        cls[0, : len(values)] = values
        if extra_value is not None and name.endswith("2.jpg"):
            cls[5, 5] = extra_value
        _seg_png(d / name.replace(".jpg", "_seg.png"), cls)
        folders.append(f"ADE20K_2021_17_01/images/ADE/{folder}")
        names.append(name)
        masks[name] = cls
    index = {"folder": folders, "filename": names, "objectnames": [f"c{i}" for i in range(3688)],
             "objectPresence": np.zeros((3688, 3), np.uint8)}
    with open(base / "index_ade20k.pkl", "wb") as f:
        pickle.dump(index, f)
    return base, masks


def test_ade847_outputs_resize_and_class_files(tmp_path):
    import cv2

    from zegformer.data.vocabularies import load_vocabulary

    base, masks = _ade_raw(tmp_path, np.random.default_rng(4))
    report = prepare_dataset("ade847", tmp_path, workers=1, progress=False)
    assert report.ok, report.format()
    unseen_names = load_vocabulary("ade20k_full_847")["unseen"]
    seen = {2978: 0, 2185: 52, 170: None, 3148: None}  # no rare class before trainId 52
    full = {v: t for v, (_, t, _) in ADE_FACTS.items()}
    unseen = {v: unseen_names.index(n) if r else None for v, (n, _, r) in ADE_FACTS.items()}
    assert unseen[3148] == 274
    ann, img = base / "annotations_detectron2_freq", base / "images_detectron2_freq"
    big = cv2.resize(masks["ADE_val_00000001.jpg"].astype(np.int32), (683, 512),
                     interpolation=cv2.INTER_NEAREST)
    cases = {"ADE_val_00000001": (big, ["validation_seen", "val_all", "val_unseen"]),
             "ADE_val_00000002": (masks["ADE_val_00000002.jpg"],
                                  ["validation_seen", "val_all", "val_unseen"]),
             "ADE_frame_00000003": (masks["ADE_frame_00000003.jpg"], ["training_seen"])}
    tables = {"validation_seen": seen, "training_seen": seen, "val_all": full, "val_unseen": unseen}
    for stem, (cls, outs) in cases.items():
        for out in outs:
            with Image.open(ann / out / f"{stem}.tif") as im:
                assert im.mode == "I;16" and im.format == "TIFF"
                got = np.asarray(im).astype(np.int64)
            np.testing.assert_array_equal(got, _expected(cls, tables[out], 65535), err_msg=out)
    assert sorted(p.name for p in (ann / "val_all").iterdir()) == [
        "ADE_val_00000001.tif", "ADE_val_00000002.tif"]
    with Image.open(img / "validation/ADE_val_00000001.jpg") as im:
        assert im.size == (683, 512) and im.format == "JPEG"
    with Image.open(img / "training/ADE_frame_00000003.jpg") as im:
        assert im.size == (30, 40)
    names = json.loads((base / "ADE20K_847_pure_class.json").read_text())
    assert len(names) == 847 and names[52] == "runway"
    assert json.loads((base / "ADE20K_275_pure_class.json").read_text()) == unseen_names
    assert len(json.loads((base / "ADE20K_572_pure_class.json").read_text())) == 572
    ds = build_dataset("ade847", tmp_path)
    assert ds.ignore_label == 65535 and len(ds.records) == 2
    np.testing.assert_array_equal(ds.load_gt(ds.records[0]), _expected(big, full, 65535))
    before = _mtimes(tmp_path)
    again = prepare_dataset("ade847", tmp_path, workers=2, progress=False)
    assert _mtimes(tmp_path) == before and again.ok
    assert again.splits["images_detectron2_freq/validation"].skipped == 2


def test_ade847_bad_values_and_unsafe_index(tmp_path):
    base, _ = _ade_raw(tmp_path, np.random.default_rng(5), extra_value=3689 + 100)
    report = prepare_dataset("ade847", tmp_path, workers=1, progress=False)
    assert len(report.failures) == 1 and "ADE_val_00000002_seg.png has label values [3789]" in \
        report.failures[0]
    assert (base / "annotations_detectron2_freq/val_all/ADE_val_00000001.tif").is_file()
    with open(base / "index_ade20k.pkl", "wb") as f:
        pickle.dump({"folder": [], "filename": [], "x": DatasetError("code")}, f)
    with pytest.raises(DatasetError, match="cannot be read safely.*--trust-pickle"):
        prepare_dataset("ade847", tmp_path, progress=False)


def test_shipped_tables_agree_with_the_split_lists():
    from zegformer.data.prepare.ade20k_full import ade_tables, resized_size
    from zegformer.data.prepare.coco_stuff import coco_stuff_ids
    from zegformer.data.prepare.common import read_split_ints
    from zegformer.data.vocabularies import load_vocabulary

    ids, n_seen = coco_stuff_ids()
    train = set(read_split_ints("coco_stuff_seen_cls.txt")) | set(
        read_split_ints("coco_stuff_val_cls.txt"))
    assert n_seen == 156 and ids[:156] == sorted(train & set(ids))
    assert ids[156:] == read_split_ints("coco_stuff_novel_cls.txt")
    vocab = load_vocabulary("coco_stuff_171")
    assert [vocab["classes"][ids.index(v)] for v in COCO_FACTS] == [f[0] for f in
                                                                   COCO_FACTS.values()]
    ade_ids, rare = ade_tables()
    ade = load_vocabulary("ade20k_full_847")
    assert len(set(ade_ids)) == 847 and [ade["classes"][i] for i in sorted(rare)] == ade["unseen"]
    for v, (name, t, r) in ADE_FACTS.items():
        assert ade_ids[t] == v and ade["classes"][t] == name and (t in rare) == r
    assert read_split_ints("voc12_seen_cls.txt") == list(range(1, 16))
    assert read_split_ints("voc12_novel_cls.txt") == list(range(16, 21))
    assert resized_size(800, 600) == (683, 512) and resized_size(600, 800) == (512, 683)
    assert resized_size(1025, 1024) == (512, 512) and resized_size(1027, 1024) == (514, 512)
    assert resized_size(1000, 512) == (1000, 512) and resized_size(2049, 1026) == (1023, 512)

"""Dataset layouts (official ZegFormer ones and `folder`) built from tiny synthetic files."""
import json
import os

import numpy as np
import pytest
from PIL import Image

os.environ["HF_HUB_OFFLINE"] = "1"

from zegformer.data.datasets import DatasetError  # noqa: E402
from zegformer.data.objects import extract_objects  # noqa: E402
from zegformer.data.official import (  # noqa: E402
    build_dataset,
    nearest_resize_cv2,
    official_vocabulary,
)
from zegformer.evaluation.synthetic import write_dataset  # noqa: E402


def objects_of(ds, k=0):
    r = ds.records[k]
    gt = ds.load_gt(r)
    objs = extract_objects(gt, ds.ignore_label, ds.load_instances(r, gt), 16)
    return sorted((o.source, ds.vocab.classes[o.class_id], o.area) for o in objs.kept), objs


def test_official_vocabularies():
    coco, voc, ade = (official_vocabulary(d) for d in ("coco-stuff", "voc", "ade847"))
    assert (len(coco.classes), len(coco.unseen)) == (171, 15)
    assert coco.unseen_mask[156:].all() and not coco.unseen_mask[:156].any()
    assert "frisbee" in coco.unseen and "grass" in coco.unseen
    assert (len(voc.classes), voc.unseen) == (20, ["potted plant", "sheep", "sofa", "train",
                                                   "tvmonitor"])
    assert (len(ade.classes), len(ade.unseen)) == (847, 275)


@pytest.mark.parametrize("objects", ["panoptic", "instances"])
def test_coco_stuff_layout(tmp_path, objects):
    imgs = write_dataset(tmp_path, "coco-stuff", 2, coco_objects=objects)
    ds = build_dataset("coco-stuff", tmp_path)
    assert [r.image_id for r in ds.records] == ["000000000001", "000000000002"]
    assert ds.records[0].image_path.name == "000000000001.jpg"
    assert ds.ignore_label == 255 and len(ds.vocab.classes) == 171
    names = {ds.vocab.classes[c] for c in ds.instance_classes}
    assert names == {"cat", "dog", "frisbee", "cow"}
    found, objs = objects_of(ds)
    expected = sorted([("instance", o.class_name, o.area) for o in imgs[0].objects if o.area >= 16]
                      + [("cc", "sky-other", 5939), ("cc", "grass", 6060)])
    assert found == expected  # the crowd square (100 px of cat) is no object
    assert [o.area for o in objs.dropped] == [9]
    assert ("instance", imgs[0].objects[5].class_name, 144) in found  # side-by-side pair: 2 x 144


def test_voc_layout_with_segmentation_object_and_void_ring(tmp_path):
    imgs = write_dataset(tmp_path, "voc", 2)
    ds = build_dataset("voc", tmp_path)
    assert ds.instance_classes is None and "SegmentationObject" in ds.object_source
    gt = ds.load_gt(ds.records[0])
    assert (gt == 255).mean() > 0.4  # background is ignored in ZegFormer's VOC
    found, _ = objects_of(ds)
    assert found == sorted(("instance", o.class_name, o.area) for o in imgs[0].objects
                           if o.area >= 16)


def test_ade847_layout_16bit_and_resized_instance_channel(tmp_path):
    imgs = write_dataset(tmp_path, "ade847", 2)
    ds = build_dataset("ade847", tmp_path)
    assert ds.ignore_label == 65535 and ds.records[0].label_path.suffix == ".tif"
    gt = ds.load_gt(ds.records[0])
    assert gt.dtype == np.int64 and gt.max() < 847
    found, _ = objects_of(ds)
    things = [("instance", o.class_name, o.area) for o in imgs[0].objects if o.area >= 16]
    assert found == sorted(things + [("instance", "sky", 5939), ("instance", "grass", 6160)])


def test_nearest_resize_follows_opencv_rule():
    a = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(nearest_resize_cv2(np.kron(a, np.ones((2, 2), int)), 3, 4), a)
    np.testing.assert_array_equal(nearest_resize_cv2(np.arange(5)[None], 1, 2), [[0, 2]])


def test_folder_layout(tmp_path):
    write_dataset(tmp_path, "folder", 2)
    ds = build_dataset("folder", tmp_path)
    assert ds.vocab.unseen == ["frisbee", "cow"]
    assert {ds.vocab.classes[c] for c in ds.instance_classes} == {"cat", "dog", "frisbee", "cow"}
    found, _ = objects_of(ds)
    assert ("cc", "sky", 5939) in found
    shutil_free = tmp_path / "objects"
    for p in shutil_free.iterdir():
        p.unlink()
    shutil_free.rmdir()
    ds = build_dataset("folder", tmp_path)  # without objects/: connected components everywhere
    found, _ = objects_of(ds)
    assert {s for s, _, _ in found} == {"cc"}
    assert ("cc", ds.vocab.classes[ds.load_gt(ds.records[0])[80, 4]], 288) in found  # the pair


def test_errors_are_clear(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        build_dataset("folder", tmp_path / "nope")
    with pytest.raises(DatasetError, match="not a folder dataset"):
        build_dataset("folder", tmp_path)
    with pytest.raises(DatasetError, match="COCO-Stuff label maps.*prepare_coco_stuff"):
        build_dataset("coco-stuff", tmp_path)
    with pytest.raises(DatasetError, match="unknown dataset"):
        build_dataset("cityscapes", tmp_path)
    write_dataset(tmp_path, "folder", 2)
    (tmp_path / "images" / "img_002.png").unlink()
    with pytest.raises(DatasetError, match="1 label maps have no image.*img_002"):
        build_dataset("folder", tmp_path)
    assert build_dataset("folder", tmp_path, need_images=False).records[1].image_path is None
    (tmp_path / "objects" / "img_001.png").unlink()
    with pytest.raises(DatasetError, match="no object map for 1 images"):
        build_dataset("folder", tmp_path, need_images=False)


def test_label_values_outside_class_list(tmp_path):
    write_dataset(tmp_path, "folder", 1)
    bad = np.zeros((4, 4), np.uint8)
    bad[0, 0] = 9
    Image.fromarray(bad).save(tmp_path / "labels" / "img_001.png")
    ds = build_dataset("folder", tmp_path)
    with pytest.raises(DatasetError, match=r"values \[9\] outside the class list \(6 classes"):
        ds.load_gt(ds.records[0])
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "labels" / "img_001.png")
    with pytest.raises(DatasetError, match="mode RGB"):
        ds.load_gt(ds.records[0])


def test_object_map_size_mismatch(tmp_path):
    write_dataset(tmp_path, "folder", 1)
    Image.fromarray(np.zeros((5, 5), np.uint16)).save(tmp_path / "objects" / "img_001.png")
    ds = build_dataset("folder", tmp_path)
    r = ds.records[0]
    with pytest.raises(DatasetError, match="is 5x5 but its label map is 192x128"):
        ds.load_instances(r, ds.load_gt(r))


@pytest.mark.parametrize("doc, message", [
    ({"classes": ["a", "b"], "unseen": ["c"]}, "unseen classes not in"),
    ({"classes": ["a", "a"]}, "listed twice"),
    ({"classes": []}, "non-empty list"),
    (["a"], "JSON object"),
])
def test_bad_class_lists(tmp_path, doc, message):
    write_dataset(tmp_path, "folder", 1)
    (tmp_path / "classes.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=message):
        build_dataset("folder", tmp_path)


def test_classes_override_and_things_validation(tmp_path):
    write_dataset(tmp_path, "folder", 1)
    other = tmp_path / "other.json"
    names = ["sky", "grass", "cat", "dog", "frisbee", "cow"]
    other.write_text(json.dumps({"classes": names, "unseen": ["sky"]}))
    ds = build_dataset("folder", tmp_path, classes=other)
    assert ds.vocab.unseen == ["sky"]
    doc = json.loads((tmp_path / "classes.json").read_text())
    doc["things"] = ["unicorn"]
    (tmp_path / "classes.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match="things.*unicorn"):
        build_dataset("folder", tmp_path)


def test_explicit_object_source_must_exist(tmp_path):
    write_dataset(tmp_path, "voc", 1)
    with pytest.raises(DatasetError, match="object directory .* does not exist"):
        build_dataset("voc", tmp_path, objects=str(tmp_path / "missing"))
    with pytest.raises(DatasetError, match="not used by the folder layout"):
        build_dataset("folder", tmp_path, objects="x")

"""PASCAL VOC 2012 with ZegFormer's CaGNet/SPNet split (15 seen, 5 unseen classes).

Reads the CaGNet layout ``VOCZERO/annotations/{train,val}/*.png`` (0 = background, 1..20 the VOC
classes, 255 = boundary) and ``VOCZERO/images/{train,val}/*.jpg``, and writes what the official
``datasets/pascal/prepare_pascal_voc_{seen,seenv2,unseen_val,val_all}.py``,
``create_voc_class_names_json.py`` and ``class_split.py`` write:

* ``annotations_detectron2/{train_seen,val_seen}``: classes 1..15 -> 0..14; background,
  boundary and the unseen classes 16..20 -> 255;
* ``annotations_detectron2/val_unseen``: 16..20 -> 0..4, everything else -> 255;
* ``annotations_detectron2/val_all``: 1..20 -> 0..19, background and boundary -> 255;
* the "v2" split (configs/pascal_voc2): ``annotations_detectron2_v2/{train_seen,val_seen}`` and
  the images copied to ``images_detectron2/{train_seen,val_seen}``, only for the images in
  SPNet's 10,582-image train list (shipped in ``zegformer/data/splits/voc12_train_list.txt``);
  like the official script, the val images are filtered by that train list too, so
  ``val_seen`` of v2 is empty with the standard VOC split;
* ``{seen,unseen,all}_classnames.json`` and ``{seen,unseen,all}_categories.json`` in VOCZERO.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DatasetError
from ..vocabularies import load_vocabulary
from .common import (
    SPLITS_DIR,
    Job,
    LabelOutput,
    find_dataset_dir,
    read_split_ints,
)
from .remap import (Copy, RemapSpec, add_remap_tasks, known_values, remap_worker,
                    seen_unseen_tables)

V1_OUTPUTS = {"train": {"train_seen": "seen"},
              "val": {"val_seen": "seen", "val_unseen": "unseen", "val_all": "all"}}


def tables() -> dict[str, np.ndarray]:
    """uint8[256] lookups raw VOC value -> output id for the "seen", "unseen", "all" outputs."""
    seen, novel = read_split_ints("voc12_seen_cls.txt"), read_split_ints("voc12_novel_cls.txt")
    return seen_unseen_tables(seen, novel)

def train_list() -> set[str]:
    """SPNet's PASCAL VOC train_aug list (10,582 image ids): the images of the v2 split."""
    return set((SPLITS_DIR / "voc12_train_list.txt").read_text(encoding="utf-8").split())


def class_files(base: Path) -> dict[Path, object]:
    vocab = load_vocabulary("pascal_voc_20")
    unseen = set(vocab["unseen"])
    seen_names = [c for c in vocab["classes"] if c not in unseen]
    unseen_names = [c for c in vocab["classes"] if c in unseen]
    out: dict[Path, object] = {}
    for kind in ("classnames", "categories"):
        out[base / f"all_{kind}.json"] = list(vocab["classes"])
        out[base / f"seen_{kind}.json"] = seen_names
        out[base / f"unseen_{kind}.json"] = unseen_names
    return out


def plan(root: Path) -> Job:
    """The VOC job under ``root`` (DATASETS or the VOCZERO folder itself)."""
    base = find_dataset_dir(
        root, ["VOCZERO", "."], "annotations",
        "the CaGNet PASCAL VOC layout: VOCZERO/annotations/{train,val}/*.png and "
        "VOCZERO/images/{train,val}/*.jpg")
    spec = RemapSpec(tables(), known_values(range(21)),
                     "the PASCAL VOC ids (0 = background, 1..20, 255)")
    ann, ann2, img2 = (base / "annotations_detectron2", base / "annotations_detectron2_v2",
                       base / "images_detectron2")
    dirs = [ann / d for outs in V1_OUTPUTS.values() for d in outs]
    dirs += [ann2 / "train_seen", ann2 / "val_seen", img2 / "train_seen", img2 / "val_seen"]
    job = Job("voc", base, [], remap_worker, spec, class_files(base), dirs)
    v2 = train_list()

    def v2_split(raw_split: str, f: Path) -> tuple[list[LabelOutput], tuple[Copy, ...]]:
        if f.stem not in v2:
            return [], ()
        name = f"{raw_split}_seen"
        return ([LabelOutput(f"annotations_detectron2_v2/{name}", ann2 / name / f.name, "seen")],
                ((f"images_detectron2/{name}", base / "images" / raw_split / f"{f.stem}.jpg",
                  img2 / name / f"{f.stem}.jpg"),))

    found = add_remap_tasks(job, base / "annotations", V1_OUTPUTS, ann, v2_split)
    if not found:
        raise DatasetError(f"no VOC label maps in {base / 'annotations'}/train or val")
    images = base / "images" / "val"
    if not images.is_dir():
        job.notes.append(f"{images} is missing: the evaluation needs the val images there")
    return job

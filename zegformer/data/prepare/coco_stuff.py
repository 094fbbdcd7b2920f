"""COCO-Stuff 171 (ZegFormer's 156 seen / 15 unseen split) from the stuffthingmaps download.

Reads ``coco/coco_stuff/annotations/{train2017,val2017}/*.png`` (stuffthingmaps_trainval2017:
0-based COCO ids 0..181, 255 = unlabelled) and writes, as the official
``datasets/coco-stuff/prepare_coco_stuff_sem_seg_{seen,unseen,val_all}.py`` and
``create_cocostuff_class_names_json.py`` / ``create_cocostuff_seen_wordvecindexes_json.py`` do:

* ``annotations_detectron2/train2017`` and ``val2017_seen``: seen classes 0..155 (COCO id order),
  unseen classes and unlabelled -> 255;
* ``annotations_detectron2/val2017_unseen``: unseen classes 0..14, everything else -> 255;
* ``annotations_detectron2/val2017_all``: seen 0..155 then unseen 156..170, unlabelled -> 255;
* ``split/{seen,unseen,all}_classnames.json`` and ``split/{seen,unseen,all}_indexes.json``;
* the empty folder ``images_detectron2/val2017_unseen`` the official unseen script creates.

Every output is an 8-bit PNG with the raw file's name. The 11 COCO ids that stuffthingmaps never
use (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90) and anything else above 181 but 255 are errors.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DatasetError
from ..vocabularies import load_vocabulary
from .common import Job, find_dataset_dir, read_split_json
from .remap import (RemapSpec, add_remap_tasks, known_values, remap_worker,
                    seen_unseen_tables)

VAL_OUTPUTS = {"val2017_seen": "seen", "val2017_unseen": "unseen", "val2017_all": "all"}


def coco_stuff_ids() -> tuple[list[int], int]:
    """(the 171 stuffthingmaps ids in ZegFormer's contiguous order, number of seen classes)."""
    table = read_split_json("coco_stuff_171_ids.json")
    return list(table["ids"]), int(table["num_seen"])


def tables() -> dict[str, np.ndarray]:
    """uint8[256] lookups raw id -> output id for the "seen", "unseen" and "all" outputs."""
    ids, n_seen = coco_stuff_ids()
    return seen_unseen_tables(ids[:n_seen], ids[n_seen:])


def class_files(base: Path) -> dict[Path, object]:
    vocab = load_vocabulary("coco_stuff_171")
    unseen = set(vocab["unseen"])
    seen_names = [c for c in vocab["classes"] if c not in unseen]
    unseen_names = [c for c in vocab["classes"] if c in unseen]
    ids, n_seen = coco_stuff_ids()
    split = base / "split"
    return {
        split / "seen_classnames.json": seen_names,
        split / "unseen_classnames.json": unseen_names,
        split / "all_classnames.json": seen_names + unseen_names,
        split / "seen_indexes.json": ids[:n_seen],
        split / "unseen_indexes.json": ids[n_seen:],
        split / "all_indexes.json": ids,
    }


def plan(root: Path) -> Job:
    """The COCO-Stuff job under ``root`` (DATASETS, ``DATASETS/coco`` or the coco_stuff folder)."""
    base = find_dataset_dir(
        root, ["coco/coco_stuff", "coco_stuff", "."], "annotations",
        "unzip stuffthingmaps_trainval2017.zip into coco/coco_stuff/annotations/, giving "
        "annotations/train2017/*.png and annotations/val2017/*.png")
    spec = RemapSpec(tables(), known_values(coco_stuff_ids()[0]),
                     "the 171 COCO-Stuff ids (0..181 without the 11 unused "
                     "COCO ids; 255 = unlabelled)")
    out = base / "annotations_detectron2"
    job = Job("coco-stuff", base, [], remap_worker, spec, class_files(base),
              [out / d for d in ("train2017", *VAL_OUTPUTS)]
              + [base / "images_detectron2" / "val2017_unseen"])
    splits = {"train2017": {"train2017": "seen"}, "val2017": VAL_OUTPUTS}
    found = add_remap_tasks(job, base / "annotations", splits, out)
    for split in ("train2017", "val2017"):
        if not (base / "images" / split).is_dir():
            job.notes.append(f"{base / 'images' / split} is missing: training / evaluation read "
                             "the COCO images there")
    if not found:
        raise DatasetError(f"no stuffthingmaps PNGs in {base / 'annotations'}/train2017 or "
                           "val2017 (unzip stuffthingmaps_trainval2017.zip there)")
    return job

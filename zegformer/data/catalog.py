"""Dataset names as the official configs spell them (DATASETS.TRAIN / DATASETS.TEST) -> data.

Training names map to prepared folders under the datasets root (DATASETS.ROOT, else
$DETECTRON2_DATASETS, else ./datasets), exactly where the official registration looks:

| name                                   | images                                   | labels                                        |
|----------------------------------------|------------------------------------------|-----------------------------------------------|
| coco_2017_train_stuff_seen_sem_seg     | coco/coco_stuff/images/train2017         | coco/coco_stuff/annotations_detectron2/train2017 |
| pascal_voc_train_seen_sem_seg          | VOCZERO/images/train                     | VOCZERO/annotations_detectron2/train_seen      |
| pascal_voc_train_seen_sem_segv2        | VOCZERO/images_detectron2/train_seen     | VOCZERO/annotations_detectron2_v2/train_seen   |
| ade20k_full_sem_seg_freq_train         | ADE20K_2021_17_01/images_detectron2_freq/training | .../annotations_detectron2_freq/training_seen (16-bit TIFF, ignore 65535) |

Evaluation names map to the evaluation layouts of `zegformer.data.official` by their prefix
(coco_2017_* -> "coco-stuff", pascal_voc_* -> "voc", ade20k_full_* -> "ade847"); the evaluation
is generalised zero-shot on all classes (the `val_all` split). `folder:PATH` names a folder
dataset (`ROOT/{images,labels}/{train,val}`) in either role.
"""
from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from pathlib import Path

from .datasets import DatasetError
from .training_set import TrainingData, folder_training_data, prepared_training_data

FOLDER_PREFIX = "folder:"


@dataclass(frozen=True)
class PreparedSplit:
    image_dir: str
    label_dir: str
    ignore_label: int = 255


TRAIN_SPLITS = {
    "coco_2017_train_stuff_seen_sem_seg": PreparedSplit(
        "coco/coco_stuff/images/train2017", "coco/coco_stuff/annotations_detectron2/train2017"),
    "pascal_voc_train_seen_sem_seg": PreparedSplit(
        "VOCZERO/images/train", "VOCZERO/annotations_detectron2/train_seen"),
    "pascal_voc_train_seen_sem_segv2": PreparedSplit(
        "VOCZERO/images_detectron2/train_seen", "VOCZERO/annotations_detectron2_v2/train_seen"),
    "ade20k_full_sem_seg_freq_train": PreparedSplit(
        "ADE20K_2021_17_01/images_detectron2_freq/training",
        "ADE20K_2021_17_01/annotations_detectron2_freq/training_seen", 65535),
}
EVAL_PREFIXES = {"coco_2017_": "coco-stuff", "pascal_voc_": "voc", "ade20k_full_": "ade847"}


def dataset_names(value: object) -> list[str]:
    """DATASETS.TRAIN / TEST as a list of names: the official YAML writes a tuple as text
    (`("coco_2017_train_stuff_seen_sem_seg",)`), an override may give one bare name."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith(("(", "[")):
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                raise DatasetError(f"cannot read the dataset names {text!r}: write them as "
                                   "(\"name\",) or a single name") from None
        else:
            value = [text] if text else []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise DatasetError(f"dataset names must be strings, got {value!r}")
    return [str(v) for v in value]


def datasets_root(configured: str = "") -> Path:
    """DATASETS.ROOT, else $DETECTRON2_DATASETS, else ./datasets."""
    return Path(configured or os.environ.get("DETECTRON2_DATASETS", "datasets")).expanduser()


def training_data(name: str, classes: list[str], root: str = "") -> TrainingData:
    """The training split a DATASETS.TRAIN name stands for.

    Args:
        name: an official name (see the table above) or "folder:PATH".
        classes: the config's training classes (TRAIN_CLASS_JSON), in label-id order; a folder
            dataset brings its own (its seen classes).
        root: DATASETS.ROOT.
    """
    if name.startswith(FOLDER_PREFIX):
        return folder_training_data(name[len(FOLDER_PREFIX):])
    split = TRAIN_SPLITS.get(name)
    if split is None:
        raise DatasetError(f"unknown training dataset {name!r}: use one of "
                           f"{', '.join(sorted(TRAIN_SPLITS))} or folder:PATH")
    base = datasets_root(root)
    if not base.is_dir():
        raise DatasetError(f"datasets root {base} does not exist: set DATASETS.ROOT or "
                           "$DETECTRON2_DATASETS, and prepare the data with "
                           "python -m zegformer.data.prepare")
    return prepared_training_data(base / split.image_dir, base / split.label_dir, classes,
                                  split.ignore_label)


def evaluation_dataset(name: str, root: str = "") -> tuple[str, str]:
    """(layout, root) for `zegformer.evaluation` from a DATASETS.TEST name."""
    if name.startswith(FOLDER_PREFIX):
        return "folder", name[len(FOLDER_PREFIX):]
    for prefix, layout in EVAL_PREFIXES.items():
        if name.startswith(prefix):
            return layout, str(datasets_root(root))
    raise DatasetError(f"unknown evaluation dataset {name!r}: use an official name "
                       f"({', '.join(EVAL_PREFIXES)}...) or folder:PATH")

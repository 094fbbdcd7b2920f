"""Training sets: prepared label maps of the seen classes, read through the training mapper.

A training label map holds training-class ids (0..S-1 for the S seen classes) and the ignore
value; unseen classes are already ignore, as the official preparation writes them. For the
`folder` layout (`ROOT/{images,labels}/train/<stem>.*`, `ROOT/classes.json`) the labels hold
indices into the full class list and this module maps them: seen class -> its position among
the seen classes, unseen class -> ignore. So a user trains on their seen classes and evaluates
generalised zero-shot on all of them (`ROOT/{images,labels}/val`).

Reproducibility: `EpochSampler` yields `(epoch, index)` keys and `loader.MappedDataset` derives
the augmentation RNG from (seed, epoch, index), so a sample looks the same in any worker, in any
process, and after `--resume`.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .datasets import (DatasetError, Vocabulary, check_root, find_image, folder_ignore_label,
                       folder_split_dir, folder_vocabulary, list_labels, read_folder_meta)
from .loader import MappedDataset
from .transforms import SemanticTrainMapper


@dataclass
class TrainRecord:
    image_path: Path
    label_path: Path


@dataclass
class TrainingData:
    """What the trainer needs to know about a training set besides its samples."""

    records: list[TrainRecord]
    classes: list[str]  # the training (seen) classes, in label-id order
    ignore_label: int
    lut: np.ndarray | None = None  # raw label value -> training id (None: labels are ids already)

    def dataset(self, mapper: SemanticTrainMapper) -> MappedDataset:
        """The augmented samples (index them with `(epoch, i)` keys, see `EpochSampler`)."""
        if not self.records:
            raise DatasetError("the training set has no images")
        lut = self.lut if self.lut is not None else np.arange(len(self.classes))
        return MappedDataset([(r.image_path, r.label_path) for r in self.records], mapper,
                             label_lut=lut, ignore_label=self.ignore_label)


def seen_lut(vocab: Vocabulary, ignore_label: int) -> tuple[list[str], np.ndarray]:
    """(seen class names, LUT full-class index -> seen id or ignore)."""
    unseen = vocab.unseen_mask
    seen = [c for c, u in zip(vocab.classes, unseen) if not u]
    lut = np.full(len(vocab.classes), ignore_label, dtype=np.int64)
    lut[~unseen] = np.arange(len(seen))
    return seen, lut


def folder_training_data(root: str | Path, split: str = "train") -> TrainingData:
    """The `folder` layout's training split, unseen classes set to ignore."""
    root = check_root(root)
    label_dir = folder_split_dir(root, "labels", split)
    image_dir = folder_split_dir(root, "images", split)
    if not label_dir.is_dir():
        raise DatasetError(f"{root} has no training split: {label_dir} is missing (expected "
                           "ROOT/images/train, ROOT/labels/train, ROOT/classes.json)")
    meta = read_folder_meta(root)
    vocab = folder_vocabulary(root, meta)
    ignore = folder_ignore_label(root, meta)
    records = []
    for label in list_labels(label_dir):
        image = find_image(image_dir, label.stem)
        if image is None:
            raise DatasetError(f"label map {label} has no image {image_dir / label.stem}.jpg|png")
        records.append(TrainRecord(image, label))
    seen, lut = seen_lut(vocab, ignore)
    return TrainingData(records, seen, ignore, lut)


def prepared_training_data(image_dir: Path, label_dir: Path, classes: Sequence[str],
                           ignore_label: int = 255) -> TrainingData:
    """An official prepared training split: labels are already training ids."""
    if not label_dir.is_dir():
        raise DatasetError(f"training labels {label_dir} are missing: run "
                           "python -m zegformer.data.prepare first")
    records = []
    exts = (".png", ".tif", ".tiff")
    for label in list_labels(label_dir, exts):
        image = find_image(image_dir, label.stem)
        if image is None:
            raise DatasetError(f"label map {label} has no image in {image_dir}")
        records.append(TrainRecord(image, label))
    return TrainingData(records, list(classes), ignore_label, None)


class EpochSampler(torch.utils.data.Sampler):
    """An endless, seeded, sharded stream of `(epoch, index)` keys.

    Each epoch is a permutation of the n records (seeded by (seed, epoch)) dealt round-robin to
    the processes, like `DistributedSampler` with `drop_last`; `start` skips the samples this
    process has already consumed (resume).
    """

    def __init__(self, n: int, *, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, start: int = 0) -> None:
        self.n, self.seed, self.rank, self.world = n, seed, rank, world_size
        self.shuffle, self.start = shuffle, start
        self.per_epoch = n // world_size
        if self.per_epoch == 0:
            raise DatasetError(f"{n} training images cannot be shared by {world_size} processes")

    def epoch_order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            order = torch.arange(self.n)
        else:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.n, generator=g)
        return order[: self.per_epoch * self.world][self.rank::self.world]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, offset = divmod(self.start, self.per_epoch)
        while True:
            order = self.epoch_order(epoch)
            for idx in order[offset:].tolist():
                yield epoch, idx
            epoch, offset = epoch + 1, 0

    def __len__(self) -> int:  # endless; DataLoader only needs a number
        return 2 ** 62

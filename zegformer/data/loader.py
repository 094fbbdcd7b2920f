"""Training samples from (image, label map) files through ``SemanticTrainMapper``, and batching.

``MappedDataset`` is a map-style ``torch.utils.data.Dataset`` that works with DataLoader workers
and a ``DistributedSampler``: the augmentation of item ``i`` depends only on (seed, epoch, i).
Set the epoch with ``set_epoch`` before iterating (as for ``DistributedSampler``), or index
with ``(epoch, i)`` tuples, which also works with ``persistent_workers=True``.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import DatasetError
from .datasets import read_label_file
from .transforms import SemanticTrainMapper


def read_image(path: str | Path, image_format: str = "RGB") -> np.ndarray:
    """HxWx3 uint8 image, EXIF orientation applied, channels in ``image_format`` (RGB / BGR),
    as detectron2's ``read_image``."""
    try:
        with Image.open(path) as im:
            arr = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    except FileNotFoundError:
        raise DatasetError(f"image {path} does not exist") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise DatasetError(f"cannot read image {path}: {e}") from None
    return np.ascontiguousarray(arr[:, :, ::-1]) if image_format == "BGR" else arr


def read_label(path: str | Path) -> np.ndarray:
    """HxW int64 class ids of a single-channel label map (8-bit / palette PNG, 16-bit TIFF)."""
    return read_label_file(Path(path)).astype(np.int64)


class MappedDataset(torch.utils.data.Dataset):
    """Augmented training samples (see ``SemanticTrainMapper`` for the output dict).

    Args:
        samples: (image path, label path) pairs, e.g. a prepared training split.
        mapper: the augmentation (it holds the seed and the image format).
        label_lut: optional table raw label value -> training id (e.g. a folder dataset's full
            class index -> seen id, unseen -> ignore); values outside it raise DatasetError.
        ignore_label: the label value left as it is (with `label_lut`).
    """

    def __init__(self, samples: Sequence[tuple[str | Path, str | Path]],
                 mapper: SemanticTrainMapper, *, label_lut: np.ndarray | None = None,
                 ignore_label: int = 255) -> None:
        self.samples = [(Path(i), Path(l)) for i, l in samples]
        self.mapper = mapper
        self.epoch = 0
        self.label_lut, self.ignore_label = label_lut, ignore_label

    def set_epoch(self, epoch: int) -> None:
        """Augmentations of the next iteration over the dataset use ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        image_path, label_path = self.samples[index]
        image = read_image(image_path, self.mapper.settings.image_format)
        label = read_label(label_path)
        if self.label_lut is not None:
            label = apply_label_lut(label, self.label_lut, self.ignore_label, label_path)
        if image.shape[:2] != label.shape:
            raise DatasetError(f"{label_path} is {label.shape[1]}x{label.shape[0]} but its image "
                               f"{image_path} is {image.shape[1]}x{image.shape[0]}")
        out = self.mapper(image, label, index=int(index), epoch=int(epoch))
        out["file_name"] = str(image_path)
        return out


def apply_label_lut(label: np.ndarray, lut: np.ndarray, ignore_label: int,
                    where: str | Path = "label map") -> np.ndarray:
    """Map raw label values through `lut` (ignore stays ignore); others outside it are an error."""
    valid = label != ignore_label
    bad = valid & ((label < 0) | (label >= len(lut)))
    if bad.any():
        raise DatasetError(f"{where} has values {np.unique(label[bad])[:10].tolist()} outside the "
                           f"class list (0..{len(lut) - 1}, ignore = {ignore_label})")
    return np.where(valid, lut[np.where(valid, label, 0)], ignore_label)


def collate_semantic(batch: Sequence[dict[str, Any]], size_divisibility: int = 0,
                     pad_value: int = 128, ignore_label: int = 255) -> dict[str, Any]:
    """Stack mapper outputs, padding (right / bottom) to the largest sample, then up to a
    multiple of ``size_divisibility``.

    Returns:
        ``"images"`` uint8 B x 3 x H x W (``pad_value`` outside each image), ``"sem_seg"`` int64
        B x H x W (``ignore_label`` outside), ``"instances"``: per sample ``{"labels": [n],
        "masks": bool [n, H, W]}`` (False outside), ``"image_sizes"``: valid (h, w) per sample.
    """
    if not batch:
        raise ValueError("collate_semantic needs at least one sample")
    h = max(b["image"].shape[-2] for b in batch)
    w = max(b["image"].shape[-1] for b in batch)
    if size_divisibility > 0:
        h, w = -(-h // size_divisibility) * size_divisibility, -(-w // size_divisibility) * \
            size_divisibility
    images = torch.full((len(batch), 3, h, w), pad_value, dtype=torch.uint8)
    sem = torch.full((len(batch), h, w), ignore_label, dtype=torch.int64)
    instances = []
    for i, b in enumerate(batch):
        bh, bw = b["image"].shape[-2:]
        images[i, :, :bh, :bw] = b["image"]
        sem[i, :bh, :bw] = b["sem_seg"]
        masks = torch.zeros((len(b["instances"]["labels"]), h, w), dtype=torch.bool)
        masks[:, :bh, :bw] = b["instances"]["masks"]
        instances.append({"labels": b["instances"]["labels"], "masks": masks})
    return {"images": images, "sem_seg": sem, "instances": instances,
            "image_sizes": [tuple(b["image_size"]) for b in batch]}

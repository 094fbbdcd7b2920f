"""Ground-truth objects of one image (SMALL_TARGETS.md section 8.2).

An object is a class c and a pixel set O within {gt == c}, found by the first rule that applies:

1. instance rule: O = instance mask & {gt == c}, for classes the dataset annotates with instances
   (COCO panoptic / instance things, VOC SegmentationObject, ADE's instance channel, a folder
   dataset's ``objects/`` maps); crowd segments are skipped; an instance whose class matches no
   ground-truth pixel is dropped;
2. connected-component rule: the 8-connected components of {gt == c} for every other class;
3. size filter: objects smaller than ``min_area`` are set aside as ``dropped`` (they still take
   part in pixel metrics and in the "other objects" A_k of sIoU).

Objects are stored as crops (top-left corner + boolean mask over their bounding box) so that
images with hundreds of objects stay cheap.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

INSTANCE = "instance"
CC = "cc"


def structure(connectivity: int) -> np.ndarray:
    """3x3 structuring element for scipy.ndimage.label: 8 -> all ones, 4 -> a cross."""
    if connectivity == 8:
        return np.ones((3, 3), dtype=bool)
    if connectivity == 4:
        return ndimage.generate_binary_structure(2, 1)
    raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")


@dataclass
class Instance:
    """One annotated instance of an image, before it is matched to the ground truth.

    Attributes:
        y0, x0: top-left corner of the crop in image coordinates (row, column).
        mask: boolean h x w crop of the instance's pixels.
        class_id: its class index, or None to take the most frequent ground-truth class under it.
        crowd: True for crowd segments, which are never objects.
    """

    y0: int
    x0: int
    mask: np.ndarray
    class_id: int | None = None
    crowd: bool = False


@dataclass
class InstanceSet:
    """The instance annotations of one image.

    Attributes:
        instances: the instances, in annotation order.
        covered_classes: class indices whose objects come from the instance rule; None means
            every class (VOC SegmentationObject, ADE, folder ``objects/``). Other classes use
            connected components.
    """

    instances: list[Instance] = field(default_factory=list)
    covered_classes: frozenset[int] | None = None

    def covers(self, class_id: int) -> bool:
        return self.covered_classes is None or class_id in self.covered_classes


@dataclass
class GTObject:
    """One ground-truth object: class, source rule and pixels (as a crop)."""

    object_id: int  # index within the image, counting kept and dropped objects
    class_id: int
    source: str  # "instance" or "cc"
    y0: int  # top row of the bounding box
    x0: int  # left column of the bounding box
    mask: np.ndarray  # bool h x w crop of the bounding box
    area: int  # number of pixels, |O|

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """(x, y, w, h) of the bounding box, in pixels."""
        h, w = self.mask.shape
        return self.x0, self.y0, w, h

    def slices(self) -> tuple[slice, slice]:
        h, w = self.mask.shape
        return slice(self.y0, self.y0 + h), slice(self.x0, self.x0 + w)


@dataclass
class ImageObjects:
    """All objects of one image, split by the size filter."""

    kept: list[GTObject]
    dropped: list[GTObject]  # area < min_area
    n_mismatched: int = 0  # instances whose class matched no ground-truth pixel

    def of_class(self, class_id: int) -> tuple[list[GTObject], list[GTObject]]:
        """(kept, dropped) objects of one class."""
        return (
            [o for o in self.kept if o.class_id == class_id],
            [o for o in self.dropped if o.class_id == class_id],
        )


def instances_from_id_map(
    id_map: np.ndarray,
    classes: Mapping[int, int | None] | None = None,
    crowd: Iterable[int] = (),
    skip: Iterable[int] = (0,),
) -> list[Instance]:
    """Turn an HxW map of instance ids into crops.

    Args:
        id_map: HxW integer map; each distinct value not in ``skip`` is one instance.
        classes: optional instance id -> class index (None = infer from the ground truth);
            ids missing from a given dict are not instances (e.g. panoptic stuff segments).
        crowd: instance ids that are crowd segments.
        skip: ids that mean "no instance" (0 by default; VOC also skips 255).
    """
    ids, inverse = np.unique(id_map, return_inverse=True)
    inverse = inverse.reshape(id_map.shape) + 1  # 1..K, so find_objects sees every id
    crowd_set = set(int(c) for c in crowd)
    skip_set = set(int(s) for s in skip)
    out: list[Instance] = []
    for k, box in enumerate(ndimage.find_objects(inverse)):
        iid = int(ids[k])
        if box is None or iid in skip_set:
            continue
        if classes is not None and iid not in classes:
            continue
        cls = classes.get(iid) if classes is not None else None
        mask = inverse[box] == k + 1
        out.append(Instance(box[0].start, box[1].start, mask, cls, iid in crowd_set))
    return out


def _majority_class(gt_crop: np.ndarray, mask: np.ndarray, ignore_label: int) -> int | None:
    values = gt_crop[mask]
    values = values[values != ignore_label]
    if values.size == 0:
        return None
    uniq, counts = np.unique(values, return_counts=True)
    return int(uniq[np.argmax(counts)])


def extract_objects(
    gt: np.ndarray,
    ignore_label: int,
    instances: InstanceSet | None = None,
    min_area: int = 16,
    connectivity: int = 8,
) -> ImageObjects:
    """Find the ground-truth objects of one image (section 8.2).

    Args:
        gt: HxW integer ground-truth label map (class indices, ``ignore_label`` = ignore).
        ignore_label: the ignore value (255, or 65535 for ADE20K-Full).
        instances: instance annotations, or None to use connected components for every class.
        min_area: objects with fewer pixels are dropped (kept aside in ``dropped``).
        connectivity: 8 (default, 3x3 ones) or 4 for the connected-component rule.

    Returns:
        ImageObjects with objects ordered by class, then by instance order / component label.
    """
    if min_area < 1:
        raise ValueError(f"min_area must be >= 1, got {min_area}")
    st = structure(connectivity)
    valid = gt != ignore_label
    present = np.unique(gt[valid])
    by_class: dict[int, list[tuple[str, int, int, np.ndarray]]] = {int(c): [] for c in present}
    n_mismatched = 0
    if instances is not None:
        for inst in instances.instances:
            if inst.crowd:
                continue
            h, w = inst.mask.shape
            gt_crop = gt[inst.y0 : inst.y0 + h, inst.x0 : inst.x0 + w]
            cls = inst.class_id
            if cls is None:
                cls = _majority_class(gt_crop, inst.mask, ignore_label)
            if cls is None or not instances.covers(cls):
                n_mismatched += cls is None
                continue
            obj = inst.mask & (gt_crop == cls)
            if not obj.any():
                n_mismatched += 1
                continue
            ys, xs = np.nonzero(obj)
            crop = obj[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
            by_class.setdefault(cls, []).append(
                (INSTANCE, inst.y0 + int(ys.min()), inst.x0 + int(xs.min()), crop)
            )
    for c in present:
        c = int(c)
        if instances is not None and instances.covers(c):
            continue
        labels, _ = ndimage.label(gt == c, structure=st)
        for k, box in enumerate(ndimage.find_objects(labels)):
            if box is not None:
                crop = labels[box] == k + 1
                by_class[c].append((CC, box[0].start, box[1].start, crop))
    kept: list[GTObject] = []
    dropped: list[GTObject] = []
    next_id = 0
    for c in sorted(by_class):
        for source, y0, x0, crop in by_class[c]:
            area = int(crop.sum())
            obj = GTObject(next_id, c, source, y0, x0, crop, area)
            next_id += 1
            (kept if area >= min_area else dropped).append(obj)
    return ImageObjects(kept, dropped, n_mismatched)

"""Per-object and per-segment metrics of one image (SMALL_TARGETS.md section 8.4 B and E).

For object k of class c with pixels O_k (area a_k), predicted pixels P_c = {pred == c} minus
ignore, and the other objects A_k of class c in the image (dropped ones included):

* TP_k = |O_k & P_c|, FN_k = a_k - TP_k, coverage = TP_k / a_k;
* sIoU_k = TP_k / |(O_k | Q_k) - A_k|, Q_k = the 8-connected components of P_c touching O_k
  (0 when TP_k = 0); detected at tau when sIoU_k >= tau;
* fp_k = FP_c * a_k / |G_c| (false positives of c in the image, shared by area), and
  IoU^K_k = TP_k / (TP_k + FN_k + fp_k);
* the dominant predicted class inside O_k and its pixel fraction.

Predicted segments q (components of P_c with |q| >= min_area) get the SMIYC prediction-side
sIoU: |q & K| / |(q | K) - B|, K = GT objects of c touching q, B = the other components of P_c.

The results are plain dict rows (one per object / segment / dropped object), so they can be
gathered across processes and written as CSV; aggregation happens later (``aggregate.py``).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy import ndimage

from .buckets import ABS_EDGES, REL_EDGES, abs_bucket, rel_bucket
from .metrics import confusion_matrix
from ..data.objects import CC, INSTANCE, GTObject, ImageObjects, structure

TAUS: tuple[float, ...] = (0.25, 0.5, 0.75)


@dataclass
class ClassInfo:
    """The class list of an evaluation: names, unseen flags, and which classes have instances."""

    names: list[str]
    unseen: np.ndarray  # bool, length N
    instance_classes: frozenset[int] | None = frozenset()  # None = all classes

    def split(self, class_id: int) -> str:
        return "unseen" if self.unseen[class_id] else "seen"

    def source(self, class_id: int) -> str:
        covered = self.instance_classes is None or class_id in self.instance_classes
        return INSTANCE if covered else CC


@dataclass
class ImageResult:
    """Everything one image contributes: its confusion matrix and its rows."""

    conf: np.ndarray  # int64 N x (N+1)
    objects: list[dict[str, Any]] = field(default_factory=list)
    segments: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    n_mismatched: int = 0


def _det_key(tau: float) -> str:
    return f"det_{int(round(tau * 100))}"


def _place(obj: GTObject, y0: int, x0: int, shape: tuple[int, int]) -> np.ndarray:
    """The object's mask pasted into a box with top-left (y0, x0) and the given shape."""
    out = np.zeros(shape, dtype=bool)
    h, w = obj.mask.shape
    oy, ox = obj.y0 - y0, obj.x0 - x0
    out[oy : oy + h, ox : ox + w] = obj.mask
    return out


def _union_box(boxes: Sequence[tuple[slice, slice]]) -> tuple[slice, slice]:
    return (
        slice(min(b[0].start for b in boxes), max(b[0].stop for b in boxes)),
        slice(min(b[1].start for b in boxes), max(b[1].stop for b in boxes)),
    )


def evaluate_image(
    image_id: str,
    gt: np.ndarray,
    pred: np.ndarray,
    objects: ImageObjects,
    classes: ClassInfo,
    ignore_label: int,
    min_area: int = 16,
    connectivity: int = 8,
    taus: Sequence[float] = TAUS,
) -> ImageResult:
    """Confusion matrix, per-object rows, predicted-segment rows and dropped-object rows.

    Args:
        image_id: the image's stem, written into every row.
        gt: HxW integer ground truth (class indices, ``ignore_label`` = ignore).
        pred: HxW integer prediction (class indices, -1 = unlabelled).
        objects: the image's objects from ``extract_objects`` (same ``min_area``).
        classes: class names, unseen flags and instance coverage.
        ignore_label: ignore value of ``gt``.
        min_area: predicted segments smaller than this are not scored.
        connectivity: 8 (default) or 4, for predicted components.
        taus: sIoU thresholds of the det_* columns.

    Returns:
        ImageResult; object rows hold the objects.csv columns of section 8.5, ordered by class,
        then by object id; segment rows by class, then by component label (raster order).
    """
    n = len(classes.names)
    conf = confusion_matrix(gt, pred, n, ignore_label)
    height, width = gt.shape
    valid = gt != ignore_label
    result = ImageResult(conf=conf, n_mismatched=objects.n_mismatched)
    st = structure(connectivity)
    # bounding box of each class over gt | pred (valid pixels): per-class work stays local
    g_boxes = ndimage.find_objects(np.where(valid, gt + 1, 0))
    p_boxes = ndimage.find_objects(np.where(valid & (pred >= 0), pred + 1, 0))
    for obj in objects.dropped:
        result.dropped.append(
            {
                "image_id": image_id,
                "class_id": obj.class_id,
                "source": obj.source,
                "area_px": obj.area,
                "rel_bucket": rel_bucket(obj.area, height, width, REL_EDGES),
            }
        )
    for c in range(max(len(g_boxes), len(p_boxes))):
        boxes = [b[c] for b in (g_boxes, p_boxes) if c < len(b) and b[c] is not None]
        if not boxes:
            continue
        box = _union_box(boxes)
        by, bx = box[0].start, box[1].start
        pred_b = pred[box]
        g_c = gt[box] == c
        p_c = (pred_b == c) & valid[box]
        g_px = int(g_c.sum())
        fp_c = int((p_c & ~g_c).sum())
        comp, n_comp = ndimage.label(p_c, structure=st)
        comp_size = np.bincount(comp.ravel(), minlength=n_comp + 1)
        comp_box = ndimage.find_objects(comp)
        kept, dropped = objects.of_class(c)
        # objects in box coordinates (they lie inside the box: O is within {gt == c})
        everyone = [replace(o, y0=o.y0 - by, x0=o.x0 - bx) for o in kept + dropped]
        cover = np.zeros(g_c.shape, dtype=np.int32)  # how many objects of c cover each pixel
        for o in everyone:
            cover[o.slices()] += o.mask
        touch: dict[int, list[int]] = {}  # predicted component -> objects of c touching it
        for idx, o in enumerate(everyone):
            ids = np.unique(comp[o.slices()][o.mask])
            for q in ids[ids > 0].tolist():
                touch.setdefault(q, []).append(idx)
            if idx < len(kept):
                row = _object_row(image_id, o, (by, bx), ids[ids > 0], comp, comp_size, comp_box,
                                  cover, p_c, pred_b, fp_c, g_px, classes, height, width,
                                  min_area, taus)
                result.objects.append(row)
        for q in range(1, n_comp + 1):
            if comp_size[q] < min_area:
                continue
            result.segments.append(
                _segment_row(image_id, c, q, comp, comp_size, comp_box, everyone,
                             touch.get(q, []), p_c, classes, height, width, min_area)
            )
    return result


def _object_row(
    image_id: str,
    o: GTObject,
    offset: tuple[int, int],
    ids: np.ndarray,
    comp: np.ndarray,
    comp_size: np.ndarray,
    comp_box: list,
    cover: np.ndarray,
    p_c: np.ndarray,
    pred: np.ndarray,
    fp_c: int,
    g_px: int,
    classes: ClassInfo,
    height: int,
    width: int,
    min_area: int,
    taus: Sequence[float],
) -> dict[str, Any]:
    sl = o.slices()
    tp = int((p_c[sl] & o.mask).sum())
    q_area = int(comp_size[ids].sum()) if ids.size else 0
    if tp == 0:
        siou = 0.0
    else:
        box = _union_box([sl] + [comp_box[q - 1] for q in ids.tolist()])
        shape = (box[0].stop - box[0].start, box[1].stop - box[1].start)
        own = _place(o, box[0].start, box[1].start, shape)
        union = own | np.isin(comp[box], ids)
        others = (cover[box] - own) > 0  # A_k: other objects of c, dropped ones included
        siou = tp / int((union & ~others).sum())
    fp_share = fp_c * o.area / g_px
    values, counts = np.unique(pred[sl][o.mask], return_counts=True)
    top = int(np.argmax(counts))
    maj = int(values[top])
    x, y, w, h = o.bbox
    x, y = x + offset[1], y + offset[0]  # back to image coordinates
    row: dict[str, Any] = {
        "image_id": image_id,
        "object_id": o.object_id,
        "source": o.source,
        "class_id": o.class_id,
        "class_name": classes.names[o.class_id],
        "split": classes.split(o.class_id),
        "area_px": o.area,
        "img_h": height,
        "img_w": width,
        "rel_area": o.area / (height * width),
        "bbox_x": x,
        "bbox_y": y,
        "bbox_w": w,
        "bbox_h": h,
        "abs_bucket": abs_bucket(o.area, min_area, ABS_EDGES),
        "rel_bucket": rel_bucket(o.area, height, width, REL_EDGES),
        "tp_px": tp,
        "fn_px": o.area - tp,
        "coverage": tp / o.area,
        "fp_share": fp_share,
        "iou_k": tp / (o.area + fp_share),
        "siou": siou,
        "pred_comp_area": q_area,
    }
    for tau in taus:
        row[_det_key(tau)] = int(siou >= tau)
    row["maj_pred_class"] = maj
    row["maj_pred_frac"] = int(counts[top]) / o.area
    row["maj_pred_name"] = classes.names[maj] if maj >= 0 else "(unlabelled)"
    return row


def _segment_row(
    image_id: str,
    c: int,
    q: int,
    comp: np.ndarray,
    comp_size: np.ndarray,
    comp_box: list,
    everyone: list[GTObject],
    touching: list[int],
    p_c: np.ndarray,
    classes: ClassInfo,
    height: int,
    width: int,
    min_area: int,
) -> dict[str, Any]:
    size = int(comp_size[q])
    inter = 0
    k_outside = 0  # |K - P_c|: object pixels not predicted as c at all
    if touching:
        box = _union_box([comp_box[q - 1]] + [everyone[i].slices() for i in touching])
        shape = (box[0].stop - box[0].start, box[1].stop - box[1].start)
        k_mask = np.zeros(shape, dtype=bool)
        for i in touching:
            k_mask |= _place(everyone[i], box[0].start, box[1].start, shape)
        inter = int((k_mask & (comp[box] == q)).sum())
        k_outside = int((k_mask & ~p_c[box]).sum())
    # (q | K) - B = q | (K - P_c), because the components of P_c are disjoint
    siou_pred = inter / (size + k_outside)
    return {
        "image_id": image_id,
        "class_id": c,
        "class_name": classes.names[c],
        "split": classes.split(c),
        "source": classes.source(c),
        "area_px": size,
        "img_h": height,
        "img_w": width,
        "abs_bucket": abs_bucket(size, min_area, ABS_EDGES),
        "rel_bucket": rel_bucket(size, height, width, REL_EDGES),
        "tp_px": inter,
        "siou_pred": siou_pred,
    }

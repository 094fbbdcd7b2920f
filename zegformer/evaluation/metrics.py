"""Confusion-matrix metrics: mIoU, fwIoU, mACC, pACC and the seen / unseen / harmonic split.

Pure numpy. Two conventions are offered (SMALL_TARGETS.md, section 8.4 A):

* ``compat``: the formulas of ZegFormer's ``SemSegGzeroEvaluator``, quirks included: a class
  without ground-truth pixels makes its split's mean NaN, the mIoU denominator also counts
  classes that are predicted but absent from the ground truth, and ``seen_acc`` / ``unseen_acc``
  are in fact IoU means. Multiply by 100 to get the numbers ZegFormer prints.
* ``strict``: every mean is taken over the classes with ground truth in the evaluated set, and
  the seen/unseen accuracies use accuracy.

The confusion matrix here has ground truth in rows and predictions in columns, with one extra
column for pixels the model left unlabelled (``UNLABELLED_PRED``); ignore pixels never enter it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

UNLABELLED_PRED = -1  # value of a prediction pixel the model left without a class


def confusion_matrix(
    gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_label: int
) -> np.ndarray:
    """Count (ground truth, prediction) pixel pairs of one image.

    Args:
        gt: HxW integer ground-truth label map; values in [0, N-1] or ``ignore_label``.
        pred: HxW integer predicted label map; values in [0, N-1] or ``UNLABELLED_PRED`` (-1).
        num_classes: N, the number of classes.
        ignore_label: ground-truth value whose pixels are left out entirely.

    Returns:
        int64 array of shape N x (N+1): entry [g, p] counts valid pixels with gt == g and
        pred == p; column N counts unlabelled predictions.
    """
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in size")
    n = int(num_classes)
    g = gt.reshape(-1).astype(np.int64)
    p = pred.reshape(-1).astype(np.int64)
    valid = g != ignore_label
    g, p = g[valid], p[valid]
    if g.size and (g.min() < 0 or g.max() >= n):
        bad = np.unique(g[(g < 0) | (g >= n)])[:10].tolist()
        raise ValueError(f"ground-truth values {bad} are outside the {n} classes")
    if p.size and (p.min() < UNLABELLED_PRED or p.max() >= n):
        bad = np.unique(p[(p < UNLABELLED_PRED) | (p >= n)])[:10].tolist()
        raise ValueError(f"predicted values {bad} are outside the {n} classes")
    p = np.where(p == UNLABELLED_PRED, n, p)
    counts = np.bincount(g * (n + 1) + p, minlength=n * (n + 1))
    return counts.reshape(n, n + 1)


def harmonic(seen: float | None, unseen: float | None) -> float | None:
    """Harmonic mean 2SU/(S+U) with the edge rules of section 8.4 A.

    Returns 0.0 when S + U = 0 and None when S or U is undefined (None or NaN).
    """
    if seen is None or unseen is None or _isnan(seen) or _isnan(unseen):
        return None
    if seen + unseen == 0:
        return 0.0
    return 2.0 * seen * unseen / (seen + unseen)


def _isnan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def _nanmean(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else None


def per_class_stats(conf: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class pixel counts, IoU and accuracy from an N x (N+1) confusion matrix.

    Returns:
        dict of length-N arrays: ``gt_px`` (ground-truth pixels), ``pred_px`` (valid pixels
        predicted as the class), ``tp_px``, ``fp_px`` (= pred_px - tp_px), ``iou`` and ``acc``
        (float64, NaN for classes without ground truth).
    """
    n = conf.shape[0]
    tp = np.diag(conf[:, :n]).astype(np.float64)
    gt_px = conf.sum(axis=1).astype(np.float64)
    pred_px = conf[:, :n].sum(axis=0).astype(np.float64)
    iou = np.full(n, np.nan)
    acc = np.full(n, np.nan)
    has_gt = gt_px > 0
    union = gt_px + pred_px - tp
    iou[has_gt] = tp[has_gt] / union[has_gt]
    acc[has_gt] = tp[has_gt] / gt_px[has_gt]
    return {
        "gt_px": gt_px,
        "pred_px": pred_px,
        "tp_px": tp,
        "fp_px": pred_px - tp,
        "iou": iou,
        "acc": acc,
    }


def standard_metrics(
    conf: np.ndarray, class_names: Sequence[str], unseen: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Standard semantic-segmentation metrics in both conventions.

    Args:
        conf: N x (N+1) confusion matrix summed over the evaluated images.
        class_names: the N class names in label order.
        unseen: names of the unseen (novel) classes; every other class is seen.

    Returns:
        ``{"compat": {...}, "strict": {...}}``; values are fractions in [0, 1], float NaN where
        ZegFormer's formula gives NaN (compat) and None where a mean is undefined (strict).
        compat keys: mIoU, fwIoU, mACC, pACC, seen_IoU, unseen_IoU, seen_acc, unseen_acc, hIoU,
        IoU-<name>, ACC-<name>. strict keys: mIoU, fwIoU, mACC, pACC, seen_mIoU, unseen_mIoU,
        hIoU, seen_mACC, unseen_mACC, n_classes_with_gt.
    """
    n = len(class_names)
    if conf.shape != (n, n + 1):
        raise ValueError(f"confusion matrix shape {conf.shape} does not fit {n} classes")
    s = per_class_stats(conf)
    iou, acc, gt_px, pred_px, tp = s["iou"], s["acc"], s["gt_px"], s["pred_px"], s["tp_px"]
    unseen_set = set(unseen)
    is_unseen = np.array([name in unseen_set for name in class_names], dtype=bool)
    has_gt = gt_px > 0
    total_gt = gt_px.sum()
    return {
        "compat": _compat(iou, acc, gt_px, pred_px, tp, is_unseen, class_names),
        "strict": _strict(iou, acc, gt_px, tp, is_unseen, has_gt, total_gt),
    }


def _compat(
    iou: np.ndarray,
    acc: np.ndarray,
    gt_px: np.ndarray,
    pred_px: np.ndarray,
    tp: np.ndarray,
    is_unseen: np.ndarray,
    class_names: Sequence[str],
) -> dict[str, Any]:
    """ZegFormer's formulas, read from its evaluator and restated here (NaN where it gives NaN)."""
    nan = float("nan")
    acc_valid = gt_px > 0
    iou_valid = (gt_px + pred_px) > 0
    total = gt_px.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        macc = acc[acc_valid].sum() / acc_valid.sum() if acc_valid.any() else nan
        miou = iou[acc_valid].sum() / iou_valid.sum() if iou_valid.any() else nan
        fwiou = float((iou[acc_valid] * gt_px[acc_valid] / total).sum()) if total else nan
        pacc = tp.sum() / total if total else nan
    n_unseen = int(is_unseen.sum())
    n_seen = len(class_names) - n_unseen
    # A plain sum: one NaN (class without ground truth) makes the split's mean NaN.
    seen_iou = float(iou[~is_unseen].sum() / n_seen) if n_seen else nan
    unseen_iou = float(iou[is_unseen].sum() / n_unseen) if n_unseen else nan
    out: dict[str, Any] = {
        "mIoU": float(miou),
        "fwIoU": float(fwiou),
        "mACC": float(macc),
        "pACC": float(pacc),
        "seen_IoU": seen_iou,
        "unseen_IoU": unseen_iou,
        # ZegFormer's quirk: its "acc" split means average IoU, not accuracy.
        "seen_acc": seen_iou,
        "unseen_acc": unseen_iou,
        "hIoU": _nan_if_none(harmonic(seen_iou, unseen_iou)),
    }
    for i, name in enumerate(class_names):
        out[f"IoU-{name}"] = float(iou[i])
    for i, name in enumerate(class_names):
        out[f"ACC-{name}"] = float(acc[i])
    return out


def _nan_if_none(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def _strict(
    iou: np.ndarray,
    acc: np.ndarray,
    gt_px: np.ndarray,
    tp: np.ndarray,
    is_unseen: np.ndarray,
    has_gt: np.ndarray,
    total_gt: float,
) -> dict[str, Any]:
    """Means over classes with ground truth in the evaluated set (section 8.4 A, strict)."""
    seen_miou = _nanmean(iou[~is_unseen & has_gt])
    unseen_miou = _nanmean(iou[is_unseen & has_gt])
    fwiou = float((iou[has_gt] * gt_px[has_gt]).sum() / total_gt) if total_gt else None
    return {
        "mIoU": _nanmean(iou[has_gt]),
        "fwIoU": fwiou,
        "mACC": _nanmean(acc[has_gt]),
        "pACC": float(tp.sum() / total_gt) if total_gt else None,
        "seen_mIoU": seen_miou,
        "unseen_mIoU": unseen_miou,
        "hIoU": harmonic(seen_miou, unseen_miou),
        "seen_mACC": _nanmean(acc[~is_unseen & has_gt]),
        "unseen_mACC": _nanmean(acc[is_unseen & has_gt]),
        "n_classes_with_gt": int(has_gt.sum()),
    }

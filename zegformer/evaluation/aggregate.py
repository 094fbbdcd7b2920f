"""Per-bucket aggregation of object rows (SMALL_TARGETS.md section 8.4 C, D, E).

Buckets and detections are recomputed here from each row's ``area_px``, image size and
``siou``, so a different ``min_area`` (upwards), other edges or other thresholds only need the
rows (objects.csv), not the images.

For scheme s, bucket b and class c with objects K_cb:

* per class: n, Recall(tau) = mean det, mean coverage, mean sIoU, and the bucket pixel IoU
  sum TP / (sum TP + sum FN + sum fp_share), bucket accuracy sum TP / sum area;
* per split (seen / unseen / all): the mean of each per-class quantity over the classes of the
  split with n >= 1 (classes without objects are excluded, not counted as 0), plus micro
  (object-weighted) recalls; harmonic = 2 S U / (S + U) with the rules of ``metrics.harmonic``.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .buckets import ALL, BELOW_MIN, abs_bucket, bucket_order, members, rel_bucket
from .metrics import harmonic
from .small_targets import TAUS, ClassInfo

SPLITS: tuple[str, ...] = ("seen", "unseen", "all")
HEADLINE_TAU = 0.5


def tau_name(tau: float) -> str:
    """0.5 -> "0.5", 0.25 -> "0.25" (as used in record keys such as recall@0.5)."""
    return f"{tau:g}"


def primary_bucket(row: dict[str, Any], scheme: str, min_area: int) -> str:
    """The primary bucket of an object or segment row under ``scheme``."""
    area = int(row["area_px"])
    if area < min_area:
        return BELOW_MIN
    if scheme == "abs":
        return abs_bucket(area, min_area)
    return rel_bucket(area, int(row["img_h"]), int(row["img_w"]))


class _ClassAcc:
    """Running sums for one (scheme, bucket, class)."""

    def __init__(self, n_taus: int) -> None:
        self.n = 0
        self.det = np.zeros(n_taus)
        self.cov = 0.0
        self.siou = 0.0
        self.tp = 0
        self.fn = 0
        self.fp = 0.0
        self.dom_other_seen = 0
        self.n_seg = 0
        self.seg_hit = 0  # segments with sIoU_pred >= the headline tau

    def record(self, taus: Sequence[float]) -> dict[str, Any]:
        rec: dict[str, Any] = {"n_objects": self.n}
        for t, d in zip(taus, self.det):
            rec[f"recall_{int(round(t * 100))}"] = d / self.n
        rec.update(
            mean_coverage=self.cov / self.n,
            mean_siou=self.siou / self.n,
            tp_px=self.tp,
            fn_px=self.fn,
            fp_share_px=self.fp,
            bucket_iou=self.tp / (self.tp + self.fn + self.fp),
            bucket_acc=self.tp / (self.tp + self.fn),
        )
        return rec


def aggregate(
    object_rows: Iterable[dict[str, Any]],
    segment_rows: Iterable[dict[str, Any]],
    classes: ClassInfo,
    min_area: int = 16,
    taus: Sequence[float] = TAUS,
    source: str | None = None,
) -> tuple[dict[str, dict[str, dict[str, dict[str, Any]]]], list[dict[str, Any]]]:
    """Bucket tables of the objects (and predicted segments) of one source.

    Args:
        object_rows: objects.csv rows (dicts with area_px, img_h, img_w, class_id, siou, ...).
        segment_rows: segments.csv rows (area_px, img_h, img_w, class_id, siou_pred, source).
        classes: class names and unseen flags.
        min_area: rows with a smaller area are left out.
        taus: detection thresholds; HEADLINE_TAU must be one of them.
        source: keep only rows with this ``source`` ("instance" / "cc"); None keeps all.

    Returns:
        (splits, class_rows): ``splits[scheme][bucket][split]`` is a record with n_classes,
        n_objects, recall@tau, mean_coverage, mean_sIoU, bucket_mIoU, bucket_mACC,
        recall@tau_micro, dominant_other_seen_micro, n_pred_segments, seg_precision@0.5_micro,
        seg_f1@0.5_micro; split "harmonic" holds the harmonic mean of seen and unseen.
        class_rows are the bucket_class.csv rows.
    """
    if HEADLINE_TAU not in taus:
        raise ValueError(f"taus must include {HEADLINE_TAU}, got {list(taus)}")
    head = list(taus).index(HEADLINE_TAU)
    accs: dict[tuple[str, str, int], _ClassAcc] = defaultdict(lambda: _ClassAcc(len(taus)))
    unseen = classes.unseen
    for row in object_rows:
        if source is not None and row["source"] != source:
            continue
        c = int(row["class_id"])
        siou = float(row["siou"])
        maj = int(row["maj_pred_class"])
        for scheme in ("abs", "rel"):
            b = primary_bucket(row, scheme, min_area)
            if b == BELOW_MIN:
                continue
            a = accs[(scheme, b, c)]
            a.n += 1
            a.det += np.array([siou >= t for t in taus], dtype=float)
            a.cov += float(row["coverage"])
            a.siou += siou
            a.tp += int(row["tp_px"])
            a.fn += int(row["fn_px"])
            a.fp += float(row["fp_share"])
            a.dom_other_seen += int(maj >= 0 and maj != c and not unseen[maj])
    for row in segment_rows:
        if source is not None and row["source"] != source:
            continue
        c = int(row["class_id"])
        for scheme in ("abs", "rel"):
            b = primary_bucket(row, scheme, min_area)
            if b == BELOW_MIN:
                continue
            a = accs[(scheme, b, c)]
            a.n_seg += 1
            a.seg_hit += int(float(row["siou_pred"]) >= HEADLINE_TAU)
    splits: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    class_rows: list[dict[str, Any]] = []
    for scheme in ("abs", "rel"):
        splits[scheme] = {}
        for bucket in bucket_order(scheme):
            merged = _merge(accs, scheme, members(scheme, bucket), len(taus))
            for c in sorted(merged):
                if merged[c].n:
                    class_rows.append(
                        {
                            "scheme": scheme,
                            "bucket": bucket,
                            "class_id": c,
                            "class_name": classes.names[c],
                            "split": classes.split(c),
                            **merged[c].record(taus),
                        }
                    )
            splits[scheme][bucket] = _split_records(merged, unseen, taus, head)
    return splits, class_rows


def _merge(
    accs: dict[tuple[str, str, int], _ClassAcc], scheme: str, parts: Sequence[str], n_taus: int
) -> dict[int, _ClassAcc]:
    out: dict[int, _ClassAcc] = {}
    for (s, b, c), a in accs.items():
        if s != scheme or b not in parts:
            continue
        m = out.setdefault(c, _ClassAcc(n_taus))
        m.n += a.n
        m.det = m.det + a.det
        m.cov += a.cov
        m.siou += a.siou
        m.tp += a.tp
        m.fn += a.fn
        m.fp += a.fp
        m.dom_other_seen += a.dom_other_seen
        m.n_seg += a.n_seg
        m.seg_hit += a.seg_hit
    return out


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _split_records(
    merged: dict[int, _ClassAcc], unseen: np.ndarray, taus: Sequence[float], head: int
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        members_ = [
            a
            for c, a in merged.items()
            if split == "all" or (split == "unseen") == bool(unseen[c])
        ]
        with_obj = [a for a in members_ if a.n]
        n_obj = sum(a.n for a in with_obj)
        rec: dict[str, Any] = {"n_classes": len(with_obj), "n_objects": n_obj}
        for i, t in enumerate(taus):
            rec[f"recall@{tau_name(t)}"] = _mean([a.det[i] / a.n for a in with_obj])
        rec["mean_coverage"] = _mean([a.cov / a.n for a in with_obj])
        rec["mean_sIoU"] = _mean([a.siou / a.n for a in with_obj])
        rec["bucket_mIoU"] = _mean([a.tp / (a.tp + a.fn + a.fp) for a in with_obj])
        rec["bucket_mACC"] = _mean([a.tp / (a.tp + a.fn) for a in with_obj])
        for i, t in enumerate(taus):
            det = sum(a.det[i] for a in with_obj)
            rec[f"recall@{tau_name(t)}_micro"] = det / n_obj if n_obj else None
        dom = sum(a.dom_other_seen for a in with_obj)
        rec["dominant_other_seen_micro"] = dom / n_obj if n_obj else None
        n_seg = sum(a.n_seg for a in members_)
        hits = sum(a.seg_hit for a in members_)
        rec["n_pred_segments"] = n_seg
        rec[f"seg_precision@{tau_name(HEADLINE_TAU)}_micro"] = hits / n_seg if n_seg else None
        tp = sum(a.det[head] for a in with_obj)
        denom = 2 * tp + (n_obj - tp) + (n_seg - hits)
        rec[f"seg_f1@{tau_name(HEADLINE_TAU)}_micro"] = 2 * tp / denom if denom else None
        out[split] = rec
    hrec: dict[str, Any] = {"n_classes": None, "n_objects": None}
    for key, value in out["seen"].items():
        if key in ("n_classes", "n_objects", "n_pred_segments"):
            continue
        hrec[key] = harmonic(value, out["unseen"][key])
    hrec["n_pred_segments"] = None
    out["harmonic"] = {k: hrec[k] for k in out["seen"]}
    return out


def iiou(
    object_rows: Iterable[dict[str, Any]],
    fp_px: np.ndarray,
    classes: ClassInfo,
    min_area: int = 16,
    source: str | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """Cityscapes-style instance-weighted IoU per class (section 8.4 D).

    w_k = mean object area of class c over the evaluated set / a_k; iTP_c = sum w_k TP_k,
    iFN_c = sum w_k FN_k; FP_c (unweighted) comes from the confusion matrix.

    Args:
        object_rows: objects.csv rows.
        fp_px: length-N false-positive pixel counts per class (confusion matrix).
        classes: class names and unseen flags.
        min_area: rows with a smaller area are left out.
        source: keep only rows of this source; None keeps all.

    Returns:
        ({"mean", "seen", "unseen", "harmonic", "n_classes"}, per-class iIoU, NaN without objects).
    """
    n = len(classes.names)
    areas: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    for row in object_rows:
        if (source is not None and row["source"] != source) or int(row["area_px"]) < min_area:
            continue
        areas[int(row["class_id"])].append(
            (int(row["area_px"]), int(row["tp_px"]), int(row["fn_px"]))
        )
    per_class = np.full(n, np.nan)
    for c, objs in areas.items():
        a = np.array(objs, dtype=np.float64)  # K x 3: area, tp, fn
        w = a[:, 0].mean() / a[:, 0]
        itp, ifn = float((w * a[:, 1]).sum()), float((w * a[:, 2]).sum())
        per_class[c] = itp / (itp + float(fp_px[c]) + ifn)

    def mean(sel: np.ndarray) -> float | None:
        v = per_class[sel & ~np.isnan(per_class)]
        return float(v.mean()) if v.size else None

    seen = mean(~classes.unseen)
    uns = mean(classes.unseen)
    summary = {
        "mean": mean(np.ones(n, dtype=bool)),
        "seen": seen,
        "unseen": uns,
        "harmonic": harmonic(seen, uns),
        "n_classes": int((~np.isnan(per_class)).sum()),
    }
    return summary, per_class


def dropped_table(dropped_rows: Iterable[dict[str, Any]], classes: ClassInfo) -> list[dict]:
    """Number of objects dropped by the size filter per (class, source, relative bucket)."""
    counts: dict[tuple[int, str, str], int] = defaultdict(int)
    for row in dropped_rows:
        counts[(int(row["class_id"]), row["source"], row["rel_bucket"])] += 1
    return [
        {
            "class_id": c,
            "class_name": classes.names[c],
            "split": classes.split(c),
            "source": s,
            "abs_bucket": BELOW_MIN,
            "rel_bucket": b,
            "n_dropped": k,
        }
        for (c, s, b), k in sorted(counts.items())
    ]


__all__ = ["aggregate", "iiou", "dropped_table", "primary_bucket", "SPLITS", "ALL"]

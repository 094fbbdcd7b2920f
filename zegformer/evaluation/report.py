"""Summary, tables and files of an evaluation (SMALL_TARGETS.md section 8.5).

``build_report`` turns the merged confusion matrix and rows into ``summary.json`` content and
CSV tables; ``write_report`` writes them (plus the size-curve plots) under
``<out>/small_target/``. JSON never holds NaN or Infinity: undefined values are ``null``.
"""
from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .aggregate import aggregate, dropped_table, iiou, tau_name
from .buckets import ABS_EDGES, REL_EDGES
from .metrics import per_class_stats, standard_metrics
from ..data.objects import CC, INSTANCE
from .small_targets import TAUS, ClassInfo, ImageResult

SPEC_VERSION = "small_target/1"
OBJECT_COLUMNS: tuple[str, ...] = (
    "image_id", "object_id", "source", "class_id", "class_name", "split", "area_px", "img_h",
    "img_w", "rel_area", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "abs_bucket", "rel_bucket",
    "tp_px", "fn_px", "coverage", "fp_share", "iou_k", "siou", "pred_comp_area", "det_25",
    "det_50", "det_75", "maj_pred_class", "maj_pred_frac", "maj_pred_name",
)
SEGMENT_COLUMNS: tuple[str, ...] = (
    "image_id", "class_id", "class_name", "split", "source", "area_px", "img_h", "img_w",
    "abs_bucket", "rel_bucket", "tp_px", "siou_pred",
)
BUCKET_CLASS_COLUMNS: tuple[str, ...] = (
    "scheme", "bucket", "class_id", "class_name", "split", "n_objects", "recall_25", "recall_50",
    "recall_75", "mean_coverage", "mean_siou", "tp_px", "fn_px", "fp_share_px", "bucket_iou",
    "bucket_acc",
)
PER_CLASS_COLUMNS: tuple[str, ...] = (
    "class_id", "class_name", "split", "gt_px", "pred_px", "tp_px", "iou", "acc", "iiou",
)
DROPPED_COLUMNS: tuple[str, ...] = (
    "class_id", "class_name", "split", "source", "abs_bucket", "rel_bucket", "n_dropped",
)
# meta fields that depend on the run (time, process count), not on the data and predictions
RUN_FIELDS: tuple[str, ...] = ("elapsed_s", "world_size", "created", "reused_predictions")


@dataclass
class Accumulated(ImageResult):
    """Everything gathered over the evaluated images (merged across processes): the per-image
    fields summed or concatenated, plus the number of images."""

    n_images: int = 0


def clean_json(value: Any) -> Any:
    """Replace NaN / Infinity by None and numpy scalars by Python ones, recursively."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def headline_source(classes: ClassInfo) -> str:
    """"instance" when the dataset has instance annotations for some class, else "cc"."""
    if classes.instance_classes is None or len(classes.instance_classes) > 0:
        return INSTANCE
    return CC


def build_report(
    acc: Accumulated, classes: ClassInfo, meta: dict[str, Any], min_area: int = 16,
    taus: Sequence[float] = TAUS,
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """summary.json content and CSV tables from the merged accumulation.

    Args:
        acc: merged confusion matrix and rows.
        classes: class names, unseen flags, instance coverage.
        meta: run description (dataset, split_file, model, checkpoint, mode, ...).
        min_area: size filter in pixels.
        taus: detection thresholds.

    Returns:
        (summary, tables); tables maps CSV file stems to rows.
    """
    head = headline_source(classes)
    stats = per_class_stats(acc.conf)
    splits, class_rows = aggregate(acc.objects, acc.segments, classes, min_area, taus, head)
    iiou_summary, iiou_per_class = iiou(acc.objects, stats["fp_px"], classes, min_area, head)
    n_src = {INSTANCE: 0, CC: 0}
    for row in acc.objects:
        if int(row["area_px"]) >= min_area:
            n_src[row["source"]] += 1
    summary: dict[str, Any] = {
        "meta": {
            **meta,
            "n_images": acc.n_images,
            "ignore_label": meta.get("ignore_label"),
            "min_area": min_area,
            "connectivity": 8,
            "tau": list(taus),
            "abs_edges": [min_area, *ABS_EDGES],
            "rel_edges": list(REL_EDGES),
            "object_source": n_src,
            "headline_source": head,
            "dropped_small": sum(1 for _ in acc.dropped),
            "dropped_mismatched_instances": acc.n_mismatched,
            "version": SPEC_VERSION,
        },
        "standard": standard_metrics(acc.conf, classes.names,
                                     [n for n, u in zip(classes.names, classes.unseen) if u]),
        "buckets": splits,
        "iiou": iiou_summary,
    }
    tables: dict[str, list[dict[str, Any]]] = {
        "objects": acc.objects,
        "segments": acc.segments,
        "bucket_class": class_rows,
        "bucket_split": _split_rows(splits),
        "dropped_small": dropped_table(acc.dropped, classes),
    }
    if head == INSTANCE and n_src[CC]:
        cc_splits, cc_rows = aggregate(acc.objects, acc.segments, classes, min_area, taus, CC)
        summary["buckets_cc"] = cc_splits
        tables["bucket_class_cc"] = cc_rows
        tables["bucket_split_cc"] = _split_rows(cc_splits)
    tables["per_class"] = [
        {
            "class_id": c,
            "class_name": name,
            "split": classes.split(c),
            "gt_px": int(stats["gt_px"][c]),
            "pred_px": int(stats["pred_px"][c]),
            "tp_px": int(stats["tp_px"][c]),
            "iou": stats["iou"][c],
            "acc": stats["acc"][c],
            "iiou": iiou_per_class[c],
        }
        for c, name in enumerate(classes.names)
    ]
    return clean_json(summary), tables


def _split_rows(splits: dict[str, dict[str, dict[str, dict[str, Any]]]]) -> list[dict[str, Any]]:
    return [
        {"scheme": scheme, "bucket": bucket, "split": split, **rec}
        for scheme, buckets in splits.items()
        for bucket, recs in buckets.items()
        for split, rec in recs.items()
    ]


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return "" if not math.isfinite(float(value)) else repr(float(value))
    return str(value)


def write_csv(
    path: Path, rows: Iterable[dict[str, Any]], columns: Sequence[str] | None = None
) -> None:
    """Write rows as CSV (full-precision floats, empty cells for undefined values)."""
    rows = list(rows)
    if columns is None:
        columns = list(rows[0]) if rows else []
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for row in rows:
            w.writerow([_fmt(row.get(c)) for c in columns])


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts of strings."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


COLUMNS = {
    "objects": OBJECT_COLUMNS,
    "segments": SEGMENT_COLUMNS,
    "bucket_class": BUCKET_CLASS_COLUMNS,
    "bucket_class_cc": BUCKET_CLASS_COLUMNS,
    "per_class": PER_CLASS_COLUMNS,
    "dropped_small": DROPPED_COLUMNS,
}


def write_report(out_dir: Path, summary: dict[str, Any],
                 tables: dict[str, list[dict[str, Any]]], plots: bool = True) -> Path:
    """Write summary.json, the CSV tables and the size-curve plots to ``out_dir/small_target``.

    Returns:
        The ``small_target`` directory.
    """
    target = Path(out_dir) / "small_target"
    target.mkdir(parents=True, exist_ok=True)
    text = json.dumps(summary, indent=2, allow_nan=False)
    (target / "summary.json").write_text(text + "\n", encoding="utf-8")
    for stem, rows in tables.items():
        write_csv(target / f"{stem}.csv", rows, COLUMNS.get(stem))
    if plots:
        from .plots import size_curve

        for scheme in ("abs", "rel"):
            size_curve(summary, scheme, target / f"size_curve_{scheme}.png")
    return target


def format_summary(summary: dict[str, Any]) -> str:
    """Text table printed at the end of a run: standard metrics, then seen / novel per bucket."""
    s = summary["standard"]["strict"]
    c = summary["standard"]["compat"]
    meta = summary["meta"]
    lines = [
        f"{meta.get('dataset')}: {meta.get('n_images')} images, mode {meta.get('mode')}, "
        f"model {meta.get('model')}",
        f"pixel metrics (strict):  mIoU {_pct(s['mIoU'])}  seen {_pct(s['seen_mIoU'])}  "
        f"unseen {_pct(s['unseen_mIoU'])}  hIoU {_pct(s['hIoU'])}  pACC {_pct(s['pACC'])}",
        f"pixel metrics (compat):  mIoU {_pct(c['mIoU'])}  seen {_pct(c['seen_IoU'])}  "
        f"unseen {_pct(c['unseen_IoU'])}  hIoU {_pct(c['hIoU'])}",
        f"objects ({meta['headline_source']}, min_area {meta['min_area']} px), "
        f"recall at sIoU >= {tau_name(0.5)}; seen | novel side by side:",
    ]
    header = (f"{'bucket':<12}{'n seen':>8}{'n novel':>8}{'R@.5 seen':>11}{'R@.5 novel':>11}"
              f"{'H':>7}{'cov seen':>10}{'cov novel':>10}{'bIoU seen':>10}{'bIoU novel':>11}")
    lines.append(header)
    lines.append("-" * len(header))
    for scheme in ("abs", "rel"):
        for bucket, rec in summary["buckets"][scheme].items():
            se, un, h = rec["seen"], rec["unseen"], rec["harmonic"]
            lines.append(
                f"{bucket:<12}{se['n_objects']:>8}{un['n_objects']:>8}"
                f"{_pct(se['recall@0.5']):>11}{_pct(un['recall@0.5']):>11}{_pct(h['recall@0.5']):>7}"
                f"{_pct(se['mean_coverage']):>10}{_pct(un['mean_coverage']):>10}"
                f"{_pct(se['bucket_mIoU']):>10}{_pct(un['bucket_mIoU']):>11}"
            )
    ii = summary["iiou"]
    lines.append(f"iIoU: mean {_pct(ii['mean'])}  seen {_pct(ii['seen'])}  "
                 f"unseen {_pct(ii['unseen'])}  H {_pct(ii['harmonic'])}   (values in %)")
    return "\n".join(lines)


def _pct(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"

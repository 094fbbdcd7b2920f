"""Two evaluation runs side by side per size bucket (e.g. decoupled vs pixel-level).

``compare_runs`` reads each run's ``small_target/summary.json`` and returns one row per
(scheme, bucket) with run A, run B and B - A for seen, unseen and harmonic values of a metric,
plus the object counts; ``write_comparison`` saves the table (CSV + JSON), one plot, and returns
the printed text. The headline question, "does decoupling help small novel objects?", is the
unseen column of the XS / S rows.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .buckets import bucket_order
from ..data.datasets import DatasetError
from .report import clean_json, write_csv

METRICS: tuple[str, ...] = (
    "recall@0.5", "recall@0.25", "recall@0.75", "mean_coverage", "mean_sIoU", "bucket_mIoU",
    "recall@0.5_micro",
)


def load_summary(run: str | Path) -> dict[str, Any]:
    """summary.json of a run given as its output dir, its small_target dir or the file itself."""
    p = Path(run)
    for cand in (p / "small_target" / "summary.json", p / "summary.json", p):
        if cand.is_file():
            try:
                return json.loads(cand.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise DatasetError(f"{cand} is not valid JSON: {e}") from e
    raise DatasetError(f"no evaluation found at {p} (expected {p / 'small_target/summary.json'})")


def _diff(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or (isinstance(a, float) and math.isnan(a)):
        return None
    return b - a


def compare_runs(a: dict[str, Any], b: dict[str, Any], metric: str = "recall@0.5"
                 ) -> list[dict[str, Any]]:
    """Rows (scheme, bucket) with ``metric`` of both runs for seen / unseen / harmonic.

    Raises:
        DatasetError: when the runs were made on different datasets or with a different min_area
            (their buckets would not hold the same objects).
    """
    if metric not in METRICS:
        raise DatasetError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    ma, mb = a.get("meta", {}), b.get("meta", {})
    for key in ("dataset", "min_area", "n_images"):
        if ma.get(key) != mb.get(key):
            raise DatasetError(f"the runs differ in {key}: {ma.get(key)!r} vs {mb.get(key)!r}; "
                               "compare runs made on the same images with the same settings")
    rows = []
    for scheme in ("abs", "rel"):
        for bucket in bucket_order(scheme):
            ra = a["buckets"][scheme][bucket]
            rb = b["buckets"][scheme][bucket]
            row: dict[str, Any] = {"scheme": scheme, "bucket": bucket, "metric": metric,
                                   "n_seen": ra["seen"]["n_objects"],
                                   "n_unseen": ra["unseen"]["n_objects"]}
            for split in ("seen", "unseen", "harmonic"):
                va, vb = ra[split].get(metric), rb[split].get(metric)
                row[f"{split}_a"] = va
                row[f"{split}_b"] = vb
                row[f"{split}_delta"] = _diff(va, vb)
            rows.append(row)
    for std in ("mIoU", "seen_mIoU", "unseen_mIoU", "hIoU"):
        va = a["standard"]["strict"].get(std)
        vb = b["standard"]["strict"].get(std)
        rows.append({"scheme": "pixel", "bucket": std, "metric": "strict", "n_seen": None,
                     "n_unseen": None, "seen_a": None, "seen_b": None, "seen_delta": None,
                     "unseen_a": va, "unseen_b": vb, "unseen_delta": _diff(va, vb),
                     "harmonic_a": None, "harmonic_b": None, "harmonic_delta": None})
    return rows


def _pct(v: float | None, sign: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:+.1f}" if sign else f"{100 * v:.1f}"


def format_comparison(rows: list[dict[str, Any]], labels: tuple[str, str]) -> str:
    """The comparison as a text table (values in %)."""
    a, b = labels
    metric = rows[0]["metric"]
    head = (f"{'bucket':<12}{'n seen':>7}{'n novel':>8} | {'seen A':>7}{'seen B':>7}{'B-A':>7} | "
            f"{'novel A':>8}{'novel B':>8}{'B-A':>7} | {'H A':>6}{'H B':>6}{'B-A':>7}")
    lines = [f"A = {a}", f"B = {b}", f"{metric} per object-size bucket (values in %):", head,
             "-" * len(head)]
    for r in rows:
        if r["scheme"] == "pixel":
            continue
        lines.append(
            f"{r['bucket']:<12}{r['n_seen']:>7}{r['n_unseen']:>8} | "
            f"{_pct(r['seen_a']):>7}{_pct(r['seen_b']):>7}{_pct(r['seen_delta'], True):>7} | "
            f"{_pct(r['unseen_a']):>8}{_pct(r['unseen_b']):>8}{_pct(r['unseen_delta'], True):>7} | "
            f"{_pct(r['harmonic_a']):>6}{_pct(r['harmonic_b']):>6}"
            f"{_pct(r['harmonic_delta'], True):>7}")
    px = {r["bucket"]: r for r in rows if r["scheme"] == "pixel"}
    lines.append("pixel mIoU (strict): " + "  ".join(
        f"{k} {_pct(px[k]['unseen_a'])} -> {_pct(px[k]['unseen_b'])}" for k in px))
    small = [r for r in rows if r["scheme"] == "abs" and r["bucket"] == "COCO_small"][0]
    d = small["unseen_delta"]
    verdict = ("not measurable (no novel objects under 1024 px)" if d is None else
               f"{_pct(d, True)} points of novel {metric} for objects under 1024 px (B - A)")
    lines.append(f"small novel objects: {verdict}")
    return "\n".join(lines)


def write_comparison(run_a: str | Path, run_b: str | Path, out_dir: str | Path,
                     labels: tuple[str, str] | None = None, metric: str = "recall@0.5",
                     scheme: str = "abs") -> str:
    """Compare two runs; write compare.csv, compare.json and compare_<scheme>.png to ``out_dir``.

    Returns:
        The text table.
    """
    from .plots import compare_curve

    sa, sb = load_summary(run_a), load_summary(run_b)
    labels = labels or (_label(run_a, sa), _label(run_b, sb))
    rows = compare_runs(sa, sb, metric)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "compare.csv", rows)
    doc = {"a": {"run": str(run_a), "label": labels[0]}, "b": {"run": str(run_b),
           "label": labels[1]}, "metric": metric, "rows": rows}
    (out / "compare.json").write_text(json.dumps(clean_json(doc), indent=2, allow_nan=False) + "\n",
                                      encoding="utf-8")
    compare_curve(sa, sb, labels, scheme, out / f"compare_{scheme}.png", key=metric)
    return format_comparison(rows, labels)


def _label(run: str | Path, summary: dict[str, Any]) -> str:
    mode = summary.get("meta", {}).get("mode")
    name = Path(run).name or str(run)
    return f"{name} ({mode})" if mode else name

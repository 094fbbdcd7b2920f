"""Size-curve plots (matplotlib, Agg backend, fixed DPI).

* ``size_curve``: one run. x = the primary buckets in order; left axis: Recall@0.5 for seen,
  unseen and harmonic (solid) and mean coverage for seen and unseen (dashed); right axis: object
  counts per bucket as bars on a log scale; title: dataset and ``min_area``.
* ``compare_curve``: two runs. Recall@0.5 of seen and unseen objects per bucket, run A solid and
  run B dashed, with the unseen gain B - A written above each bucket.

A run of an untrained model (``meta.untrained`` in its summary, e.g. ``--random-weights``) gets
the red UNTRAINED WEIGHTS strip of the overlays (`zegformer.viz.drawing.mark_untrained`) above
its plot; a comparison gets it when either run is untrained.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .buckets import primary_buckets

DPI = 120
SEEN_COLOR = "#1f77b4"
UNSEEN_COLOR = "#d62728"
HARMONIC_COLOR = "#2ca02c"
BANNER_PX = 17  # text height of the UNTRAINED strip: its full sentence fits the 840 px width


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _untrained(*summaries: dict[str, Any]) -> bool:
    return any(bool(s.get("meta", {}).get("untrained")) for s in summaries)


def _save(fig: Any, path: Path, untrained: bool) -> Path:
    """Write `fig` as PNG at DPI, under the UNTRAINED strip when `untrained`."""
    plt, path = _pyplot(), Path(path)
    if untrained:
        import io

        from PIL import Image

        from ..viz.drawing import mark_untrained

        buf = io.BytesIO()
        fig.savefig(buf, dpi=DPI, format="png")
        with Image.open(buf) as im:
            mark_untrained(im.convert("RGB"), size=BANNER_PX).save(path, format="PNG")
    else:
        fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _series(buckets: dict[str, Any], names: tuple[str, ...], split: str, key: str) -> np.ndarray:
    vals = [buckets.get(b, {}).get(split, {}).get(key) for b in names]
    return np.array([np.nan if v is None else float(v) for v in vals])


def size_curve(summary: dict[str, Any], scheme: str, path: Path, title: str | None = None) -> Path:
    """Plot one run's recall / coverage per size bucket and save it as PNG.

    Args:
        summary: summary.json content.
        scheme: "abs" (XS..L) or "rel" (R0..R3).
        path: output PNG path.
        title: optional title; default "<dataset>: objects by size (min_area N px)".
    """
    plt = _pyplot()
    names = primary_buckets(scheme)
    b = summary["buckets"][scheme]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7.0, 4.8), dpi=DPI)
    ax2 = ax.twinx()
    n_seen = _series(b, names, "seen", "n_objects")
    n_unseen = _series(b, names, "unseen", "n_objects")
    width = 0.35
    ax2.bar(x - width / 2, np.where(n_seen > 0, n_seen, np.nan), width, color=SEEN_COLOR,
            alpha=0.15, label="objects (seen)")
    ax2.bar(x + width / 2, np.where(n_unseen > 0, n_unseen, np.nan), width, color=UNSEEN_COLOR,
            alpha=0.15, label="objects (unseen)")
    for dx, counts in ((-width / 2, n_seen), (width / 2, n_unseen)):
        for xi, n in zip(x + dx, counts):
            if n > 0:
                ax2.text(xi, n * 1.08, f"{int(n)}", ha="center", va="bottom", fontsize=6,
                         color="#555555")
    top = np.nanmax(np.concatenate([n_seen, n_unseen, [1.0]]))
    ax2.set_yscale("log")
    ax2.set_ylim(0.8, max(10.0, top * 20))
    ax2.set_ylabel("objects per bucket (log scale)")
    for split, color, label in (("seen", SEEN_COLOR, "seen"), ("unseen", UNSEEN_COLOR, "unseen"),
                                ("harmonic", HARMONIC_COLOR, "harmonic")):
        ax.plot(x, _series(b, names, split, "recall@0.5"), "-o", color=color,
                label=f"Recall@0.5 {label}")
    for split, color in (("seen", SEEN_COLOR), ("unseen", UNSEEN_COLOR)):
        ax.plot(x, _series(b, names, split, "mean_coverage"), "--", marker="x", color=color,
                alpha=0.8, label=f"mean coverage {split}")
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.set_xticks(x)
    ax.set_xticklabels(_tick_labels(scheme, summary))
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("Recall@0.5 (solid), mean coverage (dashed)")
    ax.grid(axis="y", alpha=0.3)
    meta = summary.get("meta", {})
    name = meta.get("dataset", "?")
    if name == "folder" and meta.get("class_list"):
        name = f"{name} ({meta['class_list']})"
    ax.set_title(title or f"{name}: objects by size "
                 f"(min_area {meta.get('min_area', '?')} px, {meta.get('headline_source', '')})",
                 fontsize=10)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    fig.legend(h1 + h2, l1 + l2, fontsize=7, loc="lower center", ncol=4, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return _save(fig, path, _untrained(summary))


def _tick_labels(scheme: str, summary: dict[str, Any]) -> list[str]:
    if scheme == "abs":
        lo = summary.get("meta", {}).get("min_area", 16)
        return [f"XS\n[{lo}, 256)", "S\n[256, 1024)", "M\n[1024, 9216)", "L\n>= 9216 px"]
    return ["R0\n< 0.1%", "R1\n[0.1%, 1%)", "R2\n[1%, 10%)", "R3\n>= 10%"]


def compare_curve(a: dict[str, Any], b: dict[str, Any], labels: tuple[str, str], scheme: str,
                  path: Path, key: str = "recall@0.5") -> Path:
    """Plot ``key`` per bucket for two runs (seen and unseen) and save it as PNG."""
    plt = _pyplot()
    names = primary_buckets(scheme)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7.0, 4.2), dpi=DPI)
    for summary, style, label in ((a, "-o", labels[0]), (b, "--s", labels[1])):
        for split, color in (("seen", SEEN_COLOR), ("unseen", UNSEEN_COLOR)):
            ax.plot(x, _series(summary["buckets"][scheme], names, split, key), style,
                    color=color, label=f"{label}: {split}")
    ua = _series(a["buckets"][scheme], names, "unseen", key)
    ub = _series(b["buckets"][scheme], names, "unseen", key)
    for i, (va, vb) in enumerate(zip(ua, ub)):
        if np.isfinite(va) and np.isfinite(vb):
            ax.annotate(f"unseen {100 * (vb - va):+.1f} pts", (i, max(va, vb)), textcoords="offset "
                        "points", xytext=(0, 8), ha="center", fontsize=7, color=UNSEEN_COLOR)
    ax.set_xticks(x)
    ax.set_xticklabels(_tick_labels(scheme, a))
    ax.set_xlim(-0.5, len(names) - 0.5)
    ax.set_ylim(-0.02, 1.1)
    ax.set_ylabel(key)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(f"{labels[0]} (solid) vs {labels[1]} (dashed): {key} by object size", fontsize=10)
    fig.legend(*ax.get_legend_handles_labels(), fontsize=7, loc="lower center", ncol=4,
               frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return _save(fig, path, _untrained(a, b))

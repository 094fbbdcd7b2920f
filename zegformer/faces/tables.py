"""What one app request shows, built from its in-memory results: the confidences, the class
table, the status line, the overlays, and the downloads (written by `zegformer.viz.export`).

No Gradio here (the module imports without it), and no model logic.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..inference.result import SegmentationResult
from ..viz import drawing
from ..viz.export import APP_LAYOUT, MODE_TITLES, write_results
from .startup import describe_names

TABLE_HEADERS = ["class", "split", "mode", "confidence", "area %", "found"]

# one gr.AnnotatedImage: ((base image, [(mask, "name 87%")]), title, {"name 87%": "#rrggbb"})
OverlayView = tuple[tuple[np.ndarray, list[tuple[np.ndarray, str]]], str, dict[str, str]]


@dataclass
class Response:
    """Everything one request shows; `app.py` maps it onto components."""

    confidences: dict[str, float]  # gr.Label value (first mode)
    table: list[list[Any]]  # rows under TABLE_HEADERS
    disagreement: str | None  # the disagreement map's file (only when two modes ran)
    files: list[str] = field(default_factory=list)  # downloads
    data: dict[str, Any] = field(default_factory=dict)  # the JSON document
    status: str = ""  # Markdown status line
    parsed: str = ""  # Markdown: the classes as the predictor read them
    overlays: list[OverlayView] = field(default_factory=list)  # one per mode

    def api_values(self) -> tuple[Any, ...]:
        """The `/segment` endpoint's outputs, in order."""
        return (self.confidences, self.table, self.disagreement, self.files, self.data,
                self.status, self.parsed)


def table_rows(results: Sequence[SegmentationResult]) -> list[list[Any]]:
    """Per class and mode: name, seen/novel, confidence, area share in percent, found or not."""
    rows = []
    for r in results:
        order = r.present_classes + [c for c in r.classes if not c.present]
        for c in order:
            rows.append([c.name, "seen" if c.seen else "novel", r.mode, round(c.confidence, 3),
                         round(100 * c.area_fraction, 2), "found" if c.present else "not found"])
    return rows


def status_line(results: Sequence[SegmentationResult]) -> str:
    """Model, device, image size (and the upload's, when it was downscaled) and latency per
    stage (Markdown)."""
    first = results[0]
    h, w = first.label_map.shape
    oh, ow = first.original_size or (h, w)
    size = f"{w} × {h}"
    if (oh, ow) != (h, w):
        size += f" (downscaled from {ow} × {oh})"
    parts = [f"**Model:** {first.model}", f"**device:** {first.device}", f"**image:** {size}"]
    for r in results:
        stages = ", ".join(f"{k} {v:.2f} s" for k, v in r.timings.items() if k != "total")
        passes = f", test-time augmentation: {r.tta_passes} passes" if r.tta_passes > 1 else ""
        fast = " · **fast approximation** (not the official numbers)" if r.fast else ""
        parts.append(f"**{r.mode}:** {r.timings.get('total', 0.0):.2f} s ({stages}){passes}"
                     f"{fast}")
    line = " · ".join(parts)
    if first.untrained:
        line = ("⚠️ **Untrained weights:** a tiny random model is loaded, so the segmentation "
                "is meaningless; it only shows that the app works.\n\n" + line)
    return line


def overlay_views(image: np.ndarray, results: Sequence[SegmentationResult], opacity: float
                  ) -> list[OverlayView]:
    """Per mode: the gr.AnnotatedImage value (the image at the results' size and a mask per
    class found, weighted by the opacity, largest first), its title and its colours."""
    return [((image, drawing.annotations(r, opacity)), MODE_TITLES.get(r.mode, r.mode),
             drawing.annotation_color_map(r)) for r in results]


def respond(image: Any, results: Sequence[SegmentationResult], opacity: float,
            out_dir: Path) -> Response:
    """The downloads written to `out_dir` and everything else one request shows.

    Args:
        image: the image the results were computed on (at their size or larger).
        results: one result per mode, all for the same image and vocabulary.
        opacity: overlay opacity in 0..1 (checked by `zegformer.viz`).
        out_dir: where the downloads are written.
    """
    written = write_results(out_dir, image, results, opacity, APP_LAYOUT)
    diff = Path(out_dir) / APP_LAYOUT.disagreement_name
    return Response(  # the pictures go out as the files written (Gradio copies no PIL image)
        confidences={c.name: float(c.confidence) for c in results[0].classes},
        table=table_rows(results),
        disagreement=str(diff) if written.disagreement is not None else None,
        files=[str(p) for p in written.files], data=written.document,
        status=status_line(results), parsed=describe_names(results[0].class_names),
        overlays=overlay_views(written.image, results, opacity),
    )

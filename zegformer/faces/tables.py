"""What one app request shows, built from its in-memory results: the confidences, the class
table, the status line, the overlays, and the downloads (written by `zegformer.viz.export`, plus
the full class table as CSV). The page's parts (confidence panel, top-N table, legends) come from
`zegformer.faces.views` and `zegformer.faces.class_table`; the API gets the full numbers.

No Gradio here (the module imports without it), and no model logic.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import json

from ..inference.result import SegmentationResult
from ..viz.export import APP_LAYOUT, write_results
from . import class_table, views
from .startup import describe_names
from .views import OverlayView

TABLE_HEADERS = ["class", "split", "mode", "confidence", "area %", "found"]  # the API's table


@dataclass
class Response:
    """Everything one request shows; `app.py` maps it onto components."""

    confidences: dict[str, float]  # the API's gr.Label: found classes of the first mode
    table: list[list[Any]]  # the API's table: every class and mode, rows under TABLE_HEADERS
    disagreement: str | None  # the disagreement map's file (only when two modes ran)
    files: list[str] = field(default_factory=list)  # downloads
    data: dict[str, Any] = field(default_factory=dict)  # the JSON document
    status: str = ""  # Markdown status line
    parsed: str = ""  # Markdown: the classes as the predictor read them
    overlays: list[OverlayView] = field(default_factory=list)  # one per mode
    panel: str = ""  # Markdown: the page's confidence panel (`views.confidence_panel`)
    page_table: class_table.PageTable | None = None  # the page's top-N table

    def api_values(self) -> tuple[Any, ...]:
        """The `/segment` endpoint's outputs, in order."""
        table = {"headers": TABLE_HEADERS, "data": self.table}
        return (self.confidences, table, self.disagreement, self.files, self.data,
                self.status, self.parsed)


def table_rows(results: Sequence[SegmentationResult]) -> list[list[Any]]:
    """Per class and mode: name, seen/novel, confidence, area share in percent, found or not
    (the API's table: a found class's confidence is its mean score over its pixels, a class not
    found has its peak score)."""
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
    if first.untrained:  # the page's red banner says it at length; API callers read it here
        parts.insert(1, "**weights: untrained** (random; the segmentation is meaningless)")
    return " · ".join(parts)


def write_downloads(out_dir: Path, image: Any, results: Sequence[SegmentationResult],
                    opacity: float) -> tuple[Any, list[Path]]:
    """`write_results` plus the full class table (`classes.csv`, named in the document's
    "files"); returns (what write_results returned, every file, the document last)."""
    written = write_results(out_dir, image, results, opacity, APP_LAYOUT)
    table_file = Path(out_dir) / class_table.CSV_NAME
    class_table.write_csv(table_file, results)
    document = Path(out_dir) / APP_LAYOUT.document_name
    written.document["files"].insert(-1, table_file.name)
    with open(document, "w", encoding="utf-8") as f:
        json.dump(written.document, f, indent=2, ensure_ascii=False)
    return written, [p for p in written.files if p != document] + [table_file, document]


def respond(image: Any, results: Sequence[SegmentationResult], opacity: float,
            out_dir: Path, *, threshold: float = 0.0, query: str = "") -> Response:
    """The downloads written to `out_dir` and everything else one request shows.

    Args:
        image: the image the results were computed on (at their size or larger).
        results: one result per mode, all for the same image and vocabulary.
        opacity: overlay opacity in 0..1 (checked by `zegformer.viz`).
        out_dir: where the downloads are written.
        threshold: the threshold the results were made with (the panel names it).
        query: the class table's filter text.
    """
    written, files = write_downloads(Path(out_dir), image, results, opacity)
    diff = Path(out_dir) / APP_LAYOUT.disagreement_name
    return Response(  # the pictures go out as the files written (Gradio copies no PIL image)
        confidences={c.name: float(c.confidence) for c in results[0].classes if c.present},
        table=table_rows(results),
        disagreement=str(diff) if written.disagreement is not None else None,
        files=[str(p) for p in files], data=written.document,
        status=status_line(results), parsed=describe_names(results[0].class_names),
        overlays=views.overlay_views(written.image, results, opacity),
        panel=views.confidence_panel(results, threshold),
        page_table=class_table.page_table(results, query),
    )

"""The results column's Gradio side: what a run or a redraw sends to the page's components, and
the callbacks of the live controls (threshold and opacity sliders, the table's filter).

The page's outputs, in order (`PAGE_OUTPUTS` names them by elem_id): the confidence panel, the
class table (top classes, filtered), the disagreement map, the downloads, the JSON result, the
status line, the parsed classes, the two overlays and the kept result (a gr.State).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import gradio as gr

from ..errors import ZegFormerError
from . import live
from .guarded_blocks import user_text
from .tables import Response

PAGE_OUTPUTS = ["confidences", "class-table", "disagreement", "downloads", "result-json",
                "status", "parsed-classes", "overlay", "overlay-pixel", None]  # None: gr.State


def table_update(shown: Any) -> dict[str, Any]:
    """A gr.Dataframe update from a `class_table.PageTable`."""
    return gr.update(value=shown.value(), label=shown.label, column_widths=shown.column_widths)


def page_values(response: Response, kept: live.Kept) -> tuple[Any, ...]:
    """The page's outputs (module doc) for one run or redraw: the second overlay and the
    disagreement map are shown with a two-mode result and hidden otherwise, so that a mode's
    areas appear only with its results."""
    two = len(response.overlays) > 1
    views = [gr.update(value=value, label=title, color_map=colors, visible=True)
             for value, title, colors in response.overlays]
    second = views[1] if two else gr.update(value=None, visible=False)
    diff = gr.update(value=response.disagreement, visible=two)
    return (response.panel, table_update(response.page_table), diff, response.files,
            response.data, response.status, response.parsed, views[0], second, kept)


def redraw_and_show(new_dir: Callable[[], Path], kept: live.Kept | None, threshold: float,
                    opacity: float, query: str = "") -> tuple[Any, ...]:
    """The kept result at the sliders' threshold and opacity, without running the model
    (before the first result nothing changes); `new_dir` gives the downloads' folder."""
    if kept is None:
        return tuple(gr.skip() for _ in PAGE_OUTPUTS)
    try:
        response, kept = live.redraw(kept, threshold, opacity, new_dir(), query or "")
    except (ZegFormerError, ValueError) as e:
        raise gr.Error(user_text(str(e)), print_exception=False) from None
    return page_values(response, kept)


def catch_up(new_dir: Callable[[], Path], kept: live.Kept | None, threshold: float,
             opacity: float, query: str = "") -> tuple[Any, ...]:
    """After a run: the new result redrawn at the sliders' values if the visitor moved them
    while the model ran (the run used the values of its click); otherwise nothing changes."""
    if kept is None or (float(threshold) == kept.threshold and float(opacity) == kept.opacity):
        return tuple(gr.skip() for _ in PAGE_OUTPUTS)
    return redraw_and_show(new_dir, kept, threshold, opacity, query)


def filter_table(kept: live.Kept | None, query: str) -> Any:
    """The class table of the kept result, filtered by `query` (no model run)."""
    if kept is None:
        return gr.skip()
    return table_update(live.filtered(kept, query or ""))

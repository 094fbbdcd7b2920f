"""The page of a Space that has no model: every control switched off, the examples shown but
not clickable, and the Space owner told what to set (`startup.setup_help`, shown by the app).

A page whose Segment button answers "no model" after the visitor has uploaded and typed is a
trap; here nothing on the page can start a request. The API still answers (with the same
reason as a one-line error, `startup.no_model_error`).
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import gradio as gr

DISABLED_CLASS = "zegformer-disabled"  # CSS class of the examples that cannot be clicked
CSS = f""".{DISABLED_CLASS} {{ pointer-events: none; opacity: 0.55; }}"""


def _has_interactive(block: Any) -> bool:
    """Components whose `interactive` setting the frontend honours (not gr.State and the like)."""
    return isinstance(block, gr.components.Component) and hasattr(block, "interactive") \
        and not isinstance(block, gr.State)


def disable_controls(demo: gr.Blocks) -> list[Any]:
    """Switch off, in `demo` (before it is launched), every component that an event reads
    from, and every button. Returns the components switched off."""
    inputs = {id(b) for fn in demo.fns.values() for b in fn.inputs}
    off = []
    for block in demo.blocks.values():
        if not _has_interactive(block):
            continue
        if isinstance(block, (gr.Button, gr.UploadButton)) or id(block) in inputs:
            block.interactive = False
            off.append(block)
    return off


def disabled_examples(rows: Sequence[Sequence[Any]], inputs: Sequence[Any],
                      columns: Iterable[int] = (0, 1), label: str = "Examples") -> gr.Dataset:
    """The examples as a table that shows what the app does but does nothing when clicked:
    a gr.Dataset with no event attached, drawn greyed out and without pointer events."""
    shown = list(columns)
    return gr.Dataset(components=[inputs[i] for i in shown],
                      samples=[[row[i] for i in shown] for row in rows],
                      label=f"{label} (available once the Space has weights)",
                      elem_id="examples", elem_classes=[DISABLED_CLASS])

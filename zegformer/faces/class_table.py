"""The class table: the page shows the top classes by area (one row per class, a column pair
per mode, short names), filtered by what the visitor types; the downloads hold all of it as CSV
(every class and mode, full names, the numbers unrounded).

No Gradio here (the module imports without it), and no model logic.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from typing import Any, Sequence

from ..inference.result import SegmentationResult
from .views import area_text, score_text, short_names

TOP_ROWS = 20  # rows the page's table shows; the filter reaches every class
CSV_NAME = "classes.csv"
CSV_HEADERS = ["mode", "index", "name", "split", "found", "area_fraction", "mean_score",
               "peak_score"]
#   mean_score: over the pixels the class labels (found classes only)
#   peak_score: the highest normalised score anywhere (classes not found only)
MAX_QUERY = 200  # characters of a filter that are read


@dataclass
class PageTable:
    """What the page's gr.Dataframe shows: headers, rows, its label and column widths."""

    headers: list[str]
    rows: list[list[str]]
    label: str
    column_widths: list[str]

    def value(self) -> dict[str, Any]:
        """The gr.Dataframe value."""
        return {"headers": self.headers, "data": self.rows}


def page_headers(results: Sequence[SegmentationResult]) -> list[str]:
    """"class", "split", then per mode its area and confidence column."""
    if len(results) == 1:
        return ["class", "split", "area (% of image)", "confidence (mean score)"]
    cols = [f"{r.mode}: {what}" for r in results for what in ("area", "confidence")]
    return ["class", "split"] + cols


def matches(name: str, query: str) -> bool:
    """True when `query` (case-insensitive, spaces at the ends ignored) is part of the full name
    (any synonym counts: "television" finds "tv | television")."""
    q = query.strip().casefold()
    return not q or q in name.casefold()


def row_order(results: Sequence[SegmentationResult]) -> list[int]:
    """Class indices, the largest area (over the modes) first; classes found nowhere last, in
    the order they were requested."""
    k = len(results[0].classes)
    area = [max(r.classes[i].area_fraction for r in results) for i in range(k)]
    found = [any(r.classes[i].present for r in results) for i in range(k)]
    return sorted(range(k), key=lambda i: (not found[i], -area[i], i))


def page_table(results: Sequence[SegmentationResult], query: str = "",
               top: int = TOP_ROWS) -> PageTable:
    """The page's table: at most `top` rows of the classes matching `query`, largest first.

    Args:
        results: one result per mode (same vocabulary).
        query: filter text (`matches`); "" shows the largest classes.
        top: most rows shown.
    """
    query = (query or "")[:MAX_QUERY]
    shorts = short_names(results[0].class_names)
    chosen = [i for i in row_order(results) if matches(results[0].class_names[i], query)]
    rows = []
    for i in chosen[:top]:
        cells = [shorts[i], "seen" if results[0].classes[i].seen else "novel"]
        for r in results:
            c = r.classes[i]
            cells += ([area_text(c.area_fraction), score_text(c.confidence)] if c.present
                      else ["0%", "not found"])
        rows.append(cells)
    k = len(results[0].classes)
    shown = f"{len(rows)} of {len(chosen)}" if len(chosen) > len(rows) else f"all {len(rows)}"
    if query.strip():
        what = (f"classes matching “{query.strip()}”: {shown}" if chosen
                else f"no class matches “{query.strip()}”")
    else:
        what = f"top {len(rows)} of {k} by area" if k > len(rows) else f"all {k}"
    label = f"Classes ({what}; every class, full names: {CSV_NAME} in the downloads)"
    n_modes = len(results)
    widths = (["46%", "14%", "20%", "20%"] if n_modes == 1
              else ["30%", "10%"] + ["15%"] * (2 * n_modes))
    return PageTable(page_headers(results), rows, label, widths)


def csv_rows(results: Sequence[SegmentationResult]) -> list[list[Any]]:
    """Every class of every mode under CSV_HEADERS (full names, numbers unrounded)."""
    rows = []
    for r in results:
        for c in r.classes:
            rows.append([r.mode, c.index, c.name, "seen" if c.seen else "novel",
                         "yes" if c.present else "no", c.area_fraction,
                         c.confidence if c.present else "", "" if c.present else c.confidence])
    return rows


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets read as a formula


def inert_cell(value: object) -> object:
    """`value`, with a text cell that a spreadsheet would run as a formula (a class name typed
    as `=HYPERLINK(...)`) prefixed by an apostrophe; numbers are left as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def write_csv(path: str | os.PathLike, results: Sequence[SegmentationResult]) -> None:
    """The full class table as CSV (UTF-8, a header row, then `csv_rows`; text cells that would
    start a formula are made inert)."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_HEADERS)
        writer.writerows([inert_cell(v) for v in row] for row in csv_rows(results))

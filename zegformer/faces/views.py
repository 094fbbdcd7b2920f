"""How the page shows a request's results: short class names, the overlays' legends (area share)
and the confidence panel (what the number is, found classes first, the unlabelled share, both
modes side by side).

One meaning per number: an *area* is a share of the image's pixels, written in percent ("34% of
image"); a *confidence* is a class's mean normalised score over the pixels it labels, written as
a number in 0..1 ("0.84"), on the threshold slider's scale. A class that labels no pixel is "not
found" and gets no confidence on the page (its peak score is in the JSON and the CSV).

No Gradio here (the module imports without it), and no model logic.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..inference.result import UNLABELED, ClassStat, SegmentationResult
from ..viz.drawing import _check_opacity
from ..viz.export import MODE_TITLES
from ..viz.palette import class_colors, hex_color
from .startup import markdown_text

LEGEND_CLASSES = 20  # classes with their own colour in an overlay's legend; the rest are grouped
PANEL_CLASSES = 10  # found classes listed in the confidence panel (the table has them all)
NOT_FOUND_NAMES = 12  # names listed after "not found:"; more are counted
NAME_CHARS = 40  # a shortened name's first synonym is cut to this many characters
OTHER_COLOR = "#9e9e9e"  # the grouped smaller classes in a legend
MEANING = ("**confidence** = a class's mean normalised score over the pixels it labels (at each "
           "pixel: the winning class's share of all classes' scores there, negative scores "
           "counted as 0), from 0 to 1; **area** = its share of the image's pixels. A class that "
           "labels no pixel is *not found*.")

# one gr.AnnotatedImage: ((base image, [(mask, label)]), title, {label: "#rrggbb"})
OverlayView = tuple[tuple[np.ndarray, list[tuple[np.ndarray, str]]], str, dict[str, str]]


# ----------------------------------------------------------------------------- numbers, names
def area_text(fraction: float) -> str:
    """A share of the image in percent: "34%", "2.5%", "<0.1%", "0%"."""
    pct = 100.0 * float(fraction)
    if pct <= 0:
        return "0%"
    if pct < 0.1:
        return "<0.1%"
    return f"{pct:.1f}%" if pct < 10 else f"{pct:.0f}%"


def score_text(score: float) -> str:
    """A normalised score on the threshold's scale: "0.84", "0.004" below 0.1 (a score over
    hundreds of classes is small), "<0.001"."""
    value = float(score)
    if 0 < value < 0.001:
        return "<0.001"
    return f"{value:.2f}" if value >= 0.1 or value == 0 else f"{value:.3f}"


def short_name(name: str, max_chars: int = NAME_CHARS) -> str:
    """"wall | partition | divider" -> "wall +2 synonyms"; a long first name is cut with "…"."""
    parts = [p.strip() for p in name.split("|") if p.strip()] or [name]
    first = parts[0] if len(parts[0]) <= max_chars else parts[0][:max_chars - 1] + "…"
    extra = len(parts) - 1
    return first if not extra else f"{first} +{extra} synonym{'s' if extra > 1 else ''}"


def short_names(names: Sequence[str]) -> list[str]:
    """`short_name` of every name, unique: names whose short forms coincide keep their full
    name (the full names are unique, as `parse_classes` requires)."""
    out = [short_name(n) for n in names]
    while True:
        seen: dict[str, list[int]] = {}
        for i, s in enumerate(out):
            seen.setdefault(s.casefold(), []).append(i)
        clashes = [i for group in seen.values() if len(group) > 1 for i in group
                   if out[i] != names[i]]
        if not clashes:
            return out
        for i in clashes:
            out[i] = names[i]


def unlabelled_fraction(result: SegmentationResult) -> float:
    """Share of the pixels no class labels (their best normalised score is below the threshold)."""
    return float((result.label_map == UNLABELED).mean())


# ----------------------------------------------------------------------------- overlays
def legend_label(short: str, stat: ClassStat) -> str:
    """A legend entry: "grass — 34% of image" (the area, not a confidence)."""
    return f"{short} — {area_text(stat.area_fraction)} of image"


def overlay_view(image: np.ndarray, result: SegmentationResult, opacity: float,
                 top: int = LEGEND_CLASSES) -> OverlayView:
    """The gr.AnnotatedImage value of one mode: the image, one mask per found class (the `top`
    largest; the others grouped as one grey "N smaller classes" mask), weighted by `opacity`,
    the mode's title and the colours (the class colours of the downloads)."""
    weight = _check_opacity(opacity)
    colors = class_colors(result.class_names)
    shorts = short_names(result.class_names)
    present = result.present_classes
    masks, color_map = [], {}
    for c in present[:top]:
        label = legend_label(shorts[c.index], c)
        masks.append(((result.label_map == c.index).astype(np.float32) * weight, label))
        color_map[label] = hex_color(colors[c.index])
    rest = present[top:]
    if rest:
        share = sum(c.area_fraction for c in rest)
        label = f"{len(rest)} smaller classes — {area_text(share)} of image"
        mask = np.isin(result.label_map, [c.index for c in rest])
        masks.append((mask.astype(np.float32) * weight, label))
        color_map[label] = OTHER_COLOR
    return (image, masks), MODE_TITLES.get(result.mode, result.mode), color_map


def overlay_views(image: np.ndarray, results: Sequence[SegmentationResult], opacity: float
                  ) -> list[OverlayView]:
    """`overlay_view` per mode, in the results' order."""
    return [overlay_view(image, r, opacity) for r in results]


# ----------------------------------------------------------------------------- the panel
def _not_found_line(result: SegmentationResult, shorts: Sequence[str]) -> str:
    missing = [shorts[c.index] for c in result.classes if not c.present]
    if not missing:
        return ""
    listed = ", ".join(markdown_text(n) for n in missing[:NOT_FOUND_NAMES])
    more = f" and {len(missing) - NOT_FOUND_NAMES} more" if len(missing) > NOT_FOUND_NAMES else ""
    return f"not found ({len(missing)}): {listed}{more}"


def _unlabelled_line(result: SegmentationResult, threshold: float) -> str:
    share = unlabelled_fraction(result)
    if share > 0:
        return (f"unlabelled: {area_text(share)} of pixels (best score below the threshold "
                f"{float(threshold):.2f})")
    return f"unlabelled: none (threshold {float(threshold):.2f})"


def _found_order(results: Sequence[SegmentationResult]) -> list[int]:
    """Indices of the classes found in any mode, largest area (over the modes) first."""
    area = np.max([[c.area_fraction for c in r.classes] for r in results], axis=0)
    found = np.any([[c.present for c in r.classes] for r in results], axis=0)
    return [int(i) for i in sorted(np.flatnonzero(found), key=lambda i: (-area[i], i))]


def _cells(stat: ClassStat) -> list[str]:
    if not stat.present:
        return ["not found", "—"]
    return [score_text(stat.confidence), area_text(stat.area_fraction)]


def confidence_panel(results: Sequence[SegmentationResult], threshold: float = 0.0) -> str:
    """Markdown: per mode, the found classes with their confidence and area (largest first, at
    most PANEL_CLASSES rows), the unlabelled share and the classes not found; in "both" mode one
    table with a confidence and an area column per mode.

    Args:
        results: one result per mode (same image and vocabulary).
        threshold: the threshold the label maps were made with (named on the unlabelled line).
    """
    shorts = short_names(results[0].class_names)
    titles = [MODE_TITLES.get(r.mode, r.mode) for r in results]
    order = _found_order(results)
    counts = [len(r.present_classes) for r in results]
    n = len(results[0].classes)
    if len(results) == 1:
        head = f"#### {titles[0]}: {counts[0]} of {n} classes found"
    else:
        head = "#### Both modes: " + ", ".join(
            f"{t} {k} of {n} found" for t, k in zip(titles, counts))
    lines = [head, "", MEANING, ""]
    if order:
        cols = [f"{r.mode}: {what}" for r in results for what in ("confidence", "area")]
        lines += ["| class | " + " | ".join(cols) + " |",
                  "|:--" + "|--:" * len(cols) + "|"]
        for i in order[:PANEL_CLASSES]:
            cells = [cell for r in results for cell in _cells(r.classes[i])]
            lines.append(f"| {markdown_text(shorts[i])} | " + " | ".join(cells) + " |")
        if len(order) > PANEL_CLASSES:
            lines += ["", f"*+ {len(order) - PANEL_CLASSES} more found classes: see the table*"]
    else:
        lines.append("**No class found**: every pixel is below the threshold.")
    for title, r in zip(titles, results):
        prefix = f"**{title}:** " if len(results) > 1 else ""
        parts = [p for p in (_unlabelled_line(r, threshold), _not_found_line(r, shorts)) if p]
        lines += ["", prefix + " · ".join(parts)]
    return "\n".join(lines)

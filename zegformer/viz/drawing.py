"""Pictures of a `SegmentationResult`: class colours, overlays, legends, figures, the
disagreement map and the data of a gr.AnnotatedImage (files are written by `zegformer.viz.export`).

numpy and Pillow only (no torch, no gradio), so the app, the CLIs and notebooks can all use it.
Images are RGB, H x W x 3 uint8; label maps are integer H x W arrays of class indices with -1
(`UNLABELED`) for pixels left unlabelled.
"""

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from zegformer.errors import ZegFormerError
from zegformer.inference.image import load_image
from zegformer.inference.result import UNLABELED, SegmentationResult
from zegformer.viz.palette import PALETTE, _name_key, class_color, class_colors, hex_color  # noqa: F401


def as_rgb(image: Any) -> np.ndarray:
    """An H x W x 3 uint8 RGB array from a path, PIL image or array, read as the predictor reads
    it (`zegformer.inference.image.load_image`: EXIF orientation applied, grayscale / RGBA / 16-bit
    converted), so that an overlay lines up with the label map computed from the same input."""
    return load_image(image)


def _check_opacity(alpha: Any) -> float:
    """The one check of an overlay opacity (a drawing parameter): a number in 0..1."""
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise ZegFormerError(f"opacity (alpha) must be a number between 0 and 1, got {alpha!r}")
    return value


def _check_labels(label_map: np.ndarray, num_classes: int) -> np.ndarray:
    labels = np.asarray(label_map)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"label_map must be a 2-D integer array, got {labels.dtype} "
                         f"{labels.shape}")
    if labels.size and (labels.min() < UNLABELED or labels.max() >= num_classes):
        raise ValueError(
            f"label_map values must lie in -1..{num_classes - 1} for {num_classes} colours, "
            f"got {labels.min()}..{labels.max()}"
        )
    return labels


def colorize(label_map: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Paint a label map: H x W int -> H x W x 3 uint8; unlabelled (-1) pixels stay black."""
    colors = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    labels = _check_labels(label_map, len(colors))
    table = np.concatenate([colors, np.zeros((1, 3), np.uint8)])  # row -1 = black
    return table[labels]


def fit_image(image: Any, shape: tuple[int, int]) -> np.ndarray:
    """The image (path, PIL or array) as H x W x 3 uint8 at `shape` (H, W): unchanged when it
    has that size, else resized (bilinear, as the predictor downscales large images).

    Raises:
        ValueError: the aspect ratios differ (another image, not the same one at another scale).
    """
    rgb = as_rgb(image)
    h, w = shape
    if rgb.shape[:2] == (h, w):
        return rgb
    ih, iw = rgb.shape[:2]
    if abs(ih / iw - h / w) > 0.02 * (h / w) + 1.0 / min(h, w):
        raise ValueError(f"image size {iw}x{ih} does not match the label map's {w}x{h}")
    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BILINEAR))


def _boundaries(labels: np.ndarray, width: int) -> np.ndarray:
    """H x W bool: pixels whose upper or left neighbour has another label, `width` pixels wide."""
    edge = np.zeros(labels.shape, dtype=bool)
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    for _ in range(width - 1):  # thicker lines on large images
        edge[1:, :] |= edge[:-1, :].copy()
        edge[:, 1:] |= edge[:, :-1].copy()
    return edge


def overlay(
    image: Any, label_map: np.ndarray, colors: np.ndarray, alpha: float = 0.5
) -> np.ndarray:
    """Blend class colours over an image, with thin darker lines where classes meet.

    Args:
        image: RGB image (PIL or array; grayscale / RGBA / 16-bit accepted). Resized to the label
            map's size when the two differ only by scale.
        label_map: H x W int class indices, -1 = unlabelled (those pixels show the plain image).
        colors: K x 3 uint8 class colours.
        alpha: weight of the class colour in 0..1.

    Returns:
        H x W x 3 uint8.
    """
    alpha = _check_opacity(alpha)
    colors = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    labels = _check_labels(label_map, len(colors))
    rgb = fit_image(image, labels.shape).astype(np.float32)
    paint = colorize(labels, colors).astype(np.float32)
    known = labels >= 0
    out = rgb.copy()
    out[known] = (1.0 - alpha) * rgb[known] + alpha * paint[known]
    edge = _boundaries(labels, max(1, round(max(labels.shape) / 700))) & known
    out[edge] = 0.7 * paint[edge]
    return out.round().astype(np.uint8)


# ----------------------------------------------------------------------------------- drawing
@lru_cache(maxsize=16)
def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans (wide Unicode coverage) when available, else Pillow's bundled font."""
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    candidates = [name]  # found on the system font path by FreeType
    spec = importlib.util.find_spec("matplotlib")  # ships DejaVu: located here, not imported
    if spec and spec.submodule_search_locations:
        base = Path(list(spec.submodule_search_locations)[0])
        candidates.append(str(base / "mpl-data" / "fonts" / "ttf" / name))
    for cand in candidates:
        try:
            return ImageFont.truetype(cand, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def _text_width(font: Any, text: str) -> int:
    return int(np.ceil(font.getlength(text)))


def _ellipsize(font: Any, text: str, max_width: int) -> str:
    if _text_width(font, text) <= max_width:
        return text
    while text and _text_width(font, text + "...") > max_width:
        text = text[:-1]
    return text + "..."


def legend(
    names: Sequence[str],
    colors: np.ndarray,
    *,
    confidences: Sequence[float] | None = None,
    seen: Sequence[bool] | None = None,
    width: int | None = None,
    font_size: int = 16,
    title: str | None = None,
    value_label: str = "area",
) -> Image.Image:
    """A legend panel: one row per class with a colour swatch, the name, a "novel" tag for classes
    outside the checkpoint's training vocabulary and a value in percent (`value_label` says
    which: the figures and the video legend give each class's share of the pixels, "area").

    Args:
        names: K class names, drawn top to bottom in this order.
        colors: K x 3 uint8.
        confidences: optional K values in 0..1, drawn as percentages.
        seen: optional K flags; False draws the "novel" tag.
        width: panel width in pixels (names are shortened with "..." to fit); None = as wide as
            the longest row needs.
        font_size: text size in pixels.
        title: optional heading row.
        value_label: what the percentages are, written at the right of the heading row.

    Returns:
        RGB PIL image on a white background.
    """
    colors = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    if len(colors) != len(names):
        raise ValueError(f"legend got {len(names)} names but {len(colors)} colours")
    font, small = _font(font_size), _font(max(9, round(font_size * 0.75)), True)
    pad, row_h = round(font_size * 0.6), round(font_size * 1.6)
    swatch = round(font_size * 1.1)
    tag_w = _text_width(small, "novel") + round(font_size * 0.6)
    pct_w = _text_width(font, "100%")
    fixed = pad + swatch + pad + pad + (tag_w + pad if seen is not None else 0)
    fixed += (pct_w + pad) if confidences is not None else 0
    if width is None:
        longest = max([_text_width(font, n) for n in names] + [_text_width(font, "no classes")])
        head = _text_width(_font(font_size, True), title) + 3 * pad + pct_w if title else 0
        width = max(fixed + longest, head, 120)
    rows = max(len(names), 1) + (1 if title else 0)
    panel = Image.new("RGB", (int(width), pad * 2 + rows * row_h), "white")
    draw = ImageDraw.Draw(panel)
    y = pad
    if title:
        draw.text((pad, y + row_h // 2), title, font=_font(font_size, True), fill=(20, 20, 20),
                  anchor="lm")
        if confidences is not None and names:  # say what the percentages are
            draw.text((int(width) - pad, y + row_h // 2), value_label, font=small,
                      fill=(110, 110, 110), anchor="rm")
        y += row_h
    if not names:
        draw.text((pad, y + row_h // 2), "no classes", font=font, fill=(110, 110, 110), anchor="lm")
    for i, name in enumerate(names):
        mid = y + row_h // 2
        x = pad
        draw.rectangle([x, mid - swatch // 2, x + swatch, mid + swatch // 2],
                       fill=tuple(int(c) for c in colors[i]), outline=(60, 60, 60))
        x += swatch + pad
        right = int(width) - pad
        if confidences is not None:
            draw.text((right, mid), f"{round(100 * float(confidences[i]))}%", font=font,
                      fill=(60, 60, 60), anchor="rm")
            right -= pct_w + pad
        if seen is not None and not seen[i]:
            box = [right - tag_w, mid - font_size * 0.55, right, mid + font_size * 0.55]
            draw.rounded_rectangle(box, radius=font_size // 4, fill=(255, 236, 179),
                                   outline=(214, 150, 0))
            draw.text(((box[0] + box[2]) / 2, mid), "novel", font=small, fill=(120, 75, 0),
                      anchor="mm")
        if seen is not None:
            right -= tag_w + pad
        draw.text((x, mid), _ellipsize(font, name, max(right - x, 10)), font=font,
                  fill=(20, 20, 20), anchor="lm")
        y += row_h
    return panel


def _stack(parts: Sequence[Image.Image], horizontal: bool = False) -> Image.Image:
    """Paste images one after the other (top to bottom, or left to right) on white."""
    size = ((sum(p.width for p in parts), max(p.height for p in parts)) if horizontal
            else (max(p.width for p in parts), sum(p.height for p in parts)))
    canvas, pos = Image.new("RGB", size, "white"), 0
    for part in parts:
        canvas.paste(part, (pos, 0) if horizontal else (0, pos))
        pos += part.width if horizontal else part.height
    return canvas


def _banner(width: int, texts: Sequence[str], size: int, fill: tuple[int, ...]) -> Image.Image:
    """A coloured strip with the first of `texts` that fits (the last one is shortened)."""
    font = _font(size, True)
    text = next((t for t in texts if _text_width(font, t) <= width - 8), texts[-1])
    strip = Image.new("RGB", (width, round(size * 1.8)), fill)
    ImageDraw.Draw(strip).text((width // 2, strip.height // 2), _ellipsize(font, text, width - 8),
                               font=font, fill="white", anchor="mm")
    return strip


def _note(width: int, paragraphs: Sequence[str], size: int, max_lines: int = 2) -> Image.Image:
    """Gray text, each paragraph wrapped at spaces to `width` in at most `max_lines` lines."""
    font, pad, lines = _font(max(9, round(size * 0.85))), round(size * 0.6), []
    for text in paragraphs:
        wrapped: list[str] = []
        for word in text.split(" "):
            if wrapped and _text_width(font, wrapped[-1] + " " + word) <= width - 2 * pad:
                wrapped[-1] += " " + word
            else:
                wrapped.append(word)
        if len(wrapped) > max_lines:
            wrapped = wrapped[: max_lines - 1] + [wrapped[max_lines - 1] + " ..."]
        lines += [_ellipsize(font, line, width - 2 * pad) for line in wrapped]
    line_h = round(size * 1.25)
    panel = Image.new("RGB", (width, 2 * pad + line_h * len(lines)), "white")
    draw = ImageDraw.Draw(panel)
    for i, line in enumerate(lines):
        draw.text((pad, pad + i * line_h), line, font=font, fill=(100, 100, 100))
    return panel


def render(
    image: Any, result: SegmentationResult, alpha: float = 0.5, *, title: str | None = None
) -> Image.Image:
    """The overlay with a legend of the classes found (largest area first).

    Below the legend: the unlabelled share and the classes that label no pixel ("not found").
    The legend sits right of the image, or below it for wide images; with very many classes only
    the largest are listed. When `result.untrained`, a red "UNTRAINED WEIGHTS" banner spans the
    top.

    Args:
        image: the image the result was computed on (path, PIL or array; resized to the label
            map when only the scale differs).
        result: the prediction.
        alpha: overlay opacity in 0..1.
        title: heading of the legend; default "<mode> mode".

    Returns:
        RGB PIL image, larger than the input image.
    """
    colors = class_colors(result.class_names)
    over = Image.fromarray(overlay(image, result.label_map, colors, alpha))
    w, h = over.size
    size, beside = legend_layout(w, h)
    present = result.present_classes
    # rows that fit beside the image: keep room for the title and up to four lines of notes
    max_rows = max(4, (h - round(size * 9)) // round(size * 1.6)) if beside else 24
    shown = present if len(present) <= max_rows else present[: max_rows - 1]
    leg = legend([c.name for c in shown], colors[[c.index for c in shown]],
                 confidences=[c.area_fraction for c in shown], seen=[c.seen for c in shown],
                 width=None if beside else w, font_size=size, value_label="area",
                 title=title or f"{result.mode} mode")
    notes = [f"+ {len(present) - len(shown)} smaller classes"] if len(shown) < len(present) else []
    unlabeled = float((result.label_map == UNLABELED).mean())
    notes += [f"unlabelled: {100 * unlabeled:.0f}% of pixels"] if unlabeled > 0 else []
    missing = [c.name for c in result.classes if not c.present]
    notes += ["not found: " + ", ".join(missing)] if missing else []
    if notes:
        leg = _stack([leg, _note(leg.width, notes, size)])
    return attach_legend(over, leg, untrained=result.untrained)


def legend_layout(width: int, height: int) -> tuple[int, bool]:
    """(legend font size in pixels, True to put the legend beside rather than below the image)
    for an image of `width` x `height`: the rule `render` and the video frames use."""
    return max(13, min(30, round(max(width, height) / 34))), width / height < 1.6


def attach_legend(picture: Image.Image, panel: Image.Image, *, untrained: bool = False
                  ) -> Image.Image:
    """`picture` with `panel` right of it (below it for wide pictures, see `legend_layout`),
    on white, topped by a red "UNTRAINED WEIGHTS" banner when `untrained`."""
    size, beside = legend_layout(*picture.size)
    canvas = _stack([picture, panel], horizontal=beside)
    return mark_untrained(canvas, size) if untrained else canvas


UNTRAINED_TEXTS = ("UNTRAINED WEIGHTS: random model, output is meaningless", "UNTRAINED WEIGHTS",
                   "UNTRAINED")  # the longest that fits is drawn
UNTRAINED_RED = (200, 30, 30)


def mark_untrained(picture: Image.Image, size: int | None = None) -> Image.Image:
    """`picture` (RGB) below a red "UNTRAINED WEIGHTS" strip of its width, text `size` px high
    (default: the legend's size for the picture, `legend_layout`). The figures, the
    disagreement map and the evaluation plots of an untrained model all carry it."""
    size = size or legend_layout(*picture.size)[0]
    return _stack([_banner(picture.width, UNTRAINED_TEXTS, size, UNTRAINED_RED),
                   picture.convert("RGB")])


def _names_map(result: SegmentationResult, names: dict[str, int]) -> np.ndarray:
    table = np.array([names[_name_key(n)] for n in result.class_names] + [-1], dtype=np.int64)
    return table[result.label_map]  # -1 indexes the last entry: unlabelled stays -1


def disagreement(a: SegmentationResult, b: SegmentationResult) -> np.ndarray:
    """H x W bool: True where the two results give a pixel different classes.

    Classes are compared by (normalised) name, so the vocabularies may be ordered differently.
    """
    if a.label_map.shape != b.label_map.shape:
        raise ValueError(f"cannot compare results of sizes {a.label_map.shape} and "
                         f"{b.label_map.shape}")
    if list(a.class_names) == list(b.class_names):
        return a.label_map != b.label_map
    names: dict[str, int] = {}
    for n in list(a.class_names) + list(b.class_names):
        names.setdefault(_name_key(n), len(names))
    return _names_map(a, names) != _names_map(b, names)


def render_disagreement(image: Any, a: SegmentationResult, b: SegmentationResult) -> Image.Image:
    """The image in faded gray with the pixels where `a` and `b` disagree in magenta, under a
    strip saying the share (and the red UNTRAINED banner when either result is untrained)."""
    diff = disagreement(a, b)
    rgb = fit_image(image, diff.shape).astype(np.float32)
    gray = rgb.mean(axis=2, keepdims=True) * 0.6 + 90.0
    out = np.repeat(gray, 3, axis=2)
    out[diff] = 0.35 * out[diff] + 0.65 * np.array([230.0, 0.0, 200.0])
    pic = Image.fromarray(out.round().clip(0, 255).astype(np.uint8))
    size, share = max(13, min(30, round(max(pic.size) / 34))), f"{100 * diff.mean():.1f}%"
    texts = [f"{a.mode} vs {b.mode}: {share} of pixels differ (magenta)", f"{share} differ"]
    out = _stack([_banner(pic.width, texts, size, (70, 70, 70)), pic])
    return mark_untrained(out, size) if a.untrained or b.untrained else out

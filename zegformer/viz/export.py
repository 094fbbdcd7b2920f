"""The one writer of results: pictures, label maps and the JSON document of one prediction.

The app (one folder per request) and the demo CLI (one file stem per input image) both write
through `write_results`; they differ only in their `FileLayout`, i.e. what the files are called
and which pictures are written. The JSON document (`result_document`) has one layout for both:

    {"mode": "decoupled" | "pixel" | "both",
     "model", "untrained", "fast" (true: the fast approximation made it), "device",
     "image_size": {"height", "width"} (what the model saw),
     "original_size": {"height", "width"} (the input before downscaling),
     "classes": [{"index", "name", "split", "confidence", "area_fraction", "present", "color"}],
     "unlabeled_fraction", "timings"             <- the first mode's result, at the top level
     "results": {mode: the same fields, for every mode that ran},
     "disagreement_fraction" (two modes only), "opacity",
     "input" (when the caller names it), "files": [the names written, this document last]}

Pictures (overlays, figures, the disagreement map) are lossy WebP at quality 90 by default
(about 0.15 MB for a 2048 x 1536 overlay instead of 2.2 MB as PNG); label maps are always PNG,
bit-exact. `FileLayout(picture_format="png")` writes lossless pictures, "jpeg" writes JPEG (no
size limit; WebP holds at most 16383 pixels a side).

numpy and Pillow only, like `zegformer.viz.drawing`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from ..errors import ZegFormerError
from ..inference.result import UNLABELED, SegmentationResult
from .drawing import (_check_labels, as_rgb, disagreement, fit_image, overlay, render,
                      render_disagreement)
from .palette import class_colors, hex_color

MODE_TITLES = {"decoupled": "Decoupled (ZegFormer)", "pixel": "Pixel-level"}
PICTURES = ("overlay", "figure", "labels")  # what `FileLayout.pictures` may name
# picture format -> (file suffix, Pillow save options); label maps are always PNG
PICTURE_FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    "webp": (".webp", {"format": "WEBP", "quality": 90, "method": 3}),
    "jpeg": (".jpg", {"format": "JPEG", "quality": 90, "subsampling": 0}),
    "png": (".png", {"format": "PNG"}),
}
WEBP_MAX_SIDE = 16383  # the WebP format's limit on width and height


@dataclass(frozen=True)
class FileLayout:
    """What `write_results` calls its files and which pictures it writes.

    A file name is `[stem_][mode_]<name><suffix>`: the stem when one is set, the mode when
    `mode_in_names` or when several modes ran; the suffix is ".png" for label maps and that of
    `picture_format` (".webp" by default) for the other pictures. The JSON document is
    `<stem>.json` or `result.json`, the disagreement map `[stem_]disagreement.webp`.
    """

    stem: str = ""  # prefix of every file name ("cat" -> cat_labels.png, cat.json); "" = none
    pictures: tuple[tuple[str, str], ...] = (  # (picture, <name> in its file name), in order
        ("overlay", "overlay"), ("figure", "figure"), ("labels", "labels"))
    #   overlay = class colours blended over the image; figure = overlay + legend (`render`);
    #   labels = the label map as a PNG (`save_label_map`)
    mode_in_names: bool = True  # False: the mode shows in names only when several modes ran
    labels_at_input_size: bool = False  # label maps at the input's size, before downscaling
    picture_format: str = "webp"  # overlays, figures, disagreement map: a PICTURE_FORMATS key

    def __post_init__(self) -> None:
        if self.picture_format not in PICTURE_FORMATS:
            raise ZegFormerError(f"unknown picture format {self.picture_format!r}; use one of "
                                 f"{', '.join(PICTURE_FORMATS)}")

    @property
    def picture_suffix(self) -> str:
        """".webp", ".jpg" or ".png": the suffix of every picture but the label maps."""
        return PICTURE_FORMATS[self.picture_format][0]

    def picture_name(self, name: str, mode: str, n_modes: int, picture: str = "overlay") -> str:
        """The file name of `picture` ("labels" -> .png) called `name`, for `mode`."""
        parts = [self.stem] if self.stem else []
        parts += [mode] if self.mode_in_names or n_modes > 1 else []
        return "_".join(parts + [name]) + (".png" if picture == "labels" else self.picture_suffix)

    @property
    def disagreement_name(self) -> str:
        name = f"{self.stem}_disagreement" if self.stem else "disagreement"
        return name + self.picture_suffix

    @property
    def document_name(self) -> str:
        return f"{self.stem}.json" if self.stem else "result.json"


APP_LAYOUT = FileLayout()  # <mode>_{overlay,figure}.webp, <mode>_labels.png, result.json


def cli_layout(stem: str) -> FileLayout:
    """The demo CLI's names: `<stem>_overlay.webp` (the figure, with its legend) and
    `<stem>_labels.png` at the input's size, `<stem>_<mode>_...` when two modes ran, `<stem>.json`."""
    return FileLayout(stem=stem, pictures=(("figure", "overlay"), ("labels", "labels")),
                      mode_in_names=False, labels_at_input_size=True)


@dataclass
class Written:
    """What `write_results` wrote, and the pictures a UI shows without reading them back."""

    image: np.ndarray  # H x W x 3 uint8: the input at the results' size (the overlays' base)
    document: dict[str, Any]  # the JSON document, as written
    files: list[Path] = field(default_factory=list)  # every file written, the document last
    disagreement: Image.Image | None = None  # the disagreement map, when two modes ran


# ------------------------------------------------------------------------------ label files
def save_label_map(
    label_map: np.ndarray, path: str | os.PathLike, num_classes: int | None = None
) -> None:
    """Write class indices as a grayscale PNG.

    8-bit with 255 = unlabelled when there are at most 255 classes, else 16-bit with 65535 =
    unlabelled. `num_classes` (K) fixes the depth for a vocabulary; by default it is inferred
    from the largest label.
    """
    labels = np.asarray(label_map)
    k = num_classes if num_classes is not None else int(labels.max(initial=-1)) + 1
    labels = _check_labels(labels, max(k, 1))
    if k > 65535:
        raise ValueError(f"a PNG label map holds at most 65535 classes, got {k}")
    dtype, empty = (np.uint8, 255) if k <= 255 else (np.uint16, 65535)
    out = np.where(labels < 0, empty, labels).astype(dtype)
    Image.fromarray(out).save(path, format="PNG")


def load_label_map(path: str | os.PathLike) -> np.ndarray:
    """Read a PNG written by `save_label_map`: H x W int32 with -1 for unlabelled pixels."""
    with Image.open(path) as im:
        eight_bit = im.mode in ("L", "P")
        arr = np.asarray(im).astype(np.int32)
    if arr.ndim != 2:
        raise ValueError(f"{path} is not a single-channel label map")
    arr[arr == (255 if eight_bit else 65535)] = UNLABELED
    return arr


def _resize_labels(label_map: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """The label map at another size (nearest neighbour), e.g. the input's before downscaling."""
    if label_map.shape == tuple(size_hw):
        return label_map
    img = Image.fromarray(label_map.astype(np.int32))  # mode "I"
    return np.asarray(img.resize(size_hw[::-1], Image.Resampling.NEAREST)).astype(np.int32)


# --------------------------------------------------------------------------------- document
def _size(hw: Sequence[int]) -> dict[str, int]:
    return {"height": int(hw[0]), "width": int(hw[1])}


def result_json(result: SegmentationResult, colors: np.ndarray | None = None) -> dict[str, Any]:
    """`result.to_json()` with a '#rrggbb' colour added to every class entry and both sizes
    written as {"height", "width"}."""
    colors = class_colors(result.class_names) if colors is None else np.asarray(colors)
    data = result.to_json()
    data["original_size"] = _size(result.original_size or result.label_map.shape)
    for entry in data["classes"]:
        entry["color"] = hex_color(colors[entry["index"]])
    return data


def result_document(results: Sequence[SegmentationResult], opacity: float, *,
                    files: Sequence[str] = (), input_name: str | None = None) -> dict[str, Any]:
    """The JSON document of one prediction in one or two modes (layout: see the module doc).

    Args:
        results: one result per mode, all for the same image and vocabulary.
        opacity: the overlays' opacity.
        files: names of the files written with it.
        input_name: the input as the caller knows it (e.g. its path); left out when None.
    """
    if not results:
        raise ValueError("result_document needs at least one result")
    runs = {r.mode: result_json(r) for r in results}
    data = dict(runs[results[0].mode])
    data["mode"] = "both" if len(runs) > 1 else results[0].mode
    data["results"] = runs
    if len(results) > 1:
        data["disagreement_fraction"] = round(float(disagreement(results[0], results[1]).mean()), 6)
    data["opacity"] = float(opacity)
    if input_name is not None:
        data["input"] = str(input_name)
    data["files"] = list(files)
    return data


# ---------------------------------------------------------------------------------- writing
def write_results(out_dir: str | os.PathLike, image: Any, results: Sequence[SegmentationResult],
                  opacity: float = 0.5, layout: FileLayout = APP_LAYOUT, *,
                  input_name: str | None = None) -> Written:
    """Write the pictures, label maps and JSON document of one prediction.

    Everything is drawn before anything is written, so a bad `opacity` leaves no files (and no
    folder) behind.

    Args:
        out_dir: the folder to write into (created when missing).
        image: the input (array, PIL image or path), at the results' size or larger with the
            same aspect ratio (it is resized to the label maps once).
        results: one result per mode (at most two), same image and vocabulary.
        opacity: weight of the class colours in 0..1.
        layout: the file names and pictures (`APP_LAYOUT`, `cli_layout(stem)`).
        input_name: recorded as "input" in the document.

    Returns:
        `Written`: the resized image, the document, the paths written and the disagreement map.
    """
    if not 1 <= len(results) <= 2:
        raise ValueError(f"write_results takes one or two results, got {len(results)}")
    rgb = as_rgb(image)
    base = fit_image(rgb, results[0].label_map.shape)
    pending: list[tuple[str, Any]] = []  # (file name, PIL image or (labels, K))
    for r in results:
        colors = class_colors(r.class_names)
        for picture, name in layout.pictures:
            target = layout.picture_name(name, r.mode, len(results), picture)
            if picture == "overlay":
                pending.append((target, Image.fromarray(overlay(base, r.label_map, colors,
                                                                opacity))))
            elif picture == "figure":
                pending.append((target, render(base, r, opacity, title=MODE_TITLES.get(r.mode))))
            elif picture == "labels":
                size = (r.original_size or r.label_map.shape) if layout.labels_at_input_size \
                    else r.label_map.shape
                pending.append((target, (_resize_labels(r.label_map, tuple(size)),
                                         len(r.class_names))))
            else:
                raise ValueError(f"unknown picture {picture!r}; use one of {', '.join(PICTURES)}")
    diff = render_disagreement(base, results[0], results[1]) if len(results) > 1 else None
    if diff is not None:
        pending.append((layout.disagreement_name, diff))

    save_options = PICTURE_FORMATS[layout.picture_format][1]
    for name, item in pending:
        if layout.picture_format == "webp" and isinstance(item, Image.Image) \
                and max(item.size) > WEBP_MAX_SIDE:
            raise ZegFormerError(f"{name} would be {item.width} x {item.height} pixels; WebP "
                                 f"holds at most {WEBP_MAX_SIDE} a side: write it with "
                                 "FileLayout(picture_format='jpeg') or 'png'")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, item in pending:
        if isinstance(item, Image.Image):
            item.save(out / name, **save_options)
        else:
            save_label_map(item[0], out / name, item[1])
    names = [name for name, _ in pending] + [layout.document_name]
    document = result_document(results, opacity, files=names, input_name=input_name)
    with open(out / layout.document_name, "w", encoding="utf-8") as f:
        json.dump(document, f, indent=2, ensure_ascii=False)
    return Written(image=base, document=document, files=[out / n for n in names],
                   disagreement=diff)

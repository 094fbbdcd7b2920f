"""What `app.py` needs that is not user interface: start-up, presets, and turning predictions
into the values the Space shows and the `/segment` API returns.

No Gradio here (the module imports without it), and no model logic: the predictor does the
work, `zegformer.viz.drawing` draws.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from ..viz import drawing as visualize
from ..viz import export
from ..errors import ZegFormerError
from ..inference.result import SegmentationResult
from ..text import MAX_CLASSES, MAX_NAME_LENGTH, parse_classes
from ..data.vocabularies import load_vocabulary

CONFIG_ENV = "ZEGFORMER_CONFIG"
RANDOM_ENV = "ZEGFORMER_RANDOM_WEIGHTS"
WEIGHTS_ENV = "ZEGFORMER_WEIGHTS"
CLIP_WEIGHTS_ENV = "ZEGFORMER_CLIP_WEIGHTS"
DEFAULT_CONFIG = "zegformer_R101_bs32_60k_vit16_coco-stuff_gzss_eval"

MODE_CHOICES = [  # (label shown in the UI, value passed to the API)
    ("Decoupled (ZegFormer)", "decoupled"),
    ("Pixel-level", "pixel"),
    ("Both side by side", "both"),
]
MODE_TITLES = {"decoupled": "Decoupled (ZegFormer)", "pixel": "Pixel-level"}
PRESETS = {  # label in the UI -> file in assets/vocabularies
    "COCO-Stuff (171)": "coco_stuff_171",
    "PASCAL VOC (20)": "pascal_voc_20",
    "ADE20K (150)": "ade20k_150",
    "ADE20K-Full (847)": "ade20k_full_847",
}
TABLE_HEADERS = ["class", "split", "mode", "confidence", "area %", "found"]
OUTPUT_MAX_AGE_S = 3600  # per-request output folders older than this are deleted
ProgressFn = Callable[[float, str], None]


# ----------------------------------------------------------------------------- start-up
def setup_help(reason: str) -> str:
    """Markdown telling the Space owner what to configure, after the loader's own message."""
    return (
        f"**No model is loaded:** {reason}\n\n"
        f"Set `{WEIGHTS_ENV}` to the ZegFormer checkpoint (a local `.pth` path or "
        f"`hf://owner/repo/file.pth`) and, offline, `{CLIP_WEIGHTS_ENV}` to the CLIP ViT-B/16 "
        f"weights; `{CONFIG_ENV}` picks the config (default `{DEFAULT_CONFIG}`). "
        "In a Space these are *Variables* in the settings. To try the interface without "
        f"weights, run `python app.py --random-weights` (or set `{RANDOM_ENV}=1`)."
    )


def load_app_predictor(random_weights: bool | None = None) -> Any:
    """The predictor the app serves, built once at start-up, or a Markdown message saying why not.

    Reads $ZEGFORMER_CONFIG, $ZEGFORMER_WEIGHTS and $ZEGFORMER_CLIP_WEIGHTS (paths or hf://
    references, downloaded once here, never per request). `random_weights` (default:
    $ZEGFORMER_RANDOM_WEIGHTS=1) loads the tiny untrained model instead.

    Returns:
        a `zegformer.Predictor`, or a `str` (Markdown) when no model could be loaded.
    """
    from .. import load_predictor, load_random_predictor

    if random_weights is None:
        random_weights = os.environ.get(RANDOM_ENV, "").strip().lower() in ("1", "true", "yes")
    if random_weights:
        return load_random_predictor()
    config = os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG
    try:
        return load_predictor(config, os.environ.get(WEIGHTS_ENV) or None,
                              clip_weights=os.environ.get(CLIP_WEIGHTS_ENV) or None)
    except (ZegFormerError, OSError, RuntimeError) as e:  # RuntimeError: open_clip offline
        return setup_help(str(e).splitlines()[0] if str(e) else type(e).__name__)


# ----------------------------------------------------------------------------- vocabularies
def app_class_name(official: str) -> str:
    """Official names use ", " between synonyms ("pot, flowerpot"); the class box uses commas to
    separate classes, so synonyms are written "pot | flowerpot" there. Trailing synonyms that
    would make the name longer than MAX_NAME_LENGTH are left out (a few ADE20K-Full names)."""
    parts = [p.strip() for p in official.split(",") if p.strip()]
    name = parts[0] if parts else official.strip()
    for p in parts[1:]:
        if len(name) + 3 + len(p) > MAX_NAME_LENGTH:
            break
        name = f"{name} | {p}"
    return name


def available_presets() -> list[str]:
    """Labels of the presets whose class list is shipped."""
    out = []
    for label, file in PRESETS.items():
        try:
            load_vocabulary(file)
        except ZegFormerError:
            continue
        out.append(label)
    return out


def preset_classes(label: str) -> list[str]:
    """Class names of a preset, in the class box's syntax."""
    if label not in PRESETS:
        raise ZegFormerError(f"unknown preset {label!r}; choose one of {', '.join(PRESETS)}")
    return [app_class_name(c) for c in load_vocabulary(PRESETS[label])["classes"]]


def fill_classes(current: str, label: str, extend: bool) -> str:
    """The class box after choosing a preset: replaced by it, or extended with the classes of it
    that are not in the box yet (case-insensitive)."""
    names = preset_classes(label)
    if not extend or not (current or "").strip():
        return ", ".join(names)
    have = {n.strip().casefold() for n in current.replace("\n", ",").split(",")}
    extra = [n for n in names if n.casefold() not in have]
    return ", ".join([current.strip().rstrip(",")] + extra) if extra else current


def describe_classes(text: str) -> str:
    """Markdown showing how the class box is read: the parsed list, or why it cannot be used."""
    if not (text or "").strip():
        return (f"Type class names separated by commas (at most {MAX_CLASSES} classes, "
                f"{MAX_NAME_LENGTH} characters each); `tv | television` makes one class of "
                "synonyms.")
    try:
        names = parse_classes(text)
    except ZegFormerError as e:
        return f"**Cannot use this list:** {e}"
    shown = ", ".join(f"`{n}`" for n in names[:40])
    more = f" and {len(names) - 40} more" if len(names) > 40 else ""
    return f"**{len(names)} class{'es' if len(names) != 1 else ''}:** {shown}{more}"


def modes_for(mode: str, supported: Sequence[str]) -> list[str]:
    """The scoring modes one request runs: "both" runs decoupled then pixel-level."""
    values = [v for _, v in MODE_CHOICES]
    if mode not in values:
        raise ZegFormerError(f"unknown mode {mode!r}; use one of {', '.join(values)}")
    modes = ["decoupled", "pixel"] if mode == "both" else [mode]
    missing = [m for m in modes if m not in supported]
    if missing:
        raise ZegFormerError(f"this checkpoint supports only the {', '.join(supported)} mode; "
                             f"choose it instead of {mode!r}")
    return modes


# ----------------------------------------------------------------------------- running
def run_modes(predictor: Any, image: np.ndarray, classes: list[str], modes: Sequence[str],
              threshold: float, progress: ProgressFn | None = None) -> list[SegmentationResult]:
    """One `predictor.predict` per mode; progress fractions are spread over the modes."""
    results = []
    for i, mode in enumerate(modes):
        report = None
        if progress is not None:
            def report(f: float, desc: str, i: int = i, mode: str = mode) -> None:
                progress((i + f) / len(modes), f"{MODE_TITLES[mode]}: {desc}")
        results.append(predictor.predict(image, classes, mode=mode, threshold=threshold,
                                         progress=report))
    return results


@dataclass
class AppOutputs:
    """Everything one request shows; `app.py` maps it onto components."""

    confidences: dict[str, float]  # gr.Label value (first mode)
    table: list[list[Any]]  # rows under TABLE_HEADERS
    disagreement: Image.Image | None  # only when two modes ran
    files: list[str] = field(default_factory=list)  # downloads
    data: dict[str, Any] = field(default_factory=dict)  # the JSON result
    status: str = ""  # Markdown status line


def table_rows(results: Sequence[SegmentationResult]) -> list[list[Any]]:
    """Per class and mode: name, seen/novel, confidence, area share in percent, found or not."""
    rows = []
    for r in results:
        order = r.present_classes + [c for c in r.classes if not c.present]
        for c in order:
            rows.append([c.name, "seen" if c.seen else "novel", r.mode, round(c.confidence, 3),
                         round(100 * c.area_fraction, 2), "found" if c.present else "not found"])
    return rows


def status_line(results: Sequence[SegmentationResult], original_size: tuple[int, int]) -> str:
    """Model, device, image size and latency per stage (Markdown)."""
    first = results[0]
    h, w = first.label_map.shape
    size = f"{w} × {h}"
    if tuple(original_size) != (h, w):
        size += f" (downscaled from {original_size[1]} × {original_size[0]})"
    parts = [f"**Model:** {first.model}", f"**device:** {first.device}", f"**image:** {size}"]
    for r in results:
        stages = ", ".join(f"{k} {v:.2f} s" for k, v in r.timings.items() if k != "total")
        parts.append(f"**{r.mode}:** {r.timings.get('total', 0.0):.2f} s ({stages})")
    line = " · ".join(parts)
    if first.untrained:
        line = ("⚠️ **Untrained weights:** a tiny random model is loaded, so the segmentation "
                "is meaningless; it only shows that the app works.\n\n" + line)
    return line


def new_output_dir(root: Path | None = None, max_age_s: float = OUTPUT_MAX_AGE_S) -> Path:
    """A fresh folder for one request's files; folders older than `max_age_s` are removed."""
    root = root or Path(tempfile.gettempdir()) / "zegformer-app"
    root.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in root.iterdir():
        try:
            if old.is_dir() and now - old.stat().st_mtime > max_age_s:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:  # removed by a concurrent request
            continue
    out = root / uuid.uuid4().hex
    out.mkdir()
    return out


def package(image: np.ndarray, results: Sequence[SegmentationResult], alpha: float,
            out_dir: Path, original_size: tuple[int, int] | None = None) -> AppOutputs:
    """Overlays, legend colours, confidences, table, files and JSON for one request.

    Args:
        image: the H x W x 3 uint8 RGB image the results were computed on.
        results: one result per mode, all for the same image and vocabulary.
        alpha: overlay opacity in 0..1.
        out_dir: where the downloads are written.
        original_size: (H, W) of the upload before the app downscaled it.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ZegFormerError(f"opacity must be between 0 and 1, got {alpha}")
    original_size = original_size or image.shape[:2]
    files, runs = [], {}
    for r in results:
        colors = visualize.class_colors(r.class_names)
        stem = out_dir / r.mode
        Image.fromarray(visualize.overlay(image, r.label_map, colors, alpha)).save(
            f"{stem}_overlay.png")
        visualize.render(image, r, alpha, title=MODE_TITLES.get(r.mode)).save(f"{stem}_figure.png")
        export.save_label_map(r.label_map, f"{stem}_labels.png", len(r.class_names))
        files += [f"{stem}_{k}.png" for k in ("overlay", "figure", "labels")]
        runs[r.mode] = export.result_json(r, colors)
    data = dict(runs[results[0].mode])  # the first mode's result at the top level ...
    data["mode"] = "both" if len(results) > 1 else results[0].mode
    data["original_size"] = {"height": int(original_size[0]), "width": int(original_size[1])}
    data["opacity"] = float(alpha)
    data["results"] = runs  # ... and every mode's result by mode
    diff_img = None
    if len(results) > 1:
        diff = visualize.disagreement(results[0], results[1])
        data["disagreement_fraction"] = round(float(diff.mean()), 6)
        diff_img = visualize.render_disagreement(image, results[0], results[1])
        diff_img.save(out_dir / "disagreement.png")
        files.append(str(out_dir / "disagreement.png"))
    with open(out_dir / "result.json", "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
    files.append(str(out_dir / "result.json"))
    return AppOutputs(
        confidences={c.name: float(c.confidence) for c in results[0].classes},
        table=table_rows(results), disagreement=diff_img, files=files, data=data,
        status=status_line(results, (int(original_size[0]), int(original_size[1]))),
    )


def overlay_values(image: np.ndarray, data: dict[str, Any], files: Sequence[str]
                   ) -> list[tuple[Any, str, dict[str, str]]]:
    """Rebuild the overlays of a request from what it returned: the image, the JSON result and
    the label-map files (so the UI needs no server-side state between events).

    Returns:
        per mode run: the gr.AnnotatedImage value (image, [(mask weighted by the opacity,
        "name 87%")]) for the classes found, largest first; its title; {label: '#rrggbb'}.
        Empty when the files do not match the image (e.g. a new upload since).
    """
    by_name = {Path(f).name: f for f in files or []}
    alpha = float(data.get("opacity", 0.5))
    out = []
    for mode, run in (data.get("results") or {}).items():
        path = by_name.get(f"{mode}_labels.png")
        if path is None:
            return []
        labels = export.load_label_map(path)
        if labels.shape != image.shape[:2]:
            return []
        found = sorted((c for c in run["classes"] if c["present"]),
                       key=lambda c: -c["area_fraction"])
        masks, colors = [], {}
        for c in found:
            label = f"{c['name']} {round(100 * c['confidence'])}%"
            masks.append(((labels == c["index"]).astype(np.float32) * alpha, label))
            colors[label] = c["color"]
        out.append(((image, masks), MODE_TITLES.get(mode, mode), colors))
    return out

"""What the app sets up before its first request: the predictor it serves, the example rows and
the preset vocabularies, and the help under the class box.

No Gradio here (the module imports without it), and no model logic.
"""
from __future__ import annotations

import html
import json
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any, Sequence

from .. import resources
from ..data.vocabularies import load_vocabulary
from ..errors import ZegFormerError
from ..loading.config import DEFAULT_CONFIG  # not loading.factory: that imports torch
from ..loading.weights import CLIP_WEIGHTS_ENV, WEIGHTS_ENV
from ..text import MAX_CLASSES, MAX_NAME_LENGTH, parse_classes

CONFIG_ENV = "ZEGFORMER_CONFIG"  # the app's config (default DEFAULT_CONFIG)
RANDOM_ENV = "ZEGFORMER_RANDOM_WEIGHTS"  # "1": serve the tiny untrained model
PRESETS = {  # label in the UI -> file in assets/vocabularies
    "COCO-Stuff (171)": "coco_stuff_171",
    "PASCAL VOC (20)": "pascal_voc_20",
    "ADE20K (150)": "ade20k_150",
    "ADE20K-Full (847)": "ade20k_full_847",
}
SHOWN_NAMES = 40  # class names listed under the class box; more are counted
WARM_CHUNK = 8  # class names encoded per hold of the predictor's lock while warming
log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- the model
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
    from ..loading.factory import load_predictor, load_random_predictor

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


# ----------------------------------------------------------------------------- examples
def example_entries(folder: Path | None = None) -> list[tuple[Path, str]]:
    """(image path, class list) of every example in examples/examples.json whose image exists;
    empty when the manifest is missing or unreadable (e.g. an installed wheel has no examples)."""
    folder = folder or resources.examples_dir()
    if folder is None:
        return []
    try:
        with open(folder / "examples.json", encoding="utf-8") as f:
            entries = [(folder / e["image"], e["classes"]) for e in json.load(f)]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [(path, classes) for path, classes in entries if path.is_file()]


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


def markdown_text(text: str) -> str:
    """User text shown literally inside Markdown: every ASCII punctuation mark is
    backslash-escaped (no code span, link or emphasis can start) and <, > and & become HTML
    entities (no tag can start), so "x`<img src=x>`y" is shown as typed."""
    escaped = re.sub(r"([!-%'-/:;=?@\[-`{-~])", r"\\\1", text)  # all but & < >
    return html.escape(escaped, quote=False)


def describe_names(names: Sequence[str]) -> str:
    """Markdown listing parsed class names (the first SHOWN_NAMES, then a count)."""
    shown = ", ".join(f"**{markdown_text(n)}**" for n in names[:SHOWN_NAMES])
    more = f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else ""
    return f"**{len(names)} class{'es' if len(names) != 1 else ''}:** {shown}{more}"


def describe_classes(text: str) -> str:
    """Markdown showing how the class box is read while it is typed: the parsed list, or why it
    cannot be used (the check is `parse_classes`, the predictor's own)."""
    if not (text or "").strip():
        return (f"Type class names separated by commas (at most {MAX_CLASSES} classes, "
                f"{MAX_NAME_LENGTH} characters each); `tv | television` makes one class of "
                "synonyms.")
    try:
        names = parse_classes(text)
    except ZegFormerError as e:
        return f"**Cannot use this list:** {markdown_text(str(e))}"
    return describe_names(names)


# ----------------------------------------------------------------------------- warming
def preset_names(label: str) -> list[str]:
    """The class names a request with this preset in the class box asks for (as parsed)."""
    return parse_classes(", ".join(preset_classes(label)))


def warm_presets(predictor: Any, labels: Sequence[str] | None = None, *,
                 chunk: int = WARM_CHUNK, start: bool = True) -> threading.Thread:
    """Encode the preset vocabularies' text embeddings in a daemon thread, after start-up.

    They land in the predictor's text caches (memory, and the disk cache of
    `zegformer.text_cache`, so the next start reads them back), so a visitor's first request
    with a preset does not wait for the text tower (171 classes: about two minutes on 2 CPU
    cores with ViT-B/16). Every `chunk` names the thread takes `predictor.lock`, the lock every
    prediction holds: text is encoded between requests, and a request arriving meanwhile waits
    for at most one chunk. Smallest presets first. A failure is logged, never raised.

    Args:
        predictor: a `zegformer.Predictor` (anything without `lock` or `text` is left alone).
        labels: preset labels (default: every shipped preset).
        start: False returns the thread unstarted (tests).

    Returns:
        the thread (`join()` it to wait for the warming to finish).
    """
    from ..text import CLIP_TEMPLATES

    def template_sets() -> list[str]:
        sets = [predictor.settings.prompt_ensemble_type]
        if getattr(predictor, "kind", "zegformer") == "zegformer":
            sets.append(CLIP_TEMPLATES)  # CLIP crops and the pixel mode
        return list(dict.fromkeys(sets))

    def run() -> None:
        try:
            chosen = available_presets() if labels is None else list(labels)
            vocabularies = sorted((preset_names(label) for label in chosen), key=len)
            for names in vocabularies:
                for templates in template_sets():
                    for i in range(0, len(names), max(1, chunk)):
                        with predictor.lock:
                            predictor.text(names[i:i + max(1, chunk)], templates)
        except Exception as e:  # noqa: BLE001 - warming is an optimisation, never fatal
            log.warning("warming the preset vocabularies stopped: %s", e)

    thread = threading.Thread(target=run, name="zegformer-warm-presets", daemon=True)
    if hasattr(predictor, "lock") and hasattr(predictor, "text") and start:
        thread.start()
    return thread

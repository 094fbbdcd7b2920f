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
HF_TOKEN_ENV = "HF_TOKEN"  # huggingface_hub's token: needed for a private weights repository
# The loader speaks to library and CLI users (weights=PATH, --opts, trust_pickle=True); on the
# page each of its hints is said as what a Space owner sets instead. (pattern, replacement)
_FOR_SPACE_OWNER = [
    (re.compile(r"no ZegFormer weights given: pass weights=PATH .*", re.S),
     f"`{WEIGHTS_ENV}` is not set, so there is no ZegFormer checkpoint to load."),
    (re.compile(r"\.? ?If you trust (?:it|this file), load it with trust_pickle=True "
                r"\(--trust-pickle in the CLIs\)\.?"),
     ". The app never runs code from a weights file: if you trust the file, convert it on your "
     "own computer with `python -m zegformer.hub convert CKPT.pth OUT_DIR --trust-pickle` and "
     f"point `{WEIGHTS_ENV}` at the `model.safetensors` it writes."),
    (re.compile(r"pass it as the CLIP weights \(clip_weights= / --clip-weights / "
                r"ZEGFORMER_CLIP_WEIGHTS\)"),
     f"set it as `{CLIP_WEIGHTS_ENV}`, not `{WEIGHTS_ENV}`"),
    (re.compile(r" \(or --clip-weights\)"), ""),
    (re.compile(r"--opts MODEL\.WEIGHTS"), f"`{WEIGHTS_ENV}`"),
]


class SetupHelp(str):
    """The Markdown the page shows when no model could be loaded (a `str`), with `reason`: the
    loader's one line, said for the Space owner (plain text, for the API's error)."""

    reason: str

    def __new__(cls, markdown: str, reason: str) -> "SetupHelp":
        self = super().__new__(cls, markdown)
        self.reason = reason
        return self


def for_space_owner(message: str) -> str:
    """The loader's message with its library and CLI advice (weights=PATH, --opts,
    trust_pickle=True, --clip-weights) replaced by the Space variable to set."""
    for pattern, replacement in _FOR_SPACE_OWNER:
        message = pattern.sub(replacement, message)
    return message


def markdown_with_code(text: str) -> str:
    """Plain text shown in Markdown: `code spans` kept, everything else escaped as user text
    (a file path with _ or * is not emphasis, a web page's <title> is not a tag)."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an odd number of backticks: no code spans at all
        return markdown_text(text)
    return "".join(f"`{p}`" if i % 2 else markdown_text(p) for i, p in enumerate(parts))


def _now_set() -> str:
    """Markdown: the variables' current values (the token only as set / not set)."""
    parts = []
    for env in (WEIGHTS_ENV, CLIP_WEIGHTS_ENV, CONFIG_ENV):
        value = os.environ.get(env, "").strip()
        if value:
            shown = value if len(value) <= 120 else value[:117] + "..."
            parts.append(f"`{env}` = `{shown.replace('`', chr(39))}`")
        else:
            parts.append(f"`{env}` not set")
    parts.append(f"`{HF_TOKEN_ENV}` {'set' if os.environ.get(HF_TOKEN_ENV) else 'not set'}")
    return "; ".join(parts)


def setup_help(reason: str) -> SetupHelp:
    """Markdown telling the Space owner which variables to set, after the loader's own message
    (`reason`, one line, rewritten by `for_space_owner`)."""
    said = for_space_owner(reason)
    text = (
        "## No model is loaded\n\n"
        f"{markdown_with_code(said)}\n\n"
        "Segmenting is switched off until the Space has weights. **Space owner:** open the "
        "Space's **Settings**, section **Variables and secrets**, add these variables and "
        "restart the Space:\n\n"
        "| Variable | What it accepts |\n"
        "|---|---|\n"
        f"| `{WEIGHTS_ENV}` (required) | the ZegFormer checkpoint: `hf://owner/repo/model."
        "safetensors` (a file in a Hub model repository, downloaded once at start-up) or a path "
        "to a file in the Space, e.g. `weights/zegformer_R101_coco-stuff.pth`; `.safetensors` "
        "(read without pickle) or an official `.pth` |\n"
        f"| `{CLIP_WEIGHTS_ENV}` (optional) | CLIP ViT-B/16 weights, OpenAI's `ViT-B-16.pt` or "
        "a state dict in its layout, as `hf://owner/repo/file` or a path; when not set, "
        "OpenAI's weights are downloaded at start-up |\n"
        f"| `{CONFIG_ENV}` (optional) | the config the checkpoint was trained with: a name from "
        f"`configs/` or a YAML path; default `{DEFAULT_CONFIG}` |\n"
        f"| `{HF_TOKEN_ENV}` (a secret, optional) | a Hugging Face token, only for weights in a "
        "private repository |\n\n"
        f"**Now:** {_now_set()}.\n\n"
        f"To try the page without weights, set `{RANDOM_ENV}` to `1` (or run "
        "`python app.py --random-weights`): a tiny untrained model, whose output is "
        "meaningless."
    )
    return SetupHelp(text, said)


def no_model_error(model: str) -> str:
    """The one plain line an API caller gets when the app has no model."""
    reason = (getattr(model, "reason", None) or re.sub(r"[*#]", "", str(model))).strip()
    reason = reason.replace("`", "")  # plain text: no code spans
    return (f"No model is loaded: {reason} The Space owner sets {WEIGHTS_ENV} (and optionally "
            f"{CLIP_WEIGHTS_ENV}, {CONFIG_ENV}) in the Space's settings; the page lists what "
            "each accepts.")


def load_app_predictor(random_weights: bool | None = None) -> Any:
    """The predictor the app serves, built once at start-up, or a Markdown message saying why not.

    Reads $ZEGFORMER_CONFIG, $ZEGFORMER_WEIGHTS and $ZEGFORMER_CLIP_WEIGHTS (paths or hf://
    references, downloaded once here, never per request). `random_weights` (default:
    $ZEGFORMER_RANDOM_WEIGHTS=1) loads the tiny untrained model instead.

    Returns:
        a `zegformer.Predictor`, or a `SetupHelp` (Markdown str) when no model could be loaded.
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

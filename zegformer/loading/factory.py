"""load_predictor / load_random_predictor: config + weights -> ready Predictor."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

import torch

from .build import build_model
from .checkpoint import detect_format, load_checkpoint, read_state_dict
from .clip import TINY_CLIP, build_clip, get_tokenizer
from .config import DEFAULT_CONFIG, apply_opts, load_config, opt_value
from ..errors import ConfigError, WeightsError
from ..modeling.clip_adapter import ClipAdapter
from ..inference.predictor import Predictor
from .settings import settings_from_config
from ..data.vocabularies import class_list_for_official_path
from .weights import CLIP_WEIGHTS_ENV, WEIGHTS_ENV, resolve_weights

log = logging.getLogger(__name__)
TINY_CONFIG = "tiny"


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_predictor(config: str | os.PathLike = DEFAULT_CONFIG,
                   weights: str | os.PathLike | None = None, *,
                   clip_weights: str | os.PathLike | None = None,
                   device: str | torch.device | None = None, opts: Iterable[str] = (),
                   trust_pickle: bool = False, max_side: int = 2048) -> Predictor:
    """Build ZegFormer from an official config and load official weights.

    Args:
        config: config path or name (see `zegformer.list_configs()`).
        weights: checkpoint path or `hf://owner/repo/file`; falls back to `MODEL.WEIGHTS` from
            `opts`/the config when that names an existing file, then to $ZEGFORMER_WEIGHTS.
            An official per-pixel baseline checkpoint builds the baseline model instead.
        clip_weights: CLIP ViT-B/16 file (OpenAI layout) or hf:// reference; falls back to
            $ZEGFORMER_CLIP_WEIGHTS, then to open_clip's download of the OpenAI weights.
        device: "cpu", "cuda", ...; default CUDA when available.
        opts: detectron2-style KEY VALUE overrides.
        trust_pickle: allow checkpoints that need arbitrary unpickling (warns).
        max_side: larger images are downscaled to this long side before prediction.

    Raises:
        ConfigError, WeightsError with a message that says what to set.
    """
    opts = list(opts)
    cfg = load_config(config, opts)
    path = resolve_weights(weights, None) if weights else None
    if path is None and opt_value(opts, "MODEL.WEIGHTS") is not None:
        path = resolve_weights(str(cfg.MODEL.WEIGHTS), None)  # given in opts: must exist
    if path is None and cfg.MODEL.WEIGHTS and Path(str(cfg.MODEL.WEIGHTS)).is_file():
        path = Path(str(cfg.MODEL.WEIGHTS))
    if path is None:
        path = resolve_weights(None, WEIGHTS_ENV)
    if path is None:
        raise WeightsError(
            "no ZegFormer weights given: pass weights=PATH (CLI: --opts MODEL.WEIGHTS PATH), or set "
            f"{WEIGHTS_ENV} to a local .safetensors / .pth file or hf://owner/repo/file")
    state = read_state_dict(path, trust_pickle=trust_pickle)
    fmt = detect_format(state, str(path))
    if fmt in ("d2_backbone", "backbone_only"):
        raise WeightsError(f"{path} holds only an ImageNet backbone, not a trained ZegFormer; "
                           "use an official ZegFormer checkpoint")
    if fmt == "per_pixel_baseline":
        apply_opts(cfg, ["MODEL.META_ARCHITECTURE", "SemanticSegmentorGzero",
                         "MODEL.SEM_SEG_HEAD.NAME", "ZeroshotPerPixelBaselineHead"])
    s = settings_from_config(cfg)
    model = build_model(s)
    load_checkpoint(model, state)
    clip, clip_id = load_clip(s.clip_name, clip_weights)
    seen = frozenset(class_list_for_official_path(s.train_class_json))
    return Predictor(model, clip, get_tokenizer(s.clip_name), s, seen_classes=seen,
                     device=device or default_device(), description=f"{s.name} ({Path(path).name})",
                     clip_id=clip_id, max_side=max_side)


def load_clip(clip_name: str, clip_weights: str | os.PathLike | None = None) -> tuple[ClipAdapter, str]:
    """CLIP for a config's CLIP_PRETRAINED name: (adapter, id for text caches).

    The tiny test CLIP is built from seed 0 (the same towers every time); ViT-B/16 loads
    `clip_weights`, else $ZEGFORMER_CLIP_WEIGHTS, else open_clip's OpenAI download.
    """
    clip_path = resolve_weights(clip_weights, CLIP_WEIGHTS_ENV)
    clip = ClipAdapter(build_clip(clip_name, clip_path))
    return clip, f"{clip_name}:{clip_path or 'openai'}"


def load_random_predictor(config: str | os.PathLike = TINY_CONFIG, *,
                          device: str | torch.device | None = None, seed: int = 0,
                          opts: Iterable[str] = ()) -> Predictor:
    """A predictor with randomly initialised weights: for tests and smoke runs, never for results.

    With the default "tiny" config the model is small (ResNet-18 at width 16, a 2-layer CLIP) and
    runs in well under a second per image on a CPU. Results carry `untrained=True`.
    """
    cfg = load_config(config, opts)
    s = settings_from_config(cfg)
    torch.manual_seed(seed)
    model = build_model(s)
    clip = ClipAdapter(build_clip(s.clip_name, seed=seed) if s.clip_name == TINY_CLIP
                       else _random_clip(s.clip_name, seed))
    if clip.embed_dim != s.embed_dim:
        raise ConfigError(f"CLIP {s.clip_name} has a {clip.embed_dim}-d joint space but the config "
                          f"says CLIP_EMBED_DIM {s.embed_dim}")
    seen = frozenset(class_list_for_official_path(s.train_class_json))
    return Predictor(model, clip, get_tokenizer(s.clip_name), s, seen_classes=seen,
                     device=device or default_device(), untrained=True,
                     description=f"{s.name}, seed {seed}", clip_id=f"random:{seed}")


def _random_clip(name: str, seed: int) -> torch.nn.Module:
    import open_clip

    from .clip import _quiet_root_logger, open_clip_arch

    torch.manual_seed(seed)
    with _quiet_root_logger():
        model = open_clip.create_model(open_clip_arch(name), pretrained=None)
    return model.eval().requires_grad_(False)

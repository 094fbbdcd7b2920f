"""convert: an official checkpoint -> model.safetensors + configs/ + README.md in a folder.

The weights keep their official (detectron2) key names and values bit for bit; what is not a
model weight is dropped (`DROPPED_KEY_PREFIXES`: the training-only `criterion.empty_weight`, a
CLIP copy if present, normalisation constants the config already holds). Before anything is
written the weights are loaded strictly into the model the config builds, so a checkpoint that
does not fit the config is refused.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError, WeightsError

WEIGHTS_FILE = "model.safetensors"
CONFIG_DIR = "configs"
REPO_PLACEHOLDER = "OWNER/REPO"  # replaced by `push` with the repository it uploads to
_BASE_LINE = re.compile(r"^_BASE_:\s*[\"']?([^\"'#\s]+)[\"']?[^\n]*$", re.MULTILINE)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def config_chain(config: str | os.PathLike) -> list[Path]:
    """The config file and its _BASE_ files, the config first."""
    from ..loading.config import resolve_config_path

    chain = [resolve_config_path(config)]
    while True:
        m = _BASE_LINE.search(chain[-1].read_text(encoding="utf-8"))
        if m is None:
            return chain
        base = chain[-1].parent / m.group(1)
        if not base.is_file() or base in chain or len(chain) > 10:
            raise ConfigError(f"{chain[-1]}: _BASE_ file {m.group(1)!r} not found (or a cycle)")
        chain.append(base)


def copy_config_chain(config: str | os.PathLike, out_dir: Path) -> Path:
    """Copy the config and its _BASE_ files into out_dir (one folder: each _BASE_ line is
    rewritten to the base's file name). Returns the copied config's path."""
    chain = config_chain(config)
    names = [p.name for p in chain]
    if len(set(names)) != len(names):
        raise ConfigError(f"{chain[0]}: two files of its _BASE_ chain share a name: {names}")
    out_dir.mkdir(parents=True, exist_ok=True)
    for path, base in zip(chain, chain[1:] + [None]):
        text = path.read_text(encoding="utf-8")
        if base is not None:
            text = _BASE_LINE.sub(f"_BASE_: {base.name}", text, count=1)
        (out_dir / path.name).write_text(text, encoding="utf-8")
    return out_dir / chain[0].name


def _model_for(config: str | os.PathLike, fmt: str):
    """The model `config` builds (the per-pixel baseline when the checkpoint is one), and its
    settings: what load_predictor would build for this checkpoint."""
    from ..loading.build import build_model
    from ..loading.config import apply_opts, load_config
    from ..loading.settings import settings_from_config

    cfg = load_config(config)
    if fmt == "per_pixel_baseline":
        apply_opts(cfg, ["MODEL.META_ARCHITECTURE", "SemanticSegmentorGzero",
                         "MODEL.SEM_SEG_HEAD.NAME", "ZeroshotPerPixelBaselineHead"])
    settings = settings_from_config(cfg)
    return build_model(settings), settings


def convert_checkpoint(checkpoint: str | os.PathLike, out_dir: str | os.PathLike,
                       config: str | os.PathLike, *, repo_id: str | None = None,
                       license: str = "other", source: str = "", trust_pickle: bool = False,
                       overwrite: bool = False) -> dict[str, Any]:
    """Write `out_dir`/model.safetensors, `out_dir`/configs/ and `out_dir`/README.md.

    Args:
        checkpoint: an official ZegFormer or per-pixel baseline checkpoint (.pth, .pkl or
            .safetensors); `{"model": state_dict}` containers are unwrapped.
        out_dir: the folder to write (the future repository's content).
        config: the config the checkpoint belongs to (name or path); checked by a strict load.
        repo_id: the repository named in the card (default: a placeholder `push` fills in).
        license: the card's licence id ("other" = the original weights' own terms).
        source: where the original weights come from (named in the card).
        trust_pickle: see `zegformer.read_state_dict`.
        overwrite: replace existing files in `out_dir`.

    Returns:
        A summary: paths written, tensor and value counts, dropped keys, sha256 of both files.
    """
    import torch
    from safetensors.torch import load_file, save_file

    from ..loading.checkpoint import (DROPPED_KEY_PREFIXES, detect_format, load_checkpoint,
                                      read_state_dict)
    from .card import model_card

    src, out = Path(checkpoint), Path(out_dir)
    weights_path = out / WEIGHTS_FILE
    if weights_path.exists() and not overwrite:
        raise WeightsError(f"{weights_path} exists; pass --force (overwrite=True) to replace it")
    state = read_state_dict(src, trust_pickle=trust_pickle)
    fmt = detect_format(state, str(src))
    if fmt not in ("zegformer", "per_pixel_baseline"):
        raise WeightsError(f"{src} is a {fmt} state dict, not a trained ZegFormer or per-pixel "
                           "baseline checkpoint")
    dropped = sorted(k for k in state if any(k.startswith(p) for p in DROPPED_KEY_PREFIXES))
    weights = {k: v for k, v in state.items() if k not in set(dropped)}
    model, settings = _model_for(config, fmt)
    try:
        load_checkpoint(model, weights)
    except WeightsError as e:
        raise WeightsError(f"{src} does not fit --config-file {config}: {e}") from None
    del model
    # safetensors stores each tensor on its own: contiguous, no shared memory.
    tensors = {k: v.detach().contiguous().clone() for k, v in weights.items()}
    out.mkdir(parents=True, exist_ok=True)
    source_sha = sha256_file(src)
    metadata = {"format": "pt", "zegformer_format": fmt, "config": settings.name,
                "source_file": src.name, "source_sha256": source_sha}
    tmp = weights_path.with_name(f".{WEIGHTS_FILE}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    back = load_file(str(tmp))
    if set(back) != set(tensors) or not all(
            back[k].dtype == v.dtype and torch.equal(back[k], v) for k, v in tensors.items()):
        tmp.unlink()
        raise WeightsError(f"{tmp}: the written weights differ from {src} (disk full?)")
    os.replace(tmp, weights_path)
    config_path = copy_config_chain(config, out / CONFIG_DIR)
    from ..loading.config import CONFIG_DIR as SHIPPED, resolve_config_path

    shipped = resolve_config_path(config).resolve().is_relative_to(Path(SHIPPED).resolve())
    info: dict[str, Any] = {
        "weights": str(weights_path), "config": str(config_path), "format": fmt,
        "n_tensors": len(tensors), "n_parameters": int(sum(v.numel() for v in tensors.values())),
        "dropped": dropped, "source_file": src.name, "source_sha256": source_sha,
        "weights_sha256": sha256_file(weights_path), "settings": settings,
        "config_name": config_path.stem, "config_in_repo": f"{CONFIG_DIR}/{config_path.name}",
        "config_shipped": shipped,
    }
    card = out / "README.md"
    card.write_text(model_card(info, repo_id=repo_id or REPO_PLACEHOLDER, license=license,
                               source=source), encoding="utf-8")
    info["card"] = str(card)
    return info

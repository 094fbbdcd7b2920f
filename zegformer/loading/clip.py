"""Build the CLIP model (open_clip) from a local file, the Hub, or at random (tiny, for tests)."""
from __future__ import annotations

import io
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import WeightsError
from .checkpoint import is_safetensors_file, load_state_dict_strict, read_state_dict, unwrap_state_dict

TINY_CLIP = "tiny"
_TINY_ARCH = "zegformer-tiny-clip"
_CONFIG_DIR = Path(__file__).resolve().parent / "clip_configs"


def _open_clip():
    try:
        import open_clip
    except ImportError:  # pragma: no cover - open_clip_torch is in requirements.txt
        raise WeightsError("open_clip is required: pip install open_clip_torch") from None
    return open_clip


@contextmanager
def _quiet_root_logger():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def open_clip_arch(name: str) -> str:
    """open_clip's architecture name for an official CLIP name ("ViT-B/16" -> "ViT-B-16")."""
    return name.replace("/", "-")


def get_tokenizer(name: str) -> Callable[[list[str]], torch.Tensor]:
    """CLIP's BPE tokenizer (ships with open_clip; works offline): list[str] -> N x 77 int64."""
    return _open_clip().get_tokenizer("ViT-B-16")


def build_clip(name: str, weights: str | os.PathLike | None = None, *, seed: int = 0) -> nn.Module:
    """Build an fp32 open_clip CLIP model in eval mode.

    Args:
        name: the official name ("ViT-B/16") or "tiny" (random, for tests).
        weights: a local file: an OpenAI-layout state dict (with or without `input_resolution`,
            `context_length`, `vocab_size`), an OpenAI TorchScript archive, or an open_clip state
            dict. When None, the OpenAI weights are fetched through open_clip (Hub; fails offline).
        seed: random seed for the tiny model.
    """
    oc = _open_clip()
    if name == TINY_CLIP:
        oc.add_model_config(_CONFIG_DIR)
        torch.manual_seed(seed)
        with _quiet_root_logger():  # open_clip logs "No pretrained weights loaded" at WARNING
            model = oc.create_model(_TINY_ARCH, pretrained=None)
        if weights:
            _load_open_clip_state(model, Path(weights))
        return model.eval().requires_grad_(False)
    arch = open_clip_arch(name)
    if weights is None:
        try:
            model = oc.create_model(arch, pretrained="openai")
        except Exception as e:
            raise WeightsError(
                f"CLIP {name} OpenAI weights could not be fetched ({type(e).__name__}); download "
                "them once and set ZEGFORMER_CLIP_WEIGHTS (or --clip-weights) to the file") from None
        return model.float().eval().requires_grad_(False)
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(f"CLIP weights file not found: {path}")
    if is_safetensors_file(path):  # e.g. open_clip's own open_clip_model.safetensors
        sd = read_state_dict(path)
    else:
        try:
            sd = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
        except Exception:
            sd = None  # OpenAI's own .pt files are TorchScript archives
    if sd is None:
        try:
            model = oc.load_openai_model(str(path), precision="fp32", device="cpu")
        except Exception as e:
            raise WeightsError(f"{path}: not a CLIP state dict or TorchScript archive ({e})") from None
        return model.eval().requires_grad_(False)
    sd = unwrap_state_dict(sd, str(path))
    if "visual.proj" in sd and "visual.transformer.resblocks.0.attn.in_proj_weight" in sd:
        from open_clip.model import build_model_from_openai_state_dict

        try:
            model = build_model_from_openai_state_dict(dict(sd), cast_dtype=None)
        except Exception as e:
            raise WeightsError(f"{path}: not a usable OpenAI-layout CLIP state dict ({e})") from None
        return model.float().eval().requires_grad_(False)
    model = oc.create_model(arch, pretrained=None)
    _load_open_clip_state(model, path, sd)
    return model.float().eval().requires_grad_(False)


def _load_open_clip_state(model: nn.Module, path: Path, sd: dict | None = None) -> None:
    sd = sd if sd is not None else read_state_dict(path)
    sd = {k: v for k, v in sd.items() if k not in ("input_resolution", "context_length", "vocab_size")}
    load_state_dict_strict(model, sd, str(path))

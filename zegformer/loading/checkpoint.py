"""Read official checkpoints and load them strictly into our modules.

Formats recognised by sentinel keys (`detect_format`):
- "zegformer": an official ZegFormer `.pth` (`{"model": state_dict}` in detectron2 naming);
- "per_pixel_baseline": the official per-pixel baseline head on the same backbone;
- "d2_backbone": a detectron2 ImageNet backbone (`R-50.pkl` / `R-101.pkl`, keys `stem.*`, `res2.*`);
- "torchvision_resnet": a torchvision ImageNet ResNet (`resnet101-63fe2227.pth`, keys `layer1.*`),
  renamed to the detectron2 scheme by `remap_torchvision_resnet`;
- "clip": a CLIP state dict in OpenAI layout.

Our attribute names equal the official keys, so the remapping is the identity plus named special
cases (training-only keys dropped, backbone prefix added). Loading is strict: any missing,
unexpected or mis-shaped key raises `WeightsError` naming it.

Safety: `.pth`/`.pt` files are read with `torch.load(weights_only=True)`; detectron2 `.pkl` files
with an unpickler that only accepts numpy arrays. Anything else needs `trust_pickle=True`, which
runs arbitrary code from the file and warns.
"""
from __future__ import annotations

import io
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from ..errors import WeightsError

# Keys in official checkpoints that are not model weights, each with the reason it is dropped.
DROPPED_KEY_PREFIXES = {
    "criterion.": "loss constant used only in training (criterion.empty_weight)",
    "sem_seg_head.predictor.clip_model.": "CLIP copy; CLIP weights load separately",
    "pixel_mean": "normalisation constant (non-persistent in the official model)",
    "pixel_std": "normalisation constant",
    "clip_pixel_mean": "normalisation constant",
    "clip_pixel_std": "normalisation constant",
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, numbers, strings and numpy arrays; refuses every other global."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights file")


def read_state_dict(path: str | os.PathLike, *, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a weights file into a flat {name: tensor} dict (containers unwrapped, prefixes stripped).

    Args:
        path: `.pth`/`.pt` (torch) or `.pkl` (detectron2) file.
        trust_pickle: allow arbitrary pickled objects (runs code from the file; warns).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    data = path.read_bytes()
    obj: Any
    if path.suffix == ".pkl":
        try:
            obj = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
        except pickle.UnpicklingError as e:
            if not trust_pickle:
                raise WeightsError(f"{path}: {e}. If you trust this file, pass trust_pickle=True "
                                   "(--trust-pickle)") from None
            warnings.warn(f"unpickling {path} with arbitrary code execution allowed", stacklevel=2)
            obj = pickle.loads(data, encoding="latin1")  # noqa: S301 - explicitly trusted
    else:
        try:
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises UnpicklingError or RuntimeError here
            if not trust_pickle:
                raise WeightsError(
                    f"{path}: cannot be read safely ({str(e).splitlines()[0]}). If you trust this "
                    "file, pass trust_pickle=True (--trust-pickle)") from None
            warnings.warn(f"loading {path} with arbitrary code execution allowed", stacklevel=2)
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)  # noqa: S614
    return unwrap_state_dict(obj, str(path))


def unwrap_state_dict(obj: Any, where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Take the weights out of `{"model": ...}` / `{"state_dict": ...}` and strip `module.` /
    `_orig_mod.` prefixes; numpy arrays become tensors."""
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{where}: expected a state dict, found {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if not isinstance(k, str):
            continue
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        if isinstance(v, np.ndarray):
            v = torch.from_numpy(np.ascontiguousarray(v))
        if isinstance(v, torch.Tensor):
            out[k] = v
    if not out:
        raise WeightsError(f"{where}: holds no tensors")
    return out


def detect_format(sd: Mapping[str, torch.Tensor]) -> str:
    """Name of the checkpoint format (see module docstring), by sentinel keys."""
    if any(k.startswith("sem_seg_head.predictor.") for k in sd):
        return "zegformer"
    if "sem_seg_head.projection_layer.weight" in sd:
        return "per_pixel_baseline"
    if "stem.conv1.weight" in sd or "res2.0.conv1.weight" in sd:
        return "d2_backbone"
    if "layer1.0.conv1.weight" in sd and "conv1.weight" in sd:
        return "torchvision_resnet"
    if "visual.conv1.weight" in sd or "token_embedding.weight" in sd:
        return "clip"
    if "backbone.stem.conv1.weight" in sd:
        return "backbone_only"
    raise WeightsError("unrecognised checkpoint: it has none of the keys of a ZegFormer, per-pixel "
                       "baseline, detectron2 backbone or CLIP state dict")


def remap_official(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official ZegFormer / baseline keys -> ours: identity, minus `DROPPED_KEY_PREFIXES`."""
    return {k: v for k, v in sd.items() if not any(k.startswith(p) for p in DROPPED_KEY_PREFIXES)}


def remap_d2_backbone(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """detectron2 ImageNet backbone keys (`res2.0.conv1.weight`) -> ours (`backbone.` prefix);
    the ImageNet classifier (`fc.*`) is dropped."""
    return {f"backbone.{k}": v for k, v in sd.items() if not k.startswith("fc.")}


_TV_NORM = re.compile(r"^(layer\d+\.\d+\.)bn(\d)\.(.+)$")
_TV_SHORTCUT = re.compile(r"^(layer\d+\.\d+\.)downsample\.([01])\.(.+)$")


def remap_torchvision_resnet(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision ResNet keys -> detectron2 backbone keys (what `remap_d2_backbone` takes).

    conv1 / bn1 -> stem.conv1 / stem.conv1.norm; layerN.B.convK / bnK -> res(N+1).B.convK /
    convK.norm; layerN.B.downsample.0 / .1 -> res(N+1).B.shortcut / shortcut.norm. The ImageNet
    classifier (`fc.*`) and BatchNorm's `num_batches_tracked` counters are dropped.
    """
    out = {}
    for key, value in sd.items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue
        if key == "conv1.weight":
            new = "stem.conv1.weight"
        elif key.startswith("bn1."):
            new = "stem.conv1.norm." + key[len("bn1."):]
        elif m := _TV_NORM.match(key):
            new = f"{m.group(1)}conv{m.group(2)}.norm.{m.group(3)}"
        elif m := _TV_SHORTCUT.match(key):
            new = m.group(1) + ("shortcut." if m.group(2) == "0" else "shortcut.norm.") + m.group(3)
        else:
            new = key
        if new.startswith("layer"):
            stage, rest = new.split(".", 1)
            new = f"res{int(stage[len('layer'):]) + 1}.{rest}"
        out[new] = value
    return out


def _describe(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_state_dict_strict(module: nn.Module, sd: Mapping[str, torch.Tensor], where: str) -> None:
    """Copy `sd` into `module`; raise WeightsError listing missing, unexpected, mis-shaped keys."""
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = sorted(f"{k} (file {tuple(sd[k].shape)}, model {tuple(own[k].shape)})"
                    for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    problems = []
    if missing:
        problems.append(f"missing keys: {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_describe(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches: {_describe(shapes)}")
    if problems:
        raise WeightsError(f"{where} does not match the model: " + "; ".join(problems))
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=True)


def load_checkpoint(model: nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor], *,
                    trust_pickle: bool = False) -> str:
    """Load official weights into a model built by `build_model`, strictly.

    Args:
        model: `ZegFormer` or `PerPixelBaseline`.
        source: a weights file or an already-read state dict. An ImageNet backbone (detectron2
            `R-101.pkl` or torchvision `resnet101-*.pth`) loads into `model.backbone` only (the
            rest stays as built; the format returned is then "d2_backbone").
        trust_pickle: see `read_state_dict`.

    Returns:
        The detected format name.
    """
    where = str(source) if isinstance(source, (str, os.PathLike)) else "state dict"
    sd = read_state_dict(source, trust_pickle=trust_pickle) \
        if isinstance(source, (str, os.PathLike)) else unwrap_state_dict(source, where)
    fmt = detect_format(sd)
    kind = getattr(model, "kind", "")
    if fmt == "torchvision_resnet":
        sd, fmt = remap_torchvision_resnet(sd), "d2_backbone"
    if fmt in ("d2_backbone", "backbone_only"):
        sd = remap_d2_backbone(sd) if fmt == "d2_backbone" else dict(sd)
        sub = {k[len("backbone."):]: v for k, v in sd.items()}
        load_state_dict_strict(model.get_submodule("backbone"), sub, where)
        return fmt
    if fmt == "clip":
        raise WeightsError(f"{where} is a CLIP state dict: pass it as the CLIP weights "
                           "(clip_weights= / --clip-weights / ZEGFORMER_CLIP_WEIGHTS)")
    if fmt != kind:
        raise WeightsError(f"{where} is a {fmt} checkpoint but the model is {kind}")
    load_state_dict_strict(model, remap_official(sd), where)
    return fmt

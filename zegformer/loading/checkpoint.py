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

Safety: `.safetensors` files hold only tensors and are read without pickle; `.pth`/`.pt` files
are read with `torch.load(weights_only=True)`; detectron2 `.pkl` files with an unpickler that only
accepts numpy arrays. Anything else needs `trust_pickle=True`, which runs arbitrary code from the
file and warns. Files that are no checkpoint at all (empty, a web page, a Git LFS pointer, random
bytes, cut short) are told apart by their bytes and named as such.
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


ZIP_MAGIC = b"PK\x03\x04"  # torch.save since PyTorch 1.6 writes a zip archive
_ZIP_END = b"PK\x05\x06"  # end-of-central-directory record, within the last 64 KiB + 22 bytes


def sniff_weights_file(data: bytes) -> str:
    """What a weights file's bytes look like, from its first bytes alone.

    Returns one of "empty", "zip" (torch.save), "pickle" (legacy torch.save, detectron2 .pkl),
    "safetensors", "html" (a web page saved instead of the file), "git-lfs-pointer" (a Git LFS
    pointer instead of the file) or "unknown".
    """
    if not data:
        return "empty"
    if data.startswith(ZIP_MAGIC):
        return "zip"
    if len(data) > 1 and data[0] == 0x80 and 2 <= data[1] <= 5:
        return "pickle"  # PROTO opcode, protocols 2-5
    if len(data) >= 9 and data[8:9] == b"{" and int.from_bytes(data[:8], "little") < 100_000_000:
        return "safetensors"  # 8-byte little-endian header length, then the JSON header
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        return "html"
    if data.startswith(b"version https://git-lfs"):
        return "git-lfs-pointer"
    if data[:1] in (b"(", b"}", b"]"):  # protocol-0/1 pickles (old detectron2 files)
        return "pickle"
    return "unknown"


def is_safetensors_file(path: str | os.PathLike) -> bool:
    """True for a `.safetensors` name, or a file whose bytes look like one."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as f:
        return sniff_weights_file(f.read(16)) == "safetensors"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _refused_global(e: BaseException) -> str | None:
    """The Python object torch's weights-only unpickler refused, if that was the failure."""
    m = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(e))
    return m.group(1) if m else None


def _not_weights(path: Path, data: bytes, kind: str) -> WeightsError | None:
    """The error for files that are no checkpoint at all (empty, a web page, an LFS pointer)."""
    if kind == "empty":
        return WeightsError(f"{path} is empty (0 bytes): the download or copy did not finish; "
                            "get the file again")
    if kind == "html":
        return WeightsError(f"{path} is a web page ({len(data)} bytes), not a checkpoint: the "
                            "download link returned HTML (a sign-in or confirmation page?); "
                            "download the file itself")
    if kind == "git-lfs-pointer":
        return WeightsError(f"{path} is a Git LFS pointer ({len(data)} bytes), not the weights: "
                            "run `git lfs pull`, or download the file itself")
    return None


def _read_safetensors(path: Path, data: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load as load_safetensors

    try:
        return load_safetensors(data)
    except Exception as e:  # SafetensorError: bad header, truncated data
        cut = ""
        if sniff_weights_file(data) == "safetensors":
            need = 8 + int.from_bytes(data[:8], "little")
            cut = f"; it may be cut short ({len(data)} bytes, header alone {need})" \
                if len(data) < need else ""
        raise WeightsError(f"{path} is not a readable safetensors file ({_first_line(e)}{cut}); "
                           "download or convert it again") from None


def _read_pkl(path: Path, data: bytes, trust_pickle: bool) -> Any:
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as e:
        if "truncated" in str(e):
            raise WeightsError(f"{path} is a detectron2 .pkl checkpoint that is cut short or "
                               f"damaged ({len(data)} bytes: {_first_line(e)}); download it "
                               "again") from None
        if not str(e).startswith("refusing to load"):
            raise WeightsError(f"{path} is not a detectron2 .pkl checkpoint: it cannot be read "
                               f"as a pickle ({_first_line(e)})") from None
        if not trust_pickle:
            raise WeightsError(f"{path}: {e}. If you trust this file, load it with "
                               "trust_pickle=True (--trust-pickle in the CLIs)") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise WeightsError(f"{path} is not a readable detectron2 .pkl checkpoint ({len(data)} "
                           f"bytes; cut short or damaged: {_first_line(e)})") from None
    warnings.warn(f"unpickling {path} with arbitrary code execution allowed", stacklevel=3)
    return pickle.loads(data, encoding="latin1")  # noqa: S301 - explicitly trusted


def _read_torch(path: Path, data: bytes, kind: str, trust_pickle: bool) -> Any:
    if kind not in ("zip", "pickle"):
        raise WeightsError(
            f"{path} is not a PyTorch checkpoint: its bytes are neither a zip archive written by "
            f"torch.save nor a pickle (it starts with {data[:8].hex(' ')}); it cannot be read")
    if kind == "zip" and data.rfind(_ZIP_END, max(0, len(data) - 65_557)) < 0:
        raise WeightsError(f"{path} is a PyTorch checkpoint that is cut short: the end of the zip "
                           f"archive is missing ({len(data)} bytes); download it again")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, ...
        refused = _refused_global(e)
        if refused is None:
            short = "cut short or damaged" if kind == "pickle" else "damaged"
            raise WeightsError(f"{path} is a PyTorch checkpoint that cannot be read ({short}: "
                               f"{_first_line(e)}); download it again") from None
        if not trust_pickle:
            raise WeightsError(
                f"{path} holds Python objects besides tensors ({refused}), which only load by "
                "running code from the file. If you trust it, load it with trust_pickle=True "
                "(--trust-pickle in the CLIs)") from None
    warnings.warn(f"loading {path} with arbitrary code execution allowed", stacklevel=3)
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)  # noqa: S614


def read_state_dict(path: str | os.PathLike, *, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a weights file into a flat {name: tensor} dict (containers unwrapped, prefixes stripped).

    Args:
        path: `.safetensors`, `.pth`/`.pt` (torch) or `.pkl` (detectron2) file. What the bytes
            are decides how they are read (a safetensors file named `.pth` still loads); a file
            that is no checkpoint (empty, a web page, a Git LFS pointer, random bytes, cut short)
            gets a message that says so.
        trust_pickle: allow arbitrary pickled objects (runs code from the file; warns).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    data = path.read_bytes()
    kind = sniff_weights_file(data)
    problem = _not_weights(path, data, kind)
    if problem is not None:
        raise problem
    obj: Any
    if kind == "safetensors" or path.suffix == ".safetensors":
        obj = _read_safetensors(path, data)
    elif path.suffix == ".pkl":
        obj = _read_pkl(path, data, trust_pickle)
    else:
        obj = _read_torch(path, data, kind, trust_pickle)
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


def detect_format(sd: Mapping[str, torch.Tensor], where: str = "checkpoint") -> str:
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
    keys = sorted(sd)
    raise WeightsError(f"{where} is not a ZegFormer checkpoint: it has none of the keys of a "
                       "ZegFormer, per-pixel baseline, detectron2 backbone or CLIP state dict "
                       f"(its {len(keys)} keys include {_describe(keys, 4)})")


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
        hint = ""
        if shapes or (missing and unexpected):
            hint = (" (weights for another config? The config sets the backbone depth, number "
                    "of queries and widths)")
        raise WeightsError(f"{where} does not match the model: " + "; ".join(problems) + hint)
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
    fmt = detect_format(sd, where)
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

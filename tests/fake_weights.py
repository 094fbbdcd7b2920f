"""Deterministic fake official weights made from the official key lists in tests/data/keys.

The rule is the one the shared reference uses for its golden outputs (so our model can be checked
against them): seed = crc32(salt + key); running_mean 0, running_var 1; embedding tables z;
tensors with >= 2 dims z / sqrt(fan_in); 1-D "*weight" 1 + 0.1 z; other 1-D 0.02 z; ZegFormer
logit_scale = log(1 / 0.01); criterion.empty_weight = ones with the last 0.1; CLIP logit_scale =
log(100); CLIP floats rounded to fp16; CLIP integer entries as OpenAI files hold them.
"""
from __future__ import annotations

import math
import zlib
from pathlib import Path

import torch

KEYS_DIR = Path(__file__).parent / "data" / "keys"
CLIP_KEYS = KEYS_DIR / "clip_vit_b16_openai_layout.txt"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64}
_CLIP_INTS = {"input_resolution": 224, "context_length": 77, "vocab_size": 49408}


def read_key_list(path: str | Path) -> list[tuple[str, list[int], str, str]]:
    """Rows (key, shape, dtype, where) of an official key list; where is "ckpt", "clip" or ""."""
    rows = []
    for line in Path(path).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        shape = [int(v) for v in cols[1].strip("[]").split(",") if v.strip()]
        rows.append((cols[0], shape, cols[2], cols[4] if len(cols) > 4 else ""))
    return rows


def rule_value(key: str, shape: list[int], salt: str, clip: bool) -> torch.Tensor:
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "logit_scale":
        value = math.log(100.0) if clip else float(torch.tensor(1 / 0.01).log())
        return torch.full(shape, value)
    if key.endswith("criterion.empty_weight"):
        t = torch.ones(shape)
        t[-1] = 0.1
        return t
    if leaf == "running_mean":
        return torch.zeros(shape)
    if leaf == "running_var":
        return torch.ones(shape)
    gen = torch.Generator().manual_seed(zlib.crc32((salt + key).encode("utf-8")))
    z = torch.randn(tuple(shape), generator=gen, dtype=torch.float32)
    if key.endswith("_embed.weight") or key.endswith("_embedding.weight"):
        return z
    if len(shape) >= 2:
        return z / math.sqrt(math.prod(shape) // shape[0])
    if leaf.endswith("weight"):
        return 1.0 + 0.1 * z
    return 0.02 * z


def zegformer_state_dict(keys_file: str | Path, salt: str = "") -> dict[str, torch.Tensor]:
    """The checkpoint's state dict (keys marked `ckpt`), as the official `.pth` holds it."""
    return {key: rule_value(key, shape, salt, False).to(_DTYPES.get(dtype, torch.float32))
            for key, shape, dtype, where in read_key_list(keys_file) if where != "clip"}


def clip_state_dict(salt: str = "", keys_file: str | Path = CLIP_KEYS) -> dict[str, torch.Tensor]:
    """An OpenAI-layout CLIP ViT-B/16 state dict (fp16 floats, integer metadata entries)."""
    sd = {}
    for key, shape, _dtype, _ in read_key_list(keys_file):
        if key in _CLIP_INTS:
            sd[key] = torch.tensor(_CLIP_INTS[key])
        else:
            sd[key] = rule_value(key, shape, salt, True).half()
    return sd


def save_zegformer_checkpoint(keys_file: str | Path, out: str | Path, salt: str = "") -> Path:
    torch.save({"model": zegformer_state_dict(keys_file, salt)}, out)
    return Path(out)


def save_clip_file(out: str | Path, salt: str = "") -> Path:
    torch.save(clip_state_dict(salt), out)
    return Path(out)

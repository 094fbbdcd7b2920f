"""Official ZegFormer weights as a Hugging Face model repository.

    python -m zegformer.hub convert CKPT.pth OUT_DIR [--config-file NAME_OR_PATH]
    python -m zegformer.hub push OUT_DIR owner/repo

`convert` writes OUT_DIR/model.safetensors (the checkpoint's model weights under their official
key names, bit for bit; training-only keys dropped), OUT_DIR/configs/ (the YAML config and its
_BASE_ files) and OUT_DIR/README.md (a model card). `push` creates the repository and uploads the
folder with huggingface_hub. Then `load_predictor(config, "hf://owner/repo/model.safetensors")`,
the app (ZEGFORMER_WEIGHTS) and the CLIs (--opts MODEL.WEIGHTS) load it without pickle.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"WEIGHTS_FILE": "convert", "convert_checkpoint": "convert", "push_folder": "push"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:  # lazy: `python -m zegformer.hub --help` imports no torch
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'zegformer.hub' has no attribute {name!r}")

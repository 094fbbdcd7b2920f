"""Training ZegFormer with the official recipe (`python -m zegformer.train`).

    >>> from zegformer.training import SetCriterion, training_outputs
    >>> losses = SetCriterion(num_classes=156)(training_outputs(model, images, text), targets)

Names are imported on first use, so `python -m zegformer.train --help` does not import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"SetCriterion": "criterion", "prepare_for_training": "forward",
            "training_outputs": "forward", "HungarianMatcher": "matcher"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'zegformer.training' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""Training ZegFormer with the official recipe (`python -m zegformer.train`).

    >>> from zegformer.training import SetCriterion, training_outputs
    >>> losses = SetCriterion(num_classes=156)(training_outputs(model, images, text), targets)

Names are imported on first use, so `python -m zegformer.train --help` does not import torch.
"""
from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {"SetCriterion": "criterion", "prepare_for_training": "forward",
            "training_outputs": "forward", "HungarianMatcher": "matcher"}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

"""Training ZegFormer with the official recipe (`python -m zegformer.train`).

    >>> from zegformer.training import SetCriterion, training_outputs
    >>> losses = SetCriterion(num_classes=156)(training_outputs(model, images, text), targets)
"""
from .criterion import SetCriterion
from .forward import prepare_for_training, training_outputs
from .matcher import HungarianMatcher

__all__ = ["HungarianMatcher", "SetCriterion", "prepare_for_training", "training_outputs"]

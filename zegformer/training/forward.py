"""The training forward: the model's one forward with deep supervision, in the official layout."""
from __future__ import annotations

import torch
from torch import nn

FROZEN_PARAMETERS = ("logit_scale",)  # fixed temperature (requires_grad False in the official code)


def training_outputs(model: nn.Module, images: torch.Tensor,
                     text_embeddings: torch.Tensor) -> dict:
    """What the official model's `forward` feeds its criterion in training mode.

    Args:
        model: a `ZegFormer` (its train/eval mode decides dropout; deep supervision is on).
        images: B x 3 x H x W normalised, padded batch (H, W multiples of 32).
        text_embeddings: K x D L2-normalised embeddings of the training classes.

    Returns:
        {"pred_logits": B x Q x (K + 1), "pred_masks": B x Q x H/4 x W/4,
         "aux_outputs": [{"pred_logits", "pred_masks"}, ...]} (one per earlier decoder layer).
    """
    return model(images, text_embeddings, aux_outputs=True).as_dict()


def prepare_for_training(model: nn.Module) -> nn.Module:
    """Switch a built model to training: train mode (dropout on; FrozenBN stays frozen: it has
    buffers only) and gradients for every parameter except the fixed logit scales."""
    model.train()
    for name, p in model.named_parameters():
        p.requires_grad_(name.rsplit(".", 1)[-1] not in FROZEN_PARAMETERS)
    return model

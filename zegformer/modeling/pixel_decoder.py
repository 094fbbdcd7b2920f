"""MaskFormer's FPN-like pixel decoder (`BasePixelDecoder`) with GroupNorm.

Layer names follow the checkpoint: `adapter_i` (1x1 lateral conv + GN) and `layer_i`
(3x3 conv + GN + ReLU) for input i = 1..4 (res2..res5; res5 has no adapter), then
`mask_features` (3x3 conv with bias).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import Conv2dNorm, ShapeSpec


class FPNPixelDecoder(nn.Module):
    """Top-down FPN over res2..res5 producing per-pixel mask features at stride 4.

    Args:
        input_shape: {"res2": ShapeSpec, ...} of the backbone features used.
        conv_dim: channels of the FPN maps (CONVS_DIM, 256).
        mask_dim: channels of the output mask features (MASK_DIM, 256).
        gn_groups: GroupNorm groups (32).
    """

    def __init__(self, input_shape: dict[str, ShapeSpec], *, conv_dim: int = 256,
                 mask_dim: int = 256, gn_groups: int = 32) -> None:
        super().__init__()
        names = sorted(input_shape, key=lambda k: input_shape[k].stride)
        self.in_features = names
        self.mask_dim = mask_dim
        for i, name in enumerate(names):
            cin = input_shape[name].channels
            idx = i + 1
            if i == len(names) - 1:
                self.add_module(f"layer_{idx}", Conv2dNorm(
                    cin, conv_dim, 3, padding=1, bias=False,
                    norm=nn.GroupNorm(gn_groups, conv_dim)))
            else:
                self.add_module(f"adapter_{idx}", Conv2dNorm(
                    cin, conv_dim, 1, bias=False, norm=nn.GroupNorm(gn_groups, conv_dim)))
                self.add_module(f"layer_{idx}", Conv2dNorm(
                    conv_dim, conv_dim, 3, padding=1, bias=False,
                    norm=nn.GroupNorm(gn_groups, conv_dim)))
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, 3, padding=1)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """features: res2..res5 maps -> mask features B x mask_dim x H/4 x W/4."""
        y = None
        for i in reversed(range(len(self.in_features))):
            x = features[self.in_features[i]]
            layer = getattr(self, f"layer_{i + 1}")
            if y is None:
                y = F.relu(layer(x))
            else:
                lateral = getattr(self, f"adapter_{i + 1}")(x)
                y = lateral + F.interpolate(y, size=lateral.shape[-2:], mode="nearest")
                y = F.relu(layer(y))
        return self.mask_features(y)

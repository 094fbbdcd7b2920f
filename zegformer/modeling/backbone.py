"""ResNet backbone in detectron2's layout (FrozenBN, stride in the 3x3 conv), returning res2..res5.

Attribute names equal the official checkpoint keys (`stem.conv1.norm.running_var`,
`res4.22.conv2.weight`, `res2.0.shortcut.norm.bias`, ...), so loading needs no renaming.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ShapeSpec:
    """Channels and stride of one feature map."""

    channels: int
    stride: int


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine parameters, all stored as buffers."""

    weight: torch.Tensor
    bias: torch.Tensor
    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The fused inference op, as detectron2 uses when no gradient is needed (same rounding).
        return F.batch_norm(x, self.running_mean.to(x.dtype), self.running_var.to(x.dtype),
                            self.weight.to(x.dtype), self.bias.to(x.dtype), training=False,
                            eps=self.eps)


class Conv2dNorm(nn.Conv2d):
    """A conv followed by its norm layer, stored as the conv's `norm` child (detectron2 Conv2d)."""

    def __init__(self, *args, norm: nn.Module | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        return self.norm(x) if self.norm is not None else x


def _conv(cin: int, cout: int, k: int, stride: int = 1, dilation: int = 1) -> Conv2dNorm:
    pad = dilation * (k // 2)
    return Conv2dNorm(
        cin, cout, k, stride=stride, padding=pad, dilation=dilation, bias=False,
        norm=FrozenBatchNorm2d(cout),
    )


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 (stride, dilation) -> 1x1 with a projection shortcut when shapes change."""

    def __init__(self, cin: int, cout: int, bottleneck: int, stride: int, dilation: int = 1,
                 stride_in_1x1: bool = False) -> None:
        super().__init__()
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.shortcut = _conv(cin, cout, 1, stride) if cin != cout or stride != 1 else None
        self.conv1 = _conv(cin, bottleneck, 1, s1)
        self.conv2 = _conv(bottleneck, bottleneck, 3, s3, dilation)
        self.conv3 = _conv(bottleneck, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        identity = self.shortcut(x) if self.shortcut is not None else x
        return F.relu_(out + identity)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34), projection shortcut when shapes change."""

    def __init__(self, cin: int, cout: int, stride: int, dilation: int = 1) -> None:
        super().__init__()
        self.shortcut = _conv(cin, cout, 1, stride) if cin != cout or stride != 1 else None
        self.conv1 = _conv(cin, cout, 3, stride)
        self.conv2 = _conv(cout, cout, 3, 1, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = self.conv2(out)
        identity = self.shortcut(x) if self.shortcut is not None else x
        return F.relu_(out + identity)


class BasicStem(nn.Module):
    """7x7 stride-2 conv + FrozenBN + ReLU + 3x3 stride-2 max pool (total stride 4)."""

    def __init__(self, cin: int = 3, cout: int = 64) -> None:
        super().__init__()
        self.conv1 = Conv2dNorm(cin, cout, 7, stride=2, padding=3, bias=False,
                                norm=FrozenBatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu_(self.conv1(x)), kernel_size=3, stride=2, padding=1)


BLOCKS_PER_STAGE = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3],
                    152: [3, 8, 36, 3]}


class ResNetBackbone(nn.Module):
    """ResNet returning {"res2": Bx C2 x H/4 x W/4, ..., "res5": B x C5 x H/32 x W/32}.

    Args:
        depth: 18, 34, 50, 101 or 152.
        stem_out_channels: channels after the stem (64 in the official models).
        res2_out_channels: output channels of res2 (256 for R50/101; 64 for R18/34 officially).
        width_per_group: bottleneck width of res2 (64).
        stride_in_1x1: put the stride in the first 1x1 conv (False in ZegFormer: "torchvision" style).
        res5_dilation: 1 or 2.
    """

    def __init__(self, *, depth: int = 50, stem_out_channels: int = 64,
                 res2_out_channels: int = 256, width_per_group: int = 64,
                 stride_in_1x1: bool = False, res5_dilation: int = 1) -> None:
        super().__init__()
        if depth not in BLOCKS_PER_STAGE:
            raise ValueError(f"ResNet depth must be one of {sorted(BLOCKS_PER_STAGE)}, got {depth}")
        self.stem = BasicStem(3, stem_out_channels)
        cin, cout, bottleneck = stem_out_channels, res2_out_channels, width_per_group
        shapes = {}
        for i, n_blocks in enumerate(BLOCKS_PER_STAGE[depth]):
            name = f"res{i + 2}"
            dilation = res5_dilation if name == "res5" else 1
            first_stride = 1 if i == 0 or (name == "res5" and dilation == 2) else 2
            blocks: list[nn.Module] = []
            for b in range(n_blocks):
                stride = first_stride if b == 0 else 1
                if depth >= 50:
                    blocks.append(BottleneckBlock(cin, cout, bottleneck, stride, dilation,
                                                  stride_in_1x1))
                else:
                    blocks.append(BasicBlock(cin, cout, stride, dilation))
                cin = cout
            self.add_module(name, nn.Sequential(*blocks))
            shapes[name] = ShapeSpec(cout, 4 * 2 ** i if dilation == 1 else 16)
            cout, bottleneck = cout * 2, bottleneck * 2
        self._shapes = shapes

    def output_shape(self) -> dict[str, ShapeSpec]:
        """Channels and stride of each returned feature."""
        return dict(self._shapes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: B x 3 x H x W normalised image -> dict res2..res5 of feature maps."""
        x = self.stem(x)
        out = {}
        for name in ("res2", "res3", "res4", "res5"):
            x = getattr(self, name)(x)
            out[name] = x
        return out

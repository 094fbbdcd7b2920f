"""Builders: settings -> eval-mode nn.Modules with random weights. Loading weights is separate
(`zegformer.loading.checkpoint`)."""
from __future__ import annotations

import os

from torch import nn

from .config import CfgNode, load_config
from ..modeling.backbone import ResNetBackbone
from ..modeling.pixel_decoder import FPNPixelDecoder
from ..modeling.transformer_decoder import SegmentDecoder
from ..modeling.zegformer import PerPixelBaseline, PerPixelBaselineHead, ZegFormer, ZegFormerHead
from .settings import ModelSettings, settings_from_config


def build_backbone(s: ModelSettings) -> ResNetBackbone:
    return ResNetBackbone(
        depth=s.depth, stem_out_channels=s.stem_out_channels,
        res2_out_channels=s.res2_out_channels, width_per_group=s.width_per_group,
        stride_in_1x1=s.stride_in_1x1, res5_dilation=s.res5_dilation,
    )


def build_model(config: str | os.PathLike | CfgNode | ModelSettings, opts=()) -> nn.Module:
    """Build ZegFormer (or the per-pixel baseline) in eval mode with random weights.

    Args:
        config: a config path or name, a loaded CfgNode, or ModelSettings.
        opts: KEY VALUE overrides when `config` is a path or name.
    """
    if isinstance(config, ModelSettings):
        s = config
    else:
        cfg = config if isinstance(config, CfgNode) else load_config(config, opts)
        s = settings_from_config(cfg)
    backbone = build_backbone(s)
    pixel_decoder = FPNPixelDecoder(backbone.output_shape(), conv_dim=s.conv_dim, mask_dim=s.mask_dim)
    if s.arch == "per_pixel_baseline":
        model: nn.Module = PerPixelBaseline(
            backbone, PerPixelBaselineHead(pixel_decoder, s.embed_dim, s.temperature))
    else:
        predictor = SegmentDecoder(
            in_channels=backbone.output_shape()["res5"].channels, hidden_dim=s.hidden_dim,
            num_queries=s.num_queries, nheads=s.nheads, dim_feedforward=s.dim_feedforward,
            dec_layers=s.dec_layers, mask_dim=s.mask_dim, embed_dim=s.embed_dim,
            temperature=s.temperature, enforce_input_proj=s.enforce_input_proj,
            dropout=s.dropout,
        )
        model = ZegFormer(backbone, ZegFormerHead(pixel_decoder, predictor))
    return model.eval().requires_grad_(False)

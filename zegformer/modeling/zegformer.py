"""Top-level ZegFormer modules: they compose injected submodules and return raw outputs only.

`ZegFormer` (META_ARCHITECTURE MaskFormer + ZegFormerHead) and `PerPixelBaseline`
(SemanticSegmentorGzero + ZeroshotPerPixelBaselineHead) keep the checkpoint's module tree:
`backbone.*`, `sem_seg_head.pixel_decoder.*`, `sem_seg_head.predictor.*` /
`sem_seg_head.projection_layer`. Scoring (turning outputs into per-class maps) lives in
`zegformer.inference.scoring`; CLIP lives outside the checkpoint in `clip_adapter.ClipAdapter`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import ResNetBackbone
from .pixel_decoder import FPNPixelDecoder
from .transformer_decoder import SegmentDecoder


class ZegFormerHead(nn.Module):
    """Pixel decoder + segment decoder (checkpoint prefix `sem_seg_head.`)."""

    def __init__(self, pixel_decoder: FPNPixelDecoder, predictor: SegmentDecoder,
                 transformer_in_feature: str = "res5") -> None:
        super().__init__()
        self.pixel_decoder = pixel_decoder
        self.predictor = predictor
        self.transformer_in_feature = transformer_in_feature

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mask_features = self.pixel_decoder(features)
        return self.predictor(features[self.transformer_in_feature], mask_features)


class ZegFormer(nn.Module):
    """Class-agnostic grouping into segments, each with an embedding in the CLIP space.

    forward(images: B x 3 x H x W normalised, H and W multiples of 32) ->
        {"segment_embeds": B x Q x D, "pred_masks": B x Q x H/4 x W/4,
         "features": backbone features (for timing/inspection)}.
    """

    kind = "zegformer"

    def __init__(self, backbone: ResNetBackbone, sem_seg_head: ZegFormerHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(images)
        return self.sem_seg_head(features)


class PerPixelBaselineHead(nn.Module):
    """The paper's pixel-level baseline head: per-pixel embeddings compared with text embeddings."""

    def __init__(self, pixel_decoder: FPNPixelDecoder, embed_dim: int = 512,
                 temperature: float = 0.01) -> None:
        super().__init__()
        self.pixel_decoder = pixel_decoder
        self.projection_layer = nn.Conv2d(pixel_decoder.mask_dim, embed_dim, 1)
        self.logit_scale = nn.Parameter(torch.tensor([math.log(1 / temperature)]),
                                        requires_grad=False)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """-> pixel embeddings B x D x H/4 x W/4, L2-normalised over D."""
        x = self.projection_layer(self.pixel_decoder(features))
        return x / x.norm(dim=1, keepdim=True)


class PerPixelBaseline(nn.Module):
    """forward(images) -> {"pixel_embeds": B x D x H/4 x W/4} (no grouping, no segments)."""

    kind = "per_pixel_baseline"

    def __init__(self, backbone: ResNetBackbone, sem_seg_head: PerPixelBaselineHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pixel_embeds": self.sem_seg_head(self.backbone(images))}

    def classify(self, pixel_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """B x D x h x w, K x D -> logits B x K x h x w (scale * cosine)."""
        scale = self.sem_seg_head.logit_scale.exp()
        return scale * torch.einsum("bdhw,kd->bkhw", pixel_embeds, text_embeds.to(pixel_embeds.dtype))


def upsample_like(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (align_corners=False) of B x C x h x w to B x C x size."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

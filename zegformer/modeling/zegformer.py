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
from torch import nn

from .backbone import ResNetBackbone
from .outputs import ZegFormerOutput
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

    def forward(self, features: dict[str, torch.Tensor], text_embeds: torch.Tensor | None = None,
                *, aux_outputs: bool = False) -> ZegFormerOutput:
        mask_features = self.pixel_decoder(features)
        return self.predictor(features[self.transformer_in_feature], mask_features, text_embeds,
                              aux_outputs=aux_outputs)


class ZegFormer(nn.Module):
    """Class-agnostic grouping into segments, each with an embedding in the CLIP space.

    The one forward that inference, evaluation and training all call.
    """

    kind = "zegformer"

    def __init__(self, backbone: ResNetBackbone, sem_seg_head: ZegFormerHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head

    def forward(self, images: torch.Tensor, text_embeddings: torch.Tensor | None = None, *,
                aux_outputs: bool | None = None) -> ZegFormerOutput:
        """Segment a batch.

        Args:
            images: B x 3 x H x W, normalised with PIXEL_MEAN/STD, H and W multiples of 32.
            text_embeddings: K x D L2-normalised class embeddings; when given the output has
                class logits B x Q x (K + 1) for every returned layer.
            aux_outputs: also return the 5 earlier decoder layers (deep supervision); defaults
                to `self.training`.

        Returns:
            ZegFormerOutput (segment_embeds B x Q x D, pred_masks B x Q x H/4 x W/4,
            pred_logits, aux_outputs).
        """
        aux = self.training if aux_outputs is None else aux_outputs
        return self.sem_seg_head(self.backbone(images), text_embeddings, aux_outputs=aux)

    def classify(self, segment_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """B x Q x D segment embeddings, K x D text -> B x Q x (K + 1) logits (see SegmentDecoder)."""
        return self.sem_seg_head.predictor.classify(segment_embeds, text_embeds)

    def stages(self) -> dict[str, nn.Module]:
        """The submodules a timer reports separately, in the order they run."""
        head = self.sem_seg_head
        return {"backbone": self.backbone, "pixel_decoder": head.pixel_decoder,
                "transformer": head.predictor}


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
    """Pixel-level baseline: every pixel embedded on its own (no grouping, no segments)."""

    kind = "per_pixel_baseline"

    def __init__(self, backbone: ResNetBackbone, sem_seg_head: PerPixelBaselineHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: B x 3 x H x W normalised -> pixel embeddings B x D x H/4 x W/4."""
        return self.sem_seg_head(self.backbone(images))

    def stages(self) -> dict[str, nn.Module]:
        """The submodules a timer reports separately, in the order they run."""
        return {"backbone": self.backbone, "pixel_decoder": self.sem_seg_head}

    def classify(self, pixel_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """B x D x h x w, K x D -> logits B x K x h x w (scale * cosine)."""
        scale = self.sem_seg_head.logit_scale.exp()
        return scale * torch.einsum("bdhw,kd->bkhw", pixel_embeds, text_embeds.to(pixel_embeds.dtype))


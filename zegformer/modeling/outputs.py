"""Typed outputs of the ZegFormer modules, shared by inference, evaluation and training."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LayerOutput:
    """What one decoder layer predicts for a batch.

    segment_embeds: B x Q x D, L2-normalised segment embeddings in the CLIP space.
    pred_masks: B x Q x H/4 x W/4 mask logits.
    pred_logits: B x Q x (K + 1) class logits (K classes, then "no object"); None without text.
    """

    segment_embeds: torch.Tensor
    pred_masks: torch.Tensor
    pred_logits: torch.Tensor | None = None

    def as_dict(self) -> dict[str, torch.Tensor]:
        """{"pred_logits", "pred_masks"}: the official MaskFormer output layout of one layer."""
        if self.pred_logits is None:
            raise ValueError("pred_logits needs text embeddings: call the model with text")
        return {"pred_logits": self.pred_logits, "pred_masks": self.pred_masks}


@dataclass
class ZegFormerOutput(LayerOutput):
    """The last decoder layer's predictions, plus the earlier layers' for deep supervision.

    aux_outputs: one LayerOutput per earlier decoder layer, first to last-but-one (5 for the
    official 6-layer decoder); empty unless asked for (training asks by default).
    """

    aux_outputs: list[LayerOutput] = field(default_factory=list)

    def as_dict(self) -> dict:
        """The official training-mode layout: {"pred_logits", "pred_masks", "aux_outputs": [...]}."""
        out: dict = LayerOutput.as_dict(self)
        out["aux_outputs"] = [a.as_dict() for a in self.aux_outputs]
        return out

"""ZegFormer's segment decoder: DETR decoder over res5, segment embeddings and mask logits.

Names follow the checkpoint (`sem_seg_head.predictor.*`): `transformer.decoder.layers.N.*`,
`transformer.decoder.norm`, `query_embed`, `input_proj`, `mask_embed.layers.N`,
`projection_layer`, `bg_feature`, `logit_scale`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .outputs import LayerOutput, ZegFormerOutput
from .position_encoding import PositionEmbeddingSine


class DecoderLayer(nn.Module):
    """Post-norm DETR decoder layer: self-attention, cross-attention to memory, FFN (ReLU).

    `dropout` (MODEL.MASK_FORMER.DROPOUT, 0.1 in the official configs) acts in training only:
    on the attention weights and after each of the three sub-blocks, and inside the FFN.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)  # no parameters: the checkpoint keys are unchanged
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor,
                query_pos: torch.Tensor) -> torch.Tensor:
        """tgt: Q x B x C, memory/pos: HW x B x C, query_pos: Q x B x C -> Q x B x C."""
        q = k = tgt + query_pos
        # need_weights stays at its default (True), as in the official model: it selects the
        # explicit softmax(QK^T)V path, whose rounding the fidelity test reproduces.
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, value=tgt)[0]))
        attn = self.multihead_attn(tgt + query_pos, memory + pos, value=memory)[0]
        tgt = self.norm2(tgt + self.dropout2(attn))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(ffn))


class TransformerDecoder(nn.Module):
    """A stack of decoder layers; the shared LayerNorm `norm` is applied to every layer's output
    (the official `return_intermediate` path; the last layer's normed output is the result)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, num_layers: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, nhead, dim_feedforward, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt, memory, pos, query_pos, *, all_layers: bool = False) -> torch.Tensor:
        """-> L x Q x B x C (every layer, normed) if all_layers, else 1 x Q x B x C (the last)."""
        outs = []
        for i, layer in enumerate(self.layers):
            tgt = layer(tgt, memory, pos, query_pos)
            if all_layers or i == len(self.layers) - 1:
                outs.append(self.norm(tgt))
        return torch.stack(outs)


class Transformer(nn.Module):
    """DETR transformer with no encoder layers (ZegFormer: ENC_LAYERS = 0): memory = input."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, num_decoder_layers: int,
                 dropout: float = 0.0):
        super().__init__()
        self.d_model = d_model
        self.decoder = TransformerDecoder(d_model, nhead, dim_feedforward, num_decoder_layers,
                                          dropout)

    def forward(self, src: torch.Tensor, query_embed: torch.Tensor, pos: torch.Tensor, *,
                all_layers: bool = False) -> torch.Tensor:
        """src, pos: B x C x H x W; query_embed: Q x C -> decoder outputs L x B x Q x C
        (L = every layer if all_layers, else 1: the last)."""
        b = src.shape[0]
        memory = src.flatten(2).permute(2, 0, 1)  # HW x B x C
        pos = pos.flatten(2).permute(2, 0, 1)
        query_pos = query_embed.unsqueeze(1).expand(-1, b, -1)  # Q x B x C
        tgt = torch.zeros_like(query_pos)
        return self.decoder(tgt, memory, pos, query_pos, all_layers=all_layers).transpose(1, 2)


class MLP(nn.Module):
    """Linear layers with ReLU between them (not after the last)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, outs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class SegmentDecoder(nn.Module):
    """Queries -> segment embeddings in the CLIP space and mask embeddings (`TransformerZeroshotPredictor`).

    Args:
        in_channels: channels of the transformer input feature (res5: 2048).
        hidden_dim: transformer width (256).
        num_queries: number of segment queries (100).
        nheads, dim_feedforward, dec_layers: DETR decoder sizes (8, 2048, 6).
        mask_dim: channels of the pixel decoder's mask features (256).
        embed_dim: width of the CLIP joint space (512 for ViT-B/16).
        temperature: logit scale = 1 / temperature (0.01 -> 100), fixed.
        dropout: decoder dropout in training (MODEL.MASK_FORMER.DROPOUT).
    """

    def __init__(self, *, in_channels: int, hidden_dim: int = 256, num_queries: int = 100,
                 nheads: int = 8, dim_feedforward: int = 2048, dec_layers: int = 6,
                 mask_dim: int = 256, embed_dim: int = 512, temperature: float = 0.01,
                 enforce_input_proj: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.transformer = Transformer(hidden_dim, nheads, dim_feedforward, dec_layers, dropout)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.input_proj: nn.Module
        if in_channels != hidden_dim or enforce_input_proj:
            self.input_proj = nn.Conv2d(in_channels, hidden_dim, 1)
        else:
            self.input_proj = nn.Identity()
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        self.projection_layer = nn.Linear(hidden_dim, embed_dim)
        self.bg_feature = nn.Parameter(torch.empty(1, embed_dim))  # the "no object" embedding
        nn.init.kaiming_uniform_(self.bg_feature, a=math.sqrt(5))
        self.logit_scale = nn.Parameter(torch.tensor([math.log(1 / temperature)]),
                                        requires_grad=False)

    def forward(self, x: torch.Tensor, mask_features: torch.Tensor,
                text_embeds: torch.Tensor | None = None, *,
                aux_outputs: bool = False) -> ZegFormerOutput:
        """Run the decoder.

        Args:
            x: B x C_in x h x w transformer input (res5).
            mask_features: B x mask_dim x H/4 x W/4 from the pixel decoder.
            text_embeds: K x D L2-normalised class embeddings; when given, every returned layer
                has `pred_logits` (B x Q x (K + 1), see `classify`).
            aux_outputs: also return the earlier decoder layers (deep supervision).

        Returns:
            ZegFormerOutput: segment_embeds B x Q x D (L2-normalised), pred_masks
            B x Q x H/4 x W/4, pred_logits or None, aux_outputs (earlier layers, in order).
        """
        pos = self.pe_layer(x)
        hs = self.transformer(self.input_proj(x), self.query_embed.weight, pos,
                              all_layers=aux_outputs)  # L x B x Q x C
        layers = [self._layer_output(h, mask_features, text_embeds) for h in hs]
        last = layers[-1]
        return ZegFormerOutput(last.segment_embeds, last.pred_masks, last.pred_logits,
                               aux_outputs=layers[:-1])

    def _layer_output(self, hs: torch.Tensor, mask_features: torch.Tensor,
                      text_embeds: torch.Tensor | None) -> LayerOutput:
        """hs: B x Q x C decoder output (normed) -> that layer's LayerOutput."""
        emb = self.projection_layer(hs)
        emb = emb / emb.norm(dim=-1, keepdim=True)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(hs), mask_features)
        logits = None if text_embeds is None else self.classify(emb, text_embeds)
        return LayerOutput(emb, masks, logits)

    def classify(self, segment_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """Segment logits against K class embeddings plus "no object".

        Args:
            segment_embeds: B x Q x D (L2-normalised).
            text_embeds: K x D (L2-normalised).

        Returns:
            B x Q x (K + 1) logits: scale * cos(segment, class), then scale * segment . bg_feature
            (bg_feature is not normalised, as in the official model).
        """
        scale = self.logit_scale.exp()
        cls = scale * segment_embeds @ text_embeds.t().to(segment_embeds.dtype)
        bg = scale * segment_embeds @ self.bg_feature.t()
        return torch.cat([cls, bg], dim=-1)

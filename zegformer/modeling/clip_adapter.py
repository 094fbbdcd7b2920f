"""A thin wrapper over an open_clip CLIP model: text, crop and dense image features.

No file I/O and no device choice here: `zegformer.loading.clip` builds the open_clip model.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class ClipAdapter(nn.Module):
    """Text and image towers of CLIP with the operations ZegFormer needs.

    Args:
        clip_model: an open_clip `CLIP` (OpenAI layout: `visual.transformer.resblocks`, ...).
    """

    clip: Any  # open_clip's CLIP: attributes are read dynamically (visual, transformer, ...)

    def __init__(self, clip_model: nn.Module) -> None:
        super().__init__()
        self.clip = clip_model

    @property
    def embed_dim(self) -> int:
        return int(self.clip.text_projection.shape[1])

    @property
    def image_size(self) -> int:
        size = self.clip.visual.image_size
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    @property
    def patch_size(self) -> int:
        """Side of one image patch in pixels (16 for ViT-B/16)."""
        return int(self.clip.visual.conv1.kernel_size[0])

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale.exp()

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: N x 77 int -> N x D text features (not normalised).

        CLIP's text tower is causal and pools the end-of-text token (the largest token id), so
        positions after the longest prompt's end-of-text token cannot change the result. They are
        cut off before the tower runs: prompts are ~10 tokens long, so this is several times
        faster than running all 77 positions, with the same output.
        """
        c = self.clip
        if getattr(c, "text_pool_type", "argmax") != "argmax" or c.attn_mask is None:
            return c.encode_text(tokens)
        eot = tokens.argmax(dim=-1)  # N, position of the end-of-text token
        length = int(eot.max()) + 1
        cast = c.transformer.get_cast_dtype()
        x = c.token_embedding(tokens[:, :length]).to(cast)  # N x L x W
        x = x + c.positional_embedding[:length].to(cast)
        x = c.transformer(x, attn_mask=c.attn_mask[:length, :length])
        x = c.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot]
        if isinstance(c.text_projection, nn.Linear):
            return c.text_projection(x)
        return x @ c.text_projection

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """images: N x 3 x S x S CLIP-normalised (S = image_size) -> N x D (not normalised)."""
        return self.clip.encode_image(images)

    def dense_features(self, images: torch.Tensor) -> torch.Tensor:
        """Per-patch features in the joint space, MaskCLIP style.

        The image tower runs as usual up to its last residual block; there the attention is replaced
        by its value path (value projection then output projection of the normalised tokens, no
        query-key mixing, no residual and no MLP), which keeps each patch's own content. Then
        `ln_post` and `proj` map every patch token into the joint space.

        Args:
            images: B x 3 x H x W CLIP-normalised, H and W multiples of the patch size (any size:
                the position embedding is resized bicubically).

        Returns:
            B x D x H/p x W/p, L2-normalised over D.
        """
        v = self.clip.visual
        b, _, h, w = images.shape
        x = v.conv1(images.to(v.conv1.weight.dtype))  # B x C x gh x gw
        gh, gw = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)  # B x N x C
        cls = v.class_embedding.to(x.dtype).expand(b, 1, -1)
        x = torch.cat([cls, x], dim=1)
        x = x + self._position_embedding(gh, gw).to(x.dtype)
        x = v.ln_pre(x)
        blocks = v.transformer.resblocks
        for blk in blocks[:-1]:
            x = self._run_block(blk, x)
        last = blocks[-1]
        y = last.ln_1(x)
        attn = last.attn
        c = y.shape[-1]
        w_v = attn.in_proj_weight[2 * c:]
        b_v = attn.in_proj_bias[2 * c:] if attn.in_proj_bias is not None else None
        y = attn.out_proj(F.linear(y, w_v, b_v))
        y = v.ln_post(y[:, 1:]) @ v.proj  # B x N x D
        y = y / y.norm(dim=-1, keepdim=True)
        return y.transpose(1, 2).reshape(b, -1, gh, gw)

    def _run_block(self, blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
        batch_first = getattr(self.clip.visual.transformer, "batch_first", True)
        if batch_first:
            return blk(x)
        return blk(x.transpose(0, 1)).transpose(0, 1)

    def _position_embedding(self, gh: int, gw: int) -> torch.Tensor:
        pe = self.clip.visual.positional_embedding  # (1 + n*n) x C
        n = int(math.isqrt(pe.shape[0] - 1))
        if (gh, gw) == (n, n):
            return pe
        grid = pe[1:].reshape(1, n, n, -1).permute(0, 3, 1, 2).float()
        grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
        grid = grid.permute(0, 2, 3, 1).reshape(gh * gw, -1).to(pe.dtype)
        return torch.cat([pe[:1], grid], dim=0)

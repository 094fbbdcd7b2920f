"""Scoring: turning segments (or pixels) and text embeddings into per-class score maps.

Pure functions on tensors, following the official inference path step by step
(see docs/OFFICIAL_PIPELINE notes in README):

decoupled (ZegFormer)
    p_seg  = softmax(segment logits over K classes + "no object")[:, :K]          Q x K
    p_clip = softmax(CLIP crop logits with the "no object" logit appended)[:, :K]  Q x K
    seen columns of p_clip are replaced by their row mean;
    ensemble: seen  c -> p_seg^l * p_clip^(1-l),   novel c -> p_seg^(1-l) * p_clip^l,  l = 2/3
    score[c, x] = sum_q P(c | q) * sigmoid(mask_q[x])                               K x H x W
    then crop the padding, resize to the input size, and subtract the calibration constant
    from seen classes (`GZERO_CALIBRATE`, 0.1 in the eval configs).

pixel
    score[:, x] = softmax_c(scale * cos(pixel embedding at x, text embedding of c)).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

CLIP_STYLES = ("cropmask", "crop", "mask")


def semantic_merge(class_probs: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """sum over segments of P(class | segment) * sigmoid(mask).

    Args:
        class_probs: Q x K.
        mask_logits: Q x H x W.

    Returns:
        K x H x W.
    """
    return torch.einsum("qc,qhw->chw", class_probs, mask_logits.sigmoid())


def segment_class_probs(logits: torch.Tensor) -> torch.Tensor:
    """Q x (K + 1) logits -> Q x K probabilities (softmax over K + "no object", which is dropped)."""
    return logits.softmax(-1)[..., :-1]


def ensemble(p_seg: torch.Tensor, p_clip: torch.Tensor, seen: torch.Tensor, lam: float = 2 / 3,
             all_classes_as_novel: bool = False) -> torch.Tensor:
    """Official geometric ensembling of segment-classifier and CLIP probabilities.

    Args:
        p_seg: Q x K from the segment classifier.
        p_clip: Q x K from CLIP on the segment crops.
        seen: K bool, True for training-vocabulary classes.
        lam: weight toward the segment classifier for seen classes (and toward CLIP for novel).
        all_classes_as_novel: `ENSEMBLING_ALL_CLS`: p_seg^(1-l) * p_clip^l for every class.

    Returns:
        Q x K: seen c: p_seg^l * mean_seen(p_clip)^(1-l); novel c: p_seg^(1-l) * p_clip^l. The
        CLIP probability of every seen class is replaced by the row mean over seen classes, as
        the official code does (CLIP is not trusted to rank seen classes).
    """
    p_clip = p_clip.clone()
    if all_classes_as_novel:
        return p_seg ** (1 - lam) * p_clip ** lam
    out = torch.empty_like(p_seg)
    if seen.any():
        p_clip[:, seen] = p_clip[:, seen].mean(dim=1, keepdim=True)
        out[:, seen] = p_seg[:, seen] ** lam * p_clip[:, seen] ** (1 - lam)
    novel = ~seen
    if novel.any():
        out[:, novel] = p_seg[:, novel] ** (1 - lam) * p_clip[:, novel] ** lam
    return out


def calibrate(scores: torch.Tensor, seen: torch.Tensor, gamma: float) -> torch.Tensor:
    """Subtract `gamma` from the scores of seen classes (K x H x W) when gamma > 0."""
    if gamma > 0 and seen.any():
        scores = scores.clone()
        scores[seen] -= gamma
    return scores


def mask_boxes(binary: torch.Tensor) -> torch.Tensor:
    """Box of each binary mask the official way (first / last foreground column and row).

    Args:
        binary: Q x H x W bool.

    Returns:
        Q x 4 float (x1, y1, x2, y2) in pixel units; a mask whose box has zero area (empty, one
        pixel thick) gets the whole image (0, 0, W, H).
    """
    q, h, w = binary.shape

    def span(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = counts.cumsum(dim=1).float()  # Q x N
        last = c.argmax(dim=1)  # first index reaching the total = last foreground index
        first = torch.where(c == 0, torch.full_like(c, float("inf")), c).argmin(dim=1)
        return first, last

    x1, x2 = span(binary.sum(dim=1))  # column counts, Q x W
    y1, y2 = span(binary.sum(dim=2))  # row counts, Q x H
    boxes = torch.stack([x1, y1, x2, y2], dim=1).float()
    empty = (y2 - y1) * (x2 - x1) == 0
    boxes[empty] = torch.tensor([0.0, 0.0, float(w), float(h)], device=boxes.device)
    return boxes


def clip_crops(image: torch.Tensor, mask_logits: torch.Tensor, style: str = "cropmask",
               size: int = 224) -> torch.Tensor:
    """Image crops of each segment, ready for CLIP's image tower.

    Args:
        image: 3 x H x W CLIP-normalised padded image.
        mask_logits: Q x H x W mask logits at the same size.
        style: "cropmask" (box crop of the image with everything outside the mask set to 0, the
            official default), "crop" (box crop of the plain image) or "mask" (whole image and
            mask logits each resized to size x size, then the mask thresholded and applied).
        size: output side (CLIP's input resolution, 224).

    Returns:
        Q x 3 x size x size.
    """
    if style not in CLIP_STYLES:
        raise ValueError(f"CLIP_CLS_STYLE must be one of {CLIP_STYLES}, got {style!r}")
    if style == "mask":  # official: image and mask logits resized to size x size, then masked
        small = F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False)
        m = F.interpolate(mask_logits[:, None], size=(size, size), mode="bilinear",
                          align_corners=False).sigmoid() > 0.5  # Q x 1 x size x size
        return small * m.to(image.dtype)
    binary = mask_logits.sigmoid() > 0.5
    if style == "crop":
        boxes = mask_boxes(binary)
        rois = torch.cat([torch.zeros(len(boxes), 1, device=boxes.device), boxes], dim=1)
        return roi_align(image[None], rois.to(image.dtype), output_size=size, spatial_scale=1.0,
                         sampling_ratio=-1, aligned=True)
    masked = image[None] * binary[:, None].to(image.dtype)  # Q x 3 x H x W
    boxes = mask_boxes(binary)
    rois = torch.cat([torch.arange(len(boxes), device=boxes.device)[:, None].float(), boxes], dim=1)
    return roi_align(masked, rois.to(image.dtype), output_size=size, spatial_scale=1.0,
                     sampling_ratio=-1, aligned=True)


def clip_segment_logits(image: torch.Tensor, mask_logits: torch.Tensor,
                        encode_image: Callable[[torch.Tensor], torch.Tensor],
                        clip_text: torch.Tensor, logit_scale: torch.Tensor, *,
                        style: str = "cropmask", size: int = 224, chunk: int = 20) -> torch.Tensor:
    """CLIP logits of every segment crop against the CLIP text embeddings.

    Args:
        image: 3 x H x W CLIP-normalised; mask_logits: Q x H x W.
        encode_image: N x 3 x size x size -> N x D.
        clip_text: K x D normalised text embeddings (CLIP template set).
        logit_scale: CLIP's exp(logit_scale) (100).
        chunk: segments per image-tower call (bounds memory: chunk x 3 x H x W).

    Returns:
        Q x K logits = logit_scale * cos(crop, class).
    """
    out = []
    for start in range(0, mask_logits.shape[0], chunk):
        crops = clip_crops(image, mask_logits[start:start + chunk], style, size)
        f = encode_image(crops).float()
        f = f / f.norm(dim=-1, keepdim=True)
        out.append(logit_scale * f @ clip_text.t().to(f))
    return torch.cat(out)


def decoupled_segment_probs(seg_logits: torch.Tensor, seen: torch.Tensor, *,
                            clip_logits: torch.Tensor | None = None, ensembling: bool = True,
                            all_classes_as_novel: bool = False, lam: float = 2 / 3
                            ) -> torch.Tensor:
    """P(class | segment), Q x K, for the three official configurations.

    - no CLIP classification: softmax of the segment logits (training configs);
    - CLIP classification without ensembling: softmax of the CLIP logits with the segment
      classifier's "no object" logit appended;
    - CLIP classification with ensembling: `ensemble` of both (`all_classes_as_novel`, the
      official ENSEMBLING_ALL_CLS, applies with or without `ensembling`).
    """
    if clip_logits is None:
        return segment_class_probs(seg_logits)
    clip_with_bg = torch.cat([clip_logits, seg_logits[:, -1:]], dim=1)
    if not ensembling and not all_classes_as_novel:  # ENSEMBLING_ALL_CLS works on its own
        return segment_class_probs(clip_with_bg)
    return ensemble(segment_class_probs(seg_logits), segment_class_probs(clip_with_bg), seen, lam,
                    all_classes_as_novel)


def postprocess(scores: torch.Tensor, image_size: tuple[int, int],
                output_size: tuple[int, int]) -> torch.Tensor:
    """Crop the padding (scores[:, :h, :w]) and resize bilinearly to the output size (K x H x W)."""
    h, w = image_size
    scores = scores[:, :h, :w]
    if tuple(scores.shape[-2:]) == tuple(output_size):
        return scores
    return F.interpolate(scores[None], size=output_size, mode="bilinear", align_corners=False)[0]


def pixel_probs(logits: torch.Tensor) -> torch.Tensor:
    """K x H x W per-pixel logits -> probabilities over the K classes."""
    return logits.softmax(dim=0)

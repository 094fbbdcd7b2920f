"""Hungarian matching of predicted segments to ground-truth masks (MaskFormer / ZegFormer).

For every image, each target mask is assigned to exactly one query (and each query gets at
most one target) by minimising the summed cost

    C[q, t] = cost_class * (-p_q(label_t)) + cost_mask * focal(q, t) + cost_dice * dice(q, t)

with `scipy.optimize.linear_sum_assignment`, where `p_q` is the softmax over the K + 1 class
logits of query q. The mask costs compare the predicted mask logits at the PREDICTION
resolution (h x w) with the target masks resized to that resolution by nearest-neighbour
interpolation (PyTorch `mode="nearest"`, i.e. source index floor(i * H / h)); no point
sampling. This is the official MaskFormer matcher that ZegFormer uses, built with
`cost_class=1, cost_mask=MASK_WEIGHT (20), cost_dice=DICE_WEIGHT (1)`.

Targets of one batch may have different sizes: they are zero-padded at the bottom/right to the
largest H and W of the batch first (as the official code does). Pixels that belong to no target
mask (ignore label, padding) are simply 0 in every mask: the official matcher and loss do not
mask them out.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ZegFormerError

FOCAL_ALPHA = 0.25  # weight of the positive pixels in the sigmoid focal loss (RetinaNet)
FOCAL_GAMMA = 2.0  # focusing exponent of the sigmoid focal loss


def check_targets(targets: Sequence[Mapping[str, Tensor]], batch_size: int,
                  num_classes: int) -> None:
    """Raise ZegFormerError unless `targets` is one {"labels": [n], "masks": [n, H, W]} per image.

    Args:
        targets: one dict per image; `labels` int64 in [0, num_classes), `masks` bool/0-1 n x H x W.
        batch_size: B of the predictions.
        num_classes: K, the number of real classes (K is the "no object" index).
    """
    if len(targets) != batch_size:
        raise ZegFormerError(f"got {len(targets)} targets for a batch of {batch_size} images")
    for b, t in enumerate(targets):
        if "labels" not in t or "masks" not in t:
            raise ZegFormerError(f"target {b} needs 'labels' and 'masks', got keys {sorted(t)}")
        labels, masks = t["labels"], t["masks"]
        if labels.ndim != 1 or masks.ndim != 3 or labels.shape[0] != masks.shape[0]:
            raise ZegFormerError(
                f"target {b}: labels must be [n] and masks [n, H, W] with the same n, got "
                f"{tuple(labels.shape)} and {tuple(masks.shape)}")
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ZegFormerError(f"target {b}: labels must be integers, got {labels.dtype}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ZegFormerError(
                f"target {b}: labels must be in [0, {num_classes}), got "
                f"{int(labels.min())}..{int(labels.max())}")


def padded_size(targets: Sequence[Mapping[str, Tensor]]) -> tuple[int, int]:
    """(H_max, W_max) over the target masks of a batch (the size every target is padded to)."""
    return (max(int(t["masks"].shape[-2]) for t in targets),
            max(int(t["masks"].shape[-1]) for t in targets))


def pad_masks(masks: Tensor, size: tuple[int, int], like: Tensor) -> Tensor:
    """Zero-pad n x H x W masks at the bottom/right to n x `size`, with `like`'s dtype/device."""
    out = torch.zeros((masks.shape[0], *size), dtype=like.dtype, device=like.device)
    out[:, : masks.shape[-2], : masks.shape[-1]] = masks.to(like)
    return out


def pairwise_sigmoid_focal_cost(logits: Tensor, targets: Tensor,
                                alpha: float = FOCAL_ALPHA, gamma: float = FOCAL_GAMMA) -> Tensor:
    """Mean sigmoid focal loss of every prediction against every target.

    Args:
        logits: Q x P mask logits (P pixels).
        targets: N x P binary masks (float 0/1).
    Returns:
        Q x N: entry [q, n] = mean over pixels of focal(logits[q], targets[n]).
    """
    num_pixels = logits.shape[1]
    prob = logits.sigmoid()
    # per pixel, the loss if the pixel were positive / negative
    focal_pos = (1 - prob) ** gamma * F.binary_cross_entropy_with_logits(
        logits, torch.ones_like(logits), reduction="none")
    focal_neg = prob ** gamma * F.binary_cross_entropy_with_logits(
        logits, torch.zeros_like(logits), reduction="none")
    if alpha >= 0:
        focal_pos = focal_pos * alpha
        focal_neg = focal_neg * (1 - alpha)
    cost = (torch.einsum("qp,np->qn", focal_pos, targets)
            + torch.einsum("qp,np->qn", focal_neg, 1 - targets))
    return cost / num_pixels


def pairwise_dice_cost(logits: Tensor, targets: Tensor) -> Tensor:
    """Dice loss 1 - (2|X.Y| + 1) / (|X| + |Y| + 1) of every prediction against every target.

    Args:
        logits: Q x P mask logits (the sigmoid gives X).
        targets: N x P binary masks (float 0/1, Y).
    Returns:
        Q x N dice losses in [0, 1).
    """
    prob = logits.sigmoid()
    numerator = 2 * torch.einsum("qp,np->qn", prob, targets)
    denominator = prob.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to target masks, per image (no learnable state).

    Args:
        cost_class: weight of -p(target class) in the cost (official: 1).
        cost_mask: weight of the sigmoid focal cost (official: MODEL.MASK_FORMER.MASK_WEIGHT, 20).
        cost_dice: weight of the dice cost (official: MODEL.MASK_FORMER.DICE_WEIGHT, 1).
    """

    def __init__(self, cost_class: float = 1.0, cost_mask: float = 20.0,
                 cost_dice: float = 1.0) -> None:
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ZegFormerError("HungarianMatcher: the three cost weights cannot all be 0")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice

    @torch.no_grad()
    def cost_matrix(self, logits: Tensor, pred_masks: Tensor, labels: Tensor,
                    target_masks: Tensor) -> Tensor:
        """The matching cost of one image.

        Args:
            logits: Q x (K+1) class logits.
            pred_masks: Q x h x w mask logits.
            labels: [n] int64 target classes.
            target_masks: n x H x W float 0/1 target masks (already padded to the batch size).
        Returns:
            Q x n cost (same dtype/device as `pred_masks`).
        """
        prob = logits.softmax(-1)  # Q x (K+1)
        cost_class = -prob[:, labels]  # Q x n
        small = F.interpolate(target_masks[:, None], size=pred_masks.shape[-2:], mode="nearest")
        out = pred_masks.flatten(1)  # Q x (h*w)
        tgt = small[:, 0].flatten(1)  # n x (h*w)
        cost_mask = pairwise_sigmoid_focal_cost(out, tgt)
        cost_dice = pairwise_dice_cost(out, tgt)
        return (self.cost_mask * cost_mask + self.cost_class * cost_class
                + self.cost_dice * cost_dice)

    @torch.no_grad()
    def forward(self, outputs: Mapping[str, Tensor],
                targets: Sequence[Mapping[str, Tensor]]) -> list[tuple[Tensor, Tensor]]:
        """Match the queries of each image to its targets.

        Args:
            outputs: {"pred_logits": B x Q x (K+1), "pred_masks": B x Q x h x w} (other keys,
                e.g. "aux_outputs", are ignored).
            targets: B dicts {"labels": int64 [n_b], "masks": bool [n_b, H_b, W_b]}; n_b may be 0.
        Returns:
            B pairs (query_indices, target_indices), int64 CPU tensors of length min(Q, n_b):
            query query_indices[i] is matched to target target_indices[i]; query indices ascend.
        """
        logits, pred_masks = outputs["pred_logits"], outputs["pred_masks"]
        if logits.ndim != 3 or pred_masks.ndim != 4 or logits.shape[:2] != pred_masks.shape[:2]:
            raise ZegFormerError(
                f"pred_logits must be B x Q x (K+1) and pred_masks B x Q x h x w, got "
                f"{tuple(logits.shape)} and {tuple(pred_masks.shape)}")
        batch_size, num_queries = logits.shape[:2]
        check_targets(targets, batch_size, logits.shape[-1] - 1)
        size = padded_size(targets)
        indices = []
        for b in range(batch_size):
            labels = targets[b]["labels"]
            if labels.numel() == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                indices.append((empty, empty.clone()))
                continue
            tgt = pad_masks(targets[b]["masks"], size, pred_masks)
            cost = self.cost_matrix(logits[b], pred_masks[b], labels.to(logits.device), tgt)
            cost_np = cost.reshape(num_queries, -1).cpu().double().numpy()
            if not np.isfinite(cost_np).all():
                raise ZegFormerError(
                    f"matching cost of image {b} is not finite (NaN/inf predictions: diverged?)")
            from scipy.optimize import linear_sum_assignment

            rows, cols = linear_sum_assignment(cost_np)
            indices.append((torch.as_tensor(rows, dtype=torch.int64),
                            torch.as_tensor(cols, dtype=torch.int64)))
        return indices

    def extra_repr(self) -> str:
        return (f"cost_class={self.cost_class}, cost_mask={self.cost_mask}, "
                f"cost_dice={self.cost_dice}")

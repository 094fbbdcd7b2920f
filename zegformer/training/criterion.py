"""The official MaskFormer / ZegFormer training loss (`SetCriterion`) with deep supervision.

For the last decoder layer and, with deep supervision, for each of the DEC_LAYERS - 1 earlier
layers (`aux_outputs`, each matched on its own):

- `loss_ce`: cross-entropy over K + 1 classes for EVERY query; a matched query's target is its
  target's class, every other query's target is "no object" (index K). Class weights are 1 with
  0.1 (`no_object_weight`) for "no object", and the mean is weighted (sum w_i l_i / sum w_i).
- `loss_mask`: sigmoid focal loss (alpha 0.25, gamma 2) of each matched query's mask logits,
  upsampled bilinearly (align_corners=False) from h x w to the target size H x W, against its
  target mask; mean over pixels, summed over matches, divided by `num_masks`.
- `loss_dice`: dice loss 1 - (2|X.Y| + 1) / (|X| + |Y| + 1) at H x W, summed, / `num_masks`.

`num_masks` is the number of target masks in the batch, averaged over processes with
`torch.distributed.all_reduce` when a process group is initialised, clamped at 1 (so a batch
with no target still works: it only has the "no object" cross-entropy).

Weighting (ce 1, mask MASK_WEIGHT = 20, dice DICE_WEIGHT = 1) is applied here, once, and the
returned names are the official ones: `loss_ce, loss_mask, loss_dice, loss_ce_0, ...,
loss_dice_{DEC_LAYERS-2}`; the total training loss is their sum.

Targets are padded with zeros to the largest H x W of the batch. Pixels in no target mask
(ignore label, padding) are NOT excluded: they count as background of every matched mask, as in
the official code (its "use valid to mask invalid areas" is a TODO there).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ZegFormerError
from .matcher import FOCAL_ALPHA, FOCAL_GAMMA, HungarianMatcher, pad_masks, padded_size

Indices = Sequence[tuple[Tensor, Tensor]]


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, num_masks: float,
                       alpha: float = FOCAL_ALPHA, gamma: float = FOCAL_GAMMA) -> Tensor:
    """Sigmoid focal loss, mean over pixels, summed over masks, divided by `num_masks`.

    Args:
        logits: N x P mask logits.
        targets: N x P float 0/1 masks.
        num_masks: the normaliser (>= 1).
    Returns:
        A scalar.
    """
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss.mean(1).sum() / num_masks


def dice_loss(logits: Tensor, targets: Tensor, num_masks: float) -> Tensor:
    """Dice loss 1 - (2|X.Y| + 1) / (|X| + |Y| + 1) per mask, summed, divided by `num_masks`.

    Args:
        logits: N x P mask logits (X = sigmoid).
        targets: N x P float 0/1 masks (Y).
        num_masks: the normaliser (>= 1).
    Returns:
        A scalar.
    """
    prob = logits.sigmoid()
    numerator = 2 * (prob * targets).sum(-1)
    denominator = prob.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def average_num_masks(targets: Sequence[Mapping[str, Tensor]], device: torch.device) -> float:
    """Target masks per process: the local count, all-reduced and divided by the world size when
    torch.distributed is initialised, clamped at 1 (every process must call this together)."""
    count = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))],
                            dtype=torch.float, device=device)
    world_size = 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(count)
        world_size = torch.distributed.get_world_size()
    return float(torch.clamp(count / world_size, min=1).item())


def _query_index(indices: Indices) -> tuple[Tensor, Tensor]:
    """(image index, query index) of every match, concatenated over the batch."""
    batch = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(indices)])
    return batch, torch.cat([src for src, _ in indices])


class SetCriterion(nn.Module):
    """Matching + weighted losses of MaskFormer/ZegFormer, official names and numbers.

    Args:
        num_classes: K, the number of training classes (logits have K + 1 entries).
        no_object_weight: cross-entropy weight of the "no object" class (NO_OBJECT_WEIGHT).
        mask_weight: weight of the focal loss and of the focal matching cost (MASK_WEIGHT).
        dice_weight: weight of the dice loss and of the dice matching cost (DICE_WEIGHT).
        dec_layers: decoder layers (DEC_LAYERS); deep supervision expects dec_layers - 1
            auxiliary outputs.
        deep_supervision: also supervise the auxiliary outputs (DEEP_SUPERVISION).
        matcher: replaces the default `HungarianMatcher(1, mask_weight, dice_weight)`.

    Buffers: `empty_weight` [K + 1] (ones, `no_object_weight` last), as the official
    `criterion.empty_weight` checkpoint entry.
    """

    empty_weight: Tensor  # [K + 1] cross-entropy class weights

    def __init__(self, num_classes: int, *, no_object_weight: float = 0.1,
                 mask_weight: float = 20.0, dice_weight: float = 1.0, dec_layers: int = 6,
                 deep_supervision: bool = True, matcher: nn.Module | None = None) -> None:
        super().__init__()
        if num_classes < 1:
            raise ZegFormerError(f"SetCriterion: num_classes must be >= 1, got {num_classes}")
        if deep_supervision and dec_layers < 1:
            raise ZegFormerError(f"SetCriterion: dec_layers must be >= 1, got {dec_layers}")
        self.num_classes = num_classes
        self.eos_coef = no_object_weight
        self.deep_supervision = deep_supervision
        self.num_aux = dec_layers - 1 if deep_supervision else 0
        self.matcher = matcher if matcher is not None else HungarianMatcher(
            cost_class=1.0, cost_mask=mask_weight, cost_dice=dice_weight)
        layer_weights = {"loss_ce": 1.0, "loss_mask": mask_weight, "loss_dice": dice_weight}
        self.weight_dict: dict[str, float] = dict(layer_weights)
        for i in range(self.num_aux):
            self.weight_dict.update({f"{k}_{i}": v for k, v in layer_weights.items()})
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = no_object_weight
        self.register_buffer("empty_weight", empty_weight)

    def loss_labels(self, logits: Tensor, targets: Sequence[Mapping[str, Tensor]],
                    indices: Indices) -> Tensor:
        """Weighted cross-entropy over all B x Q queries (unmatched ones -> "no object").

        Args:
            logits: B x Q x (K+1).
        Returns:
            A scalar (not yet multiplied by its loss weight).
        """
        idx = _query_index(indices)
        matched_classes = torch.cat([t["labels"][tgt] for t, (_, tgt) in zip(targets, indices)])
        classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64,
                             device=logits.device)  # B x Q
        classes[idx] = matched_classes.to(logits.device)
        return F.cross_entropy(logits.transpose(1, 2), classes, self.empty_weight)

    def loss_masks(self, pred_masks: Tensor, targets: Sequence[Mapping[str, Tensor]],
                   indices: Indices, num_masks: float) -> tuple[Tensor, Tensor]:
        """Focal and dice losses of the matched masks at the target resolution.

        Args:
            pred_masks: B x Q x h x w mask logits.
        Returns:
            (focal, dice) scalars (not yet multiplied by their loss weights).
        """
        src = pred_masks[_query_index(indices)]  # N x h x w
        size = padded_size(targets)
        # the targets of the matches, in the order of _query_index: N x H x W
        tgt = torch.cat([pad_masks(t["masks"][j], size, src)
                         for t, (_, j) in zip(targets, indices)])
        src = F.interpolate(src[:, None], size=size, mode="bilinear", align_corners=False)
        src = src[:, 0].flatten(1)  # N x (H*W)
        tgt = tgt.flatten(1)
        return sigmoid_focal_loss(src, tgt, num_masks), dice_loss(src, tgt, num_masks)

    def layer_losses(self, layer: Mapping[str, Tensor], targets: Sequence[Mapping[str, Tensor]],
                     num_masks: float, indices: Indices | None = None) -> dict[str, Tensor]:
        """Unweighted `loss_ce`, `loss_mask`, `loss_dice` of one layer's outputs (matched here
        unless `indices` is given)."""
        if indices is None:
            indices = self.matcher(layer, targets)
        focal, dice = self.loss_masks(layer["pred_masks"], targets, indices, num_masks)
        return {"loss_ce": self.loss_labels(layer["pred_logits"], targets, indices),
                "loss_mask": focal, "loss_dice": dice}

    def forward(self, outputs: Mapping[str, Any], targets: Sequence[Mapping[str, Tensor]], *,
                num_masks: float | None = None) -> dict[str, Tensor]:
        """The weighted losses of a batch.

        Args:
            outputs: {"pred_logits": B x Q x (K+1), "pred_masks": B x Q x h x w,
                "aux_outputs": [{"pred_logits", "pred_masks"}] * (dec_layers - 1)} (aux needed
                only with deep supervision; earliest layer first).
            targets: B dicts {"labels": int64 [n_b] in [0, K), "masks": bool [n_b, H, W]} on the
                predictions' device; n_b may be 0.
            num_masks: the normaliser; default: `average_num_masks(targets)` (all processes
                must then call forward together). Give it explicitly e.g. when accumulating
                gradients over micro-batches.
        Returns:
            {name: scalar} with the official names, each already multiplied by its weight
            (`weight_dict`); the training loss is `sum(losses.values())`.
        """
        logits = outputs["pred_logits"]
        if logits.ndim != 3 or logits.shape[-1] != self.num_classes + 1:
            raise ZegFormerError(
                f"pred_logits must be B x Q x {self.num_classes + 1} (K + 1 with "
                f"K = {self.num_classes}), got {tuple(logits.shape)}")
        aux = list(outputs.get("aux_outputs", [])) if self.deep_supervision else []
        if len(aux) != self.num_aux:
            raise ZegFormerError(
                f"deep supervision expects {self.num_aux} aux_outputs (dec_layers - 1), "
                f"got {len(aux)}")
        if num_masks is None:
            num_masks = average_num_masks(targets, logits.device)
        last = {"pred_logits": logits, "pred_masks": outputs["pred_masks"]}
        raw = self.layer_losses(last, targets, num_masks)
        for i, layer in enumerate(aux):
            raw.update({f"{k}_{i}": v for k, v in self.layer_losses(layer, targets,
                                                                   num_masks).items()})
        return {k: v * self.weight_dict[k] for k, v in raw.items()}

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, no_object_weight={self.eos_coef}, "
                f"aux_layers={self.num_aux}")

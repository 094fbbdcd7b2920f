"""Which segments the fast path gives a CLIP crop, and what the others get instead.

`plan_segments` is the fast path's selection (`zegformer.inference.fast`):

1. `segment_mass`: each segment weighs objectness x its mask's peak;
2. `mask_groups`: segments with the same binary mask share one crop (exactly, as in the exact
   path);
3. `similar_mask_clusters` (when `FastSettings.share_iou` is set): groups whose binary masks
   overlap by at least that IoU, and which weigh at most BORROWER_WEIGHT_RATIO of the heaviest
   one, form one cluster, represented by that heaviest group. Similar masks give similar crops
   (the crop is the mask's box of the masked image), so the cluster's one crop stands for all
   of them;
4. `select_segments`: the heaviest clusters until they hold `mass_fraction` of the weight, at
   most `max_crops` of them. Their representatives are encoded; the other members borrow the
   representative's CLIP logits;
5. every other segment that is not provably negligible falls back to its own segment logits
   (`fallback_clip_logits`): CLIP agrees with the segment classifier there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # fast.py imports this module
    from .fast import FastSettings

IOU_PIXELS = 16384  # masks are compared on a grid of about this many pixels (subsampled)
# A segment borrows a look-alike's crop only when it weighs at most this share of it. On the
# trained benchmark model the borrowers weigh at most 0.05 of their leader; on the untrained rule
# weights look-alikes weigh the same, and borrowing there cost 9 points of agreement.
BORROWER_WEIGHT_RATIO = 0.5


def segment_mass(seg_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Weight of each segment: (1 - P(no object)) * the largest value of its mask's sigmoid.

    Measured on a trained model (scripts/train_bench_model.py, 6 images, fraction 0.97 / 0.99):
    this weight kept argmax agreement 98.9% / 99.4%; objectness x soft area (the sum of the
    sigmoid) 98.3% / 98.8% with fewer crops, which loses small objects first.

    Args:
        seg_logits: Q x (K + 1), "no object" last; mask_logits: Q x H x W.

    Returns:
        Q float64 (>= 0).
    """
    objectness = 1.0 - seg_logits.double().softmax(-1)[:, -1]
    peak = mask_logits.double().sigmoid().flatten(1).amax(dim=1)
    return objectness * peak.to(objectness.device)


def mask_groups(mask_logits: torch.Tensor) -> torch.Tensor:
    """Q long ids, equal for segments with the same binary mask (sigmoid > 0.5).

    Equal binary masks give equal crops (one image-tower call serves them all), so the fast
    path counts and ranks crops, not segments. All empty masks form one group.
    """
    binary = (mask_logits.sigmoid() > 0.5).flatten(1).cpu().numpy()
    packed = np.packbits(binary, axis=1)
    ids: dict[bytes, int] = {}
    out = [ids.setdefault(row.tobytes(), len(ids)) for row in packed]
    return torch.tensor(out, dtype=torch.long, device=mask_logits.device)


def select_segments(mass: torch.Tensor, candidates: torch.Tensor, settings: FastSettings,
                    groups: torch.Tensor | None = None) -> torch.Tensor:
    """Segments whose CLIP crop the fast path encodes.

    Args:
        mass: Q (`segment_mass`).
        candidates: Q bool, the segments that may be encoded (not provably negligible).
        settings: max_crops and mass_fraction.
        groups: Q ids of segments sharing one crop (`mask_groups`); default: each its own.

    Returns:
        Q bool: the candidates of the heaviest groups (a group weighs the mass of its
        candidates), heaviest first, until they hold mass_fraction of the candidates' total
        mass, at most max_crops groups.
    """
    chosen = torch.zeros_like(candidates, dtype=torch.bool)
    if groups is None:
        groups = torch.arange(len(mass), device=mass.device)
    groups = groups.to(mass.device)
    members = torch.nonzero(candidates.to(mass.device)).flatten()
    if len(members) == 0 or settings.max_crops == 0:
        return chosen
    idx, inverse = torch.unique(groups[members], return_inverse=True)  # candidate groups
    m = torch.zeros(len(idx), dtype=mass.dtype, device=mass.device)
    m.index_add_(0, inverse, mass[members])
    order = m.argsort(descending=True, stable=True)
    total = m.sum()
    before = m[order].cumsum(0) - m[order]  # mass of the heavier ones
    if settings.mass_fraction >= 1.0 or total <= 0:
        needed = torch.ones_like(before, dtype=torch.bool)
    else:  # keep a segment while the heavier ones alone do not yet reach the fraction
        needed = before < settings.mass_fraction * total
    keep = order[needed][: settings.max_crops]  # indices into idx (groups)
    picked = torch.zeros(len(idx), dtype=torch.bool, device=mass.device)
    picked[keep] = True
    chosen[members[picked[inverse]].to(chosen.device)] = True
    return chosen


def fallback_clip_logits(clip_logits: torch.Tensor, seg_logits: torch.Tensor,
                         encoded: torch.Tensor, negligible: torch.Tensor) -> torch.Tensor:
    """CLIP logits with the segments left out by the fast path filled in by their segment logits.

    softmax([seg_logits[:K], no-object logit]) is the segment classifier's own probabilities, so
    for those rows CLIP "agrees" with the classifier. Provably negligible rows keep -inf, as in
    the exact path.

    Args:
        clip_logits: Q x K (-inf rows where not encoded); seg_logits: Q x (K + 1);
        encoded, negligible: Q bool.
    """
    out = clip_logits.clone()
    fill = ~encoded & ~negligible
    out[fill] = seg_logits[fill, :-1].to(out.dtype)
    return out


def similar_mask_clusters(mask_logits: torch.Tensor, groups: torch.Tensor,
                          candidates: torch.Tensor, mass: torch.Tensor,
                          min_iou: float, max_weight_ratio: float = 1.0) -> torch.Tensor:
    """Q long cluster ids: candidate mask groups whose binary masks overlap by IoU >= min_iou.

    Greedy, heaviest group first: a group joins the first (heaviest) cluster whose
    representative mask it overlaps by at least `min_iou` and which weighs at least
    1 / `max_weight_ratio` times as much as it does, else it starts a cluster of its own. (A
    trained model's duplicate masks are weak echoes of the segment that carries the object:
    they borrow. Segments as heavy as their look-alike carry their own opinion: they do not.)
    The IoU is measured on the binary masks (logit > 0) subsampled to about IOU_PIXELS pixels.
    A cluster's id is its representative group's id, so the representative is the cluster's
    group with `groups == id`. Segments that are not candidates keep their own group id (they
    are never selected).

    Args:
        mask_logits: Q x H x W; groups: Q (`mask_groups`); candidates: Q bool; mass: Q.
    """
    out = groups.clone()
    members = candidates.to(groups.device).nonzero()[:, 0]
    if len(members) < 2:
        return out
    ids, inverse = torch.unique(groups[members], return_inverse=True)  # G candidate groups
    weight = torch.zeros(len(ids), dtype=torch.float64, device=groups.device)
    weight.index_add_(0, inverse, mass.to(weight.device)[members].double())
    first = torch.full((len(ids),), -1, dtype=torch.long, device=groups.device)
    first.scatter_reduce_(0, inverse, members, reduce="amax", include_self=True)  # one member each
    h, w = mask_logits.shape[-2:]
    step = max(1, math.ceil(math.sqrt(h * w / IOU_PIXELS)))
    binary = (mask_logits[first.to(mask_logits.device), ::step, ::step] > 0).flatten(1).float()
    inter = binary @ binary.t()
    area = binary.sum(1)
    union = area[:, None] + area[None, :] - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter)).cpu()
    cluster = np.arange(len(ids))
    reps: list[int] = []
    for g in weight.argsort(descending=True, stable=True).tolist():
        match = next((r for r in reps if float(iou[g, r]) >= min_iou
                      and float(weight[g]) <= max_weight_ratio * float(weight[r])), None)
        if match is None:
            reps.append(g)
        else:
            cluster[g] = match
    out[members] = ids[torch.as_tensor(cluster, device=ids.device)[inverse]]
    return out


@dataclass
class SegmentPlan:
    """For every segment, where its CLIP logits come from.

    source: Q long, the segment whose crop gives its CLIP logits: itself (its crop is encoded),
        another segment of its cluster (it borrows), or -1 (none: it falls back to its segment
        logits, or is provably negligible).
    """

    source: torch.Tensor

    @property
    def encoded(self) -> torch.Tensor:
        """Q bool: segments whose own crop is encoded."""
        return self.source == torch.arange(len(self.source), device=self.source.device)

    @property
    def borrowing(self) -> torch.Tensor:
        """Q bool: segments that take another segment's CLIP logits."""
        return (self.source >= 0) & ~self.encoded


def plan_segments(settings: FastSettings, seg_logits: torch.Tensor, mask_logits: torch.Tensor,
                  candidates: torch.Tensor) -> SegmentPlan:
    """The fast path's selection (module docstring): which crops are encoded, who borrows.

    Args:
        seg_logits: Q x (K + 1); mask_logits: Q x H x W; candidates: Q bool (not negligible).
    """
    mass = segment_mass(seg_logits, mask_logits)
    groups = mask_groups(mask_logits)
    share = settings.share_iou
    clusters = groups if share is None else similar_mask_clusters(
        mask_logits, groups, candidates, mass, share, BORROWER_WEIGHT_RATIO)
    chosen = select_segments(mass, candidates, settings, clusters).to(groups.device)
    source = torch.full_like(groups, -1)
    encoded = chosen & (groups == clusters)  # the representative group of a chosen cluster
    source[encoded] = torch.nonzero(encoded)[:, 0]
    borrow = chosen & ~encoded
    if bool(borrow.any()):
        rep_of_group: dict[int, int] = {}  # group id -> its first encoded segment
        for i, g in zip(torch.nonzero(encoded)[:, 0].tolist(), groups[encoded].tolist()):
            rep_of_group.setdefault(int(g), int(i))
        source[borrow] = torch.tensor([rep_of_group[int(c)] for c in clusters[borrow].tolist()],
                                      dtype=source.dtype, device=source.device)
    return SegmentPlan(source)


def complete_clip_logits(clip_logits: torch.Tensor, seg_logits: torch.Tensor,
                         plan: SegmentPlan, negligible: torch.Tensor) -> torch.Tensor:
    """The encoded segments' CLIP logits, copied to the segments that borrow them, and the
    segment logits for every other segment that is not negligible (`fallback_clip_logits`).

    Args:
        clip_logits: Q x K (-inf rows where not encoded); seg_logits: Q x (K + 1);
        negligible: Q bool.
    """
    out = clip_logits.clone()
    borrow = plan.borrowing.to(out.device)
    if bool(borrow.any()):
        out[borrow] = clip_logits[plan.source.to(out.device)[borrow]]
    return fallback_clip_logits(out, seg_logits, plan.source.to(out.device) >= 0, negligible)

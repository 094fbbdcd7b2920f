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
    score[:, x] = softmax_c(scale * cos(patch embedding, text embedding of c)) on the patch
    grid, resized bilinearly to the input size.
"""
from __future__ import annotations

import hashlib
from typing import Callable

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from .crop_cache import CropFeatureCache

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

    # The official code takes argmax / argmin of cumulative foreground counts; the first and last
    # index holding any foreground are the same numbers, found with `any` (5x cheaper).
    def span(occupied: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.arange(occupied.shape[1], device=occupied.device)  # N
        first = torch.where(occupied, idx, occupied.shape[1]).amin(dim=1)
        last = torch.where(occupied, idx, -1).amax(dim=1)
        return first, last

    x1, x2 = span(binary.any(dim=1))  # columns with foreground, Q x W
    y1, y2 = span(binary.any(dim=2))  # rows with foreground, Q x H
    boxes = torch.stack([x1, y1, x2, y2], dim=1).float()
    empty = ((y2 - y1) * (x2 - x1) == 0) | (x2 < 0)
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


NEGLIGIBLE_SCORE = 1e-7  # total score that the skipped CLIP crops may move any pixel's class score by
# Crops per image-tower call. Measured on 2 CPU cores (ViT-B/16, fp32): 0.80-0.98 s of CPU per
# crop for batches of 10 to 60, no size faster beyond noise; 32 looked ~10% slower than 20 in two
# full runs. 20 = the official chunk, so without shared crops the calls are the official ones.
CLIP_BATCH_SIZE = 20
_COSINE_SLACK = 1e-3  # |cos| <= 1 up to rounding: the largest CLIP logit is taken as scale * (1 + slack)


def segment_prob_bounds(seg_logits: torch.Tensor, seen: torch.Tensor, *,
                        logit_scale: float | torch.Tensor, ensembling: bool = True,
                        all_classes_as_novel: bool = False, lam: float = 2 / 3) -> torch.Tensor:
    """Upper bounds of P(class | segment) that hold whatever CLIP says about the segment's crop.

    Derivation (the formulas of `decoupled_segment_probs` / `ensemble`). Let b = the segment's
    "no object" logit, s = CLIP's logit scale, and p_clip the softmax of the CLIP logits l_1..l_K
    with b appended. Every CLIP logit is s * cos(crop, text) <= s (unit vectors; L = s * (1 + 1e-3)
    covers rounding), so for every class c

        p_clip[c] = e^l_c / (sum_k e^l_k + e^b) <= e^l_c / (e^l_c + e^b) = sigmoid(l_c - b)
                  <= sigmoid(L - b) =: u;

    and since the p_clip of all classes sum to at most 1, the mean over the n_seen seen classes is
    at most 1 / n_seen (and at most u). With p = p_seg[c] in [0, 1] and 0 < lam < 1:

    - ensembling, seen c:    p^lam * mean_seen(p_clip)^(1-lam) <= p^lam * min(u, 1/n_seen)^(1-lam)
    - ensembling, novel c:   p^(1-lam) * p_clip[c]^lam        <= p^(1-lam) * u^lam
    - ENSEMBLING_ALL_CLS:    p^(1-lam) * p_clip[c]^lam        <= p^(1-lam) * u^lam
    - CLIP without ensembling: p_clip[c]                       <= u

    (so in particular P <= p_seg^lam for seen and p_seg^(1-lam) for novel classes).

    Args:
        seg_logits: Q x (K + 1) segment-classifier logits, "no object" last.
        seen: K bool.
        logit_scale: CLIP's exp(logit_scale) (100), the factor of the CLIP logits.

    Returns:
        Q x K float64 bounds.
    """
    logits = seg_logits.double()
    p = segment_class_probs(logits)  # Q x K
    scale = float(logit_scale) * (1 + _COSINE_SLACK)
    u = torch.sigmoid(scale - logits[:, -1:]).expand_as(p)  # Q x K
    if not ensembling and not all_classes_as_novel:
        return u.clone()
    novel_bound = p ** (1 - lam) * u ** lam
    if all_classes_as_novel:
        return novel_bound
    n_seen = int(seen.sum())
    seen_mean = torch.clamp(u, max=1.0 / max(n_seen, 1))
    seen_bound = p ** lam * seen_mean ** (1 - lam)
    return torch.where(seen.to(p.device)[None, :], seen_bound, novel_bound)


def negligible_segments(seg_logits: torch.Tensor, mask_logits: torch.Tensor, seen: torch.Tensor,
                        *, logit_scale: float | torch.Tensor, ensembling: bool = True,
                        all_classes_as_novel: bool = False, lam: float = 2 / 3,
                        tol: float = NEGLIGIBLE_SCORE) -> torch.Tensor:
    """Segments whose CLIP crop need not be encoded: together they move no score by more than tol.

    Segment q adds P(c | q) * sigmoid(mask_q[x]) to the score of class c at pixel x
    (`semantic_merge`). With B_qc from `segment_prob_bounds` and m_q = max_x sigmoid(mask_q[x]),
    that is at most U_q = max_c B_qc * m_q, whatever its crop holds. Post-processing is a crop and
    a bilinear resize (non-negative weights that sum to 1) and calibration subtracts a constant, so
    dropping a set S of segments (P(c | q) = 0 for q in S, which `clip_segment_logits(skip=...)`
    gives) changes every final score by at most sum_{q in S} U_q. The segments with the smallest
    U_q are taken while that sum stays <= tol (default `NEGLIGIBLE_SCORE`, 1e-7, far below the
    1e-4 fidelity tolerance).

    Args:
        seg_logits: Q x (K + 1); mask_logits: Q x H x W (the size the merge uses); seen: K bool.
        logit_scale, ensembling, all_classes_as_novel, lam: as in `decoupled_segment_probs`.
        tol: the largest total change allowed; 0 skips nothing.

    Returns:
        Q bool, True where the crop may be skipped.
    """
    q = seg_logits.shape[0]
    if tol <= 0 or q == 0:
        return torch.zeros(q, dtype=torch.bool, device=seg_logits.device)
    bounds = segment_prob_bounds(seg_logits, seen, logit_scale=logit_scale, ensembling=ensembling,
                                 all_classes_as_novel=all_classes_as_novel, lam=lam)
    peak = mask_logits.flatten(1).amax(dim=1).double().sigmoid()  # Q, max_x sigmoid(mask)
    worst = bounds.amax(dim=1) * peak.to(bounds.device)  # Q
    order = worst.argsort()
    total = worst[order].cumsum(0)
    skip = torch.zeros(q, dtype=torch.bool, device=seg_logits.device)
    skip[order[total <= tol].to(skip.device)] = True
    return skip


def clip_segment_logits(image: torch.Tensor, mask_logits: torch.Tensor,
                        encode_image: Callable[[torch.Tensor], torch.Tensor],
                        clip_text: torch.Tensor, logit_scale: torch.Tensor, *,
                        style: str = "cropmask", size: int = 224, chunk: int = 20,
                        skip: torch.Tensor | None = None, dedupe: bool = True,
                        batch_size: int = CLIP_BATCH_SIZE,
                        feature_cache: CropFeatureCache | None = None,
                        stats: dict[str, int] | None = None) -> torch.Tensor:
    """CLIP logits of every segment crop against the CLIP text embeddings.

    The official algorithm encodes all Q crops. The defaults do only the work that can change the
    result: segments in `skip` are not cropped or encoded, and crops that are equal byte for byte
    (empty masks, repeated masks) are encoded once, all crops in as few image-tower calls of at
    most `batch_size` as there are; with a `feature_cache`, crops seen in earlier calls (the same
    image with another vocabulary) are not encoded again. `dedupe=False` with `skip=None` is the
    official algorithm (crops made and encoded `chunk` at a time).

    Args:
        image: 3 x H x W CLIP-normalised; mask_logits: Q x H x W.
        encode_image: N x 3 x size x size -> N x D.
        clip_text: K x D normalised text embeddings (CLIP template set).
        logit_scale: CLIP's exp(logit_scale) (100).
        chunk: segments cropped at a time (bounds memory: chunk x 3 x H x W).
        skip: Q bool (see `negligible_segments`): those rows get -inf logits, so that their CLIP
            probabilities, and hence their ensembled probabilities, are 0.
        dedupe: encode equal crops once.
        batch_size: crops per image-tower call (with dedupe; else `chunk`).
        feature_cache: image-tower features by crop digest (256-bit BLAKE2b of the crop's bytes),
            used with dedupe; one cache per `encode_image`.
        stats: filled with {"segments": Q, "skipped": n, "distinct": n, "cached": n,
            "encoded": n} when given.

    Returns:
        Q x K logits = logit_scale * cos(crop, class) (-inf rows for skipped segments).
    """
    q = mask_logits.shape[0]
    keep = torch.arange(q, device=mask_logits.device)
    if skip is not None:
        keep = keep[~skip.to(mask_logits.device)]
    text = clip_text.t()
    feats: list[torch.Tensor] = []
    if not dedupe:
        for start in range(0, len(keep), chunk):
            crops = clip_crops(image, mask_logits[keep[start:start + chunk]], style, size)
            feats.append(encode_image(crops).float())
        distinct = encoded = len(keep)
    else:
        unique, where, keys = _unique_crops(image, mask_logits, keep, style, size, chunk)
        found = [feature_cache.get(k) if feature_cache is not None else None for k in keys]
        todo = [i for i, f in enumerate(found) if f is None]
        for b in range(0, len(todo), max(1, batch_size)):
            idx = todo[b:b + max(1, batch_size)]
            new = encode_image(unique[idx]).float()
            for i, row in zip(idx, new):
                found[i] = row
                if feature_cache is not None:
                    feature_cache.put(keys[i], row)
        feats = [torch.stack([f for f in found if f is not None])] if found else []
        distinct, encoded = len(unique), len(todo)
    if stats is not None:
        stats.update(segments=q, skipped=q - len(keep), distinct=distinct,
                     cached=distinct - encoded, encoded=encoded)
    out = torch.full((q, clip_text.shape[0]), float("-inf"), device=mask_logits.device)
    if len(keep):
        f = torch.cat(feats).float()
        f = f / f.norm(dim=-1, keepdim=True)
        logits = logit_scale * f @ text.to(f)
        out = out.to(logits.dtype)
        out[keep] = logits if not dedupe else logits[where]
    return out


def _unique_crops(image: torch.Tensor, mask_logits: torch.Tensor, keep: torch.Tensor, style: str,
                  size: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor, list[bytes]]:
    """The distinct crops of segments `keep` (N x 3 x size x size), for each kept segment the
    index of its crop among them (len(keep) long), and each distinct crop's digest (N). Crops are
    equal when their bytes are: a hash finds the candidate, `torch.equal` confirms it (so a hash
    collision cannot merge two crops within one call)."""
    seen_at: dict[bytes, int] = {}
    keys: list[bytes] = []
    unique: list[torch.Tensor] = []
    where: list[int] = []
    for start in range(0, len(keep), chunk):
        crops = clip_crops(image, mask_logits[keep[start:start + chunk]], style, size)
        host = crops.detach().cpu().contiguous()
        for i in range(len(crops)):
            h = hashlib.blake2b(f"{tuple(host[i].shape)}{host[i].dtype}".encode(), digest_size=32)
            h.update(host[i].reshape(-1).view(torch.uint8).numpy().tobytes())
            digest = h.digest()
            j = seen_at.get(digest)
            if j is None or not torch.equal(unique[j], crops[i]):
                j = len(unique)
                seen_at.setdefault(digest, j)
                unique.append(crops[i])
                keys.append(digest)
            where.append(j)
    stacked = torch.stack(unique) if unique else image.new_zeros(0, 3, size, size)
    return stacked, torch.tensor(where, dtype=torch.long, device=mask_logits.device), keys


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

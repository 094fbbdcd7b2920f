"""Trim the official training-forward golden (31 MB) to what the criterion tests need (~2 MB).

Run once, from the repository root, with the reference data present:

    python tests/data/training/trim_train_forward_loss.py \
        /work/shared/reference/golden/training/train_forward_R101_salt-pub.npz

Kept, exactly (float32, no rounding): the 6 layers' class logits (all 100 queries); for every
layer and image the mask logits of a SUBSET of queries (the matched ones plus the unmatched
queries whose cheapest matching cost is lowest: the strongest competitors) with their query
ids; the padded targets (bit-packed); the official matchings, loss names and values.
Restricting a linear assignment to a subset that contains the optimum keeps the optimum, so
the matcher run on the subset must give the official matching.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

QUERIES_KEPT = 8  # per layer and image: matched + strongest unmatched
OUT = Path(__file__).resolve().parent / "train_forward_R101_salt-pub_loss.npz"


def main(src: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    from zegformer.training.matcher import HungarianMatcher, pad_masks, padded_size

    d = np.load(src)
    logits, masks = d["pred_logits"], d["pred_masks"]  # L x B x Q x (K+1), L x B x Q x h x w
    num_layers, batch = logits.shape[:2]
    targets = [{"labels": torch.tensor(d[f"target_labels_{b}"]),
                "masks": torch.tensor(d[f"target_masks_{b}"])} for b in range(batch)]
    size = padded_size(targets)
    matcher = HungarianMatcher()
    out: dict[str, np.ndarray] = {"pred_logits": logits}
    kept_ids = np.zeros((num_layers, batch, QUERIES_KEPT), dtype=np.int64)
    for layer in range(num_layers):
        for b in range(batch):
            src_q = d[f"match_src_l{layer}_b{b}"]
            cost = matcher.cost_matrix(
                torch.tensor(logits[layer, b]), torch.tensor(masks[layer, b]),
                targets[b]["labels"],
                pad_masks(targets[b]["masks"], size, torch.zeros(0))).numpy()
            others = [q for q in np.argsort(cost.min(1)) if q not in set(src_q.tolist())]
            ids = np.sort(np.concatenate([src_q, others[: QUERIES_KEPT - len(src_q)]]))
            kept_ids[layer, b] = ids
            out[f"match_src_l{layer}_b{b}"] = d[f"match_src_l{layer}_b{b}"]
            out[f"match_tgt_l{layer}_b{b}"] = d[f"match_tgt_l{layer}_b{b}"]
    out["kept_query_ids"] = kept_ids
    out["kept_pred_masks"] = np.stack([
        np.stack([masks[layer, b, kept_ids[layer, b]] for b in range(batch)])
        for layer in range(num_layers)])  # L x B x QUERIES_KEPT x h x w
    for b in range(batch):
        tm = d[f"target_masks_{b}"]
        out[f"target_labels_{b}"] = d[f"target_labels_{b}"]
        out[f"target_masks_shape_{b}"] = np.array(tm.shape, dtype=np.int64)
        out[f"target_masks_packed_{b}"] = np.packbits(tm.reshape(-1))
    out["loss_names"] = d["loss_names"]
    out["loss_values"] = d["loss_values"]
    out["loss_total"] = d["loss_total"]
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main(sys.argv[1])

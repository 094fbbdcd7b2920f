"""SetCriterion: the official goldens (every loss, the total, every input gradient), cases worked
by hand (perfect prediction, empty targets, ignore pixels, padding), the normaliser (explicit,
clamped, averaged over 2 gloo processes) and bad input."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from zegformer.errors import ZegFormerError
from zegformer.training.criterion import SetCriterion, average_num_masks

DATA = Path(__file__).resolve().parent / "data" / "training"
NAMES = [f"{k}{s}" for s in [""] + [f"_{i}" for i in range(5)]
         for k in ("loss_ce", "loss_mask", "loss_dice")]


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


class FixedMatcher(nn.Module):
    """Returns the given matchings, one per call (last layer first, then aux 0, 1, ...)."""

    def __init__(self, per_call):
        super().__init__()
        self.per_call = list(per_call)

    def forward(self, outputs, targets):
        return self.per_call.pop(0)


# ---------------------------------------------------------------- official goldens


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_small_golden_losses_total_and_gradients(device):
    d = np.load(DATA / "criterion_seed42_small.npz")
    logits = [torch.tensor(d[f"logits_{i}"], device=device, requires_grad=True) for i in range(6)]
    masks = [torch.tensor(d[f"masks_{i}"], device=device, requires_grad=True) for i in range(6)]
    outputs = {"pred_logits": logits[5], "pred_masks": masks[5],
               "aux_outputs": [{"pred_logits": logits[i], "pred_masks": masks[i]}
                               for i in range(5)]}
    targets = [{"labels": torch.tensor(d[f"labels_{b}"], device=device),
                "masks": torch.tensor(d[f"tmasks_{b}"], device=device)} for b in range(2)]
    criterion = SetCriterion(int(d["K"])).to(device)
    losses = criterion(outputs, targets)
    assert list(losses) == NAMES
    rel = 1e-6 if device == "cpu" else 1e-5  # (bitwise equal on CPU)
    for name in NAMES:
        assert losses[name].item() == pytest.approx(float(d[f"loss/{name}"]), rel=rel), name
    total = sum(losses.values())
    assert total.item() == pytest.approx(float(d["total"]), rel=rel)
    total.backward()
    for i in range(6):
        for got, key in ((logits[i].grad, f"grad_logits_{i}"), (masks[i].grad, f"grad_masks_{i}")):
            got, want = got.cpu(), torch.tensor(d[key])
            assert torch.allclose(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item()), key
    for b, (rows, cols) in enumerate(criterion.matcher(outputs, targets)):
        assert rows.tolist() == d[f"match_src_{b}"].tolist()
        assert cols.tolist() == d[f"match_tgt_{b}"].tolist()


def test_r101_golden_18_losses():
    """The official model's training losses on its own outputs (num_masks 9). The trimmed file
    keeps the mask logits of the matched queries only, so the official matchings are used."""
    d = np.load(DATA / "train_forward_R101_salt-pub_loss.npz")
    logits = torch.tensor(d["pred_logits"])  # L x B x Q x (K+1)
    layers, batch, queries = logits.shape[:3]
    h, w = d["kept_pred_masks"].shape[-2:]
    masks = torch.zeros(layers, batch, queries, h, w)
    for layer in range(layers):
        for b in range(batch):
            masks[layer, b, d["kept_query_ids"][layer, b]] = torch.tensor(
                d["kept_pred_masks"][layer, b])
    targets = [{"labels": torch.tensor(d[f"target_labels_{b}"]),
                "masks": torch.tensor(np.unpackbits(d[f"target_masks_packed_{b}"]).reshape(
                    d[f"target_masks_shape_{b}"]).astype(bool))} for b in range(batch)]
    order = [5, 0, 1, 2, 3, 4]  # the criterion matches the last layer first
    matcher = FixedMatcher([[(torch.tensor(d[f"match_src_l{l}_b{b}"]),
                              torch.tensor(d[f"match_tgt_l{l}_b{b}"])) for b in range(batch)]
                            for l in order])
    criterion = SetCriterion(logits.shape[-1] - 1, matcher=matcher)
    outputs = {"pred_logits": logits[5], "pred_masks": masks[5],
               "aux_outputs": [{"pred_logits": logits[i], "pred_masks": masks[i]}
                               for i in range(5)]}
    losses = criterion(outputs, targets)
    assert list(losses) == list(d["loss_names"])
    for name, want in zip(d["loss_names"], d["loss_values"]):
        assert losses[name].item() == pytest.approx(float(want), rel=1e-6), name
    assert sum(losses.values()).item() == pytest.approx(float(d["loss_total"]), rel=1e-6)


def test_official_buffer_and_weights():
    c = SetCriterion(156)
    assert list(c.state_dict()) == ["empty_weight"]
    assert c.empty_weight.shape == (157,) and c.empty_weight[-1].item() == pytest.approx(0.1)
    assert torch.all(c.empty_weight[:-1] == 1)
    assert c.weight_dict["loss_mask_4"] == 20.0 and c.weight_dict["loss_dice"] == 1.0
    assert len(c.weight_dict) == 18
    assert len(SetCriterion(3, deep_supervision=False).weight_dict) == 3


# ---------------------------------------------------------------- worked by hand


def _one_image(logits, masks, labels, tmasks):
    return ({"pred_logits": torch.tensor([logits], dtype=torch.float32),
             "pred_masks": torch.tensor([masks], dtype=torch.float32)},
            [{"labels": torch.tensor(labels, dtype=torch.int64),
              "masks": torch.tensor(tmasks, dtype=torch.bool)}])


def test_two_queries_one_target_by_hand():
    """K = 2, Q = 2, masks 1 x 2 at the target size; target: class 0, mask [1, 0].
    Query 1 (logits [1, 0, 0], mask logits [2, -2]) wins the matching over query 0 (logits 0,
    mask logits 0); by hand:
      ce    = (1 * -log(e / (e + 2)) + 0.1 * log 3) / (1 + 0.1)
      focal = mean(0.25 (1-s)^2 -log s, 0.75 (1-s)^2 -log s) = 0.5 (1-s)^2 (-log s), s = sigmoid(2)
      dice  = 1 - (2 s + 1) / (s + (1 - s) + 1 + 1) = (2 - 2 s) / 3"""
    out, tgt = _one_image([[0, 0, 0], [1, 0, 0]], [[[0, 0]], [[2, -2]]], [0], [[[1, 0]]])
    c = SetCriterion(2, deep_supervision=False)
    (rows, cols), = c.matcher(out, tgt)
    assert rows.tolist() == [1] and cols.tolist() == [0]
    s = _sigmoid(2.0)
    ce = (-math.log(math.e / (math.e + 2)) + 0.1 * math.log(3)) / 1.1
    focal = 0.5 * (1 - s) ** 2 * -math.log(s)
    dice = (2 - 2 * s) / 3
    losses = c(out, tgt)
    assert losses["loss_ce"].item() == pytest.approx(ce, rel=1e-6)
    assert losses["loss_mask"].item() == pytest.approx(20 * focal, rel=1e-5)
    assert losses["loss_dice"].item() == pytest.approx(dice, rel=1e-6)


def test_perfect_prediction_has_a_near_zero_loss():
    g = torch.Generator().manual_seed(0)
    k, q, size = 3, 5, (6, 8)
    tmasks = torch.zeros(2, *size, dtype=torch.bool)
    tmasks[0, :3], tmasks[1, 3:] = True, True
    logits = torch.full((1, q, k + 1), -30.0)
    logits[0, :, k] = 30.0  # every query "no object" ...
    logits[0, 1], logits[0, 3] = -30.0, -30.0
    logits[0, 1, 2], logits[0, 3, 0] = 30.0, 30.0  # ... but query 1 -> class 2, query 3 -> 0
    masks = torch.randn(1, q, *size, generator=g)
    masks[0, 1] = tmasks[0].float() * 60 - 30
    masks[0, 3] = tmasks[1].float() * 60 - 30
    target = [{"labels": torch.tensor([2, 0]), "masks": tmasks}]
    c = SetCriterion(k, deep_supervision=False)
    (rows, cols), = c.matcher({"pred_logits": logits, "pred_masks": masks}, target)
    assert rows.tolist() == [1, 3] and cols.tolist() == [0, 1]
    losses = c({"pred_logits": logits, "pred_masks": masks}, target)
    assert losses["loss_ce"].item() < 1e-12
    assert losses["loss_mask"].item() < 1e-12
    # dice: 1 - (2A + 1) / (2A + 1) with A = 24 pixels, up to sigmoid(-30) per pixel
    assert losses["loss_dice"].item() < 1e-6
    # and a wrong class raises only the cross-entropy
    logits[0, 1, 2], logits[0, 1, 1] = -30.0, 30.0
    worse = c({"pred_logits": logits, "pred_masks": masks}, target)
    assert worse["loss_ce"].item() > 1.0 and worse["loss_mask"].item() < 1e-12


def test_batch_without_targets_has_only_the_no_object_cross_entropy():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 4, 6, generator=g, requires_grad=True)
    masks = torch.randn(2, 4, 3, 3, generator=g, requires_grad=True)
    empty = {"labels": torch.zeros(0, dtype=torch.int64),
             "masks": torch.zeros(0, 12, 12, dtype=torch.bool)}
    out = {"pred_logits": logits, "pred_masks": masks,
           "aux_outputs": [{"pred_logits": logits * 2, "pred_masks": masks}]}
    losses = SetCriterion(5, dec_layers=2)(out, [empty, empty])
    # every query's target is "no object": the weighted mean of -log p(no object), weights 0.1
    want = -torch.log_softmax(logits.detach(), -1)[..., 5].mean()
    assert losses["loss_ce"].item() == pytest.approx(want.item(), rel=1e-6)
    assert losses["loss_mask"].item() == 0 and losses["loss_dice"].item() == 0
    assert losses["loss_mask_0"].item() == 0 and losses["loss_ce_0"].item() > 0
    sum(losses.values()).backward()
    assert logits.grad.abs().sum() > 0 and masks.grad.abs().sum() == 0


def test_mixed_batch_counts_every_query_in_the_cross_entropy():
    """Image 0 has no target, image 1 one target matched to its only plausible query."""
    logits = torch.zeros(2, 2, 3)
    masks = torch.zeros(2, 2, 1, 2)
    masks[1, 0] = torch.tensor([[2.0, -2.0]])
    logits[1, 0, 0] = 1.0
    targets = [{"labels": torch.zeros(0, dtype=torch.int64),
                "masks": torch.zeros(0, 1, 2, dtype=torch.bool)},
               {"labels": torch.tensor([0]), "masks": torch.tensor([[[True, False]]])}]
    losses = SetCriterion(2, deep_supervision=False)(
        {"pred_logits": logits, "pred_masks": masks}, targets)
    # three queries "no object" at -log(1/3) (weight 0.1), one at -log(e/(e+2)) (weight 1)
    ce = (3 * 0.1 * math.log(3) + -math.log(math.e / (math.e + 2))) / (3 * 0.1 + 1)
    assert losses["loss_ce"].item() == pytest.approx(ce, rel=1e-6)
    s = _sigmoid(2.0)
    assert losses["loss_dice"].item() == pytest.approx((2 - 2 * s) / 3, rel=1e-6)


def test_ignore_pixels_count_as_background_like_the_official_loss():
    """A pixel in no target mask (ignore label / padding) is not excluded: it is background of
    every mask, so the loss equals the loss with that pixel explicitly negative, and changes
    with the prediction there."""
    pred = [[[2.0, -2.0, 3.0]]]
    out, tgt = _one_image([[1, 0, 0]], [pred[0]], [0], [[[1, 0, 0]]])  # pixel 2 is "ignore"
    c = SetCriterion(2, deep_supervision=False)
    losses = c(out, tgt)
    s = _sigmoid(2.0)
    s3 = _sigmoid(3.0)
    focal = (0.25 * (1 - s) ** 2 * -math.log(s) + 0.75 * (1 - s) ** 2 * -math.log(s)
             + 0.75 * s3 ** 2 * -math.log(1 - s3)) / 3
    dice = 1 - (2 * s + 1) / (s + (1 - s) + s3 + 1 + 1)
    assert losses["loss_mask"].item() == pytest.approx(20 * focal, rel=1e-5)
    assert losses["loss_dice"].item() == pytest.approx(dice, rel=1e-6)
    out["pred_masks"][0, 0, 0, 2] = -3.0
    assert c(out, tgt)["loss_mask"].item() < losses["loss_mask"].item()


def test_masks_are_upsampled_bilinearly_and_targets_zero_padded():
    """Image 1's targets are smaller than image 0's: zero-padding them by hand gives the same
    losses; predictions (2 x 3) are upsampled bilinearly (align_corners False) to 4 x 6."""
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 3, 4, generator=g)
    masks = torch.randn(2, 3, 2, 3, generator=g)
    t0 = torch.rand(2, 4, 6, generator=g) > 0.5
    t1 = torch.rand(1, 3, 5, generator=g) > 0.5
    t1_padded = torch.zeros(1, 4, 6, dtype=torch.bool)
    t1_padded[:, :3, :5] = t1
    c = SetCriterion(3, deep_supervision=False)
    out = {"pred_logits": logits, "pred_masks": masks}
    got = c(out, [{"labels": torch.tensor([0, 2]), "masks": t0},
                  {"labels": torch.tensor([1]), "masks": t1}])
    want = c(out, [{"labels": torch.tensor([0, 2]), "masks": t0},
                   {"labels": torch.tensor([1]), "masks": t1_padded}])
    for k in got:
        assert got[k].item() == want[k].item()
    # dice by hand from an explicit bilinear upsampling of the matched masks
    (r0, c0), (r1, c1) = c.matcher(out, [{"labels": torch.tensor([0, 2]), "masks": t0},
                                         {"labels": torch.tensor([1]), "masks": t1_padded}])
    up = torch.nn.functional.interpolate(masks, size=(4, 6), mode="bilinear", align_corners=False)
    pairs = [(up[0, q], t0[t]) for q, t in zip(r0, c0)] + [(up[1, q], t1_padded[t])
                                                           for q, t in zip(r1, c1)]
    dice = sum(1 - (2 * (x.sigmoid() * y).sum() + 1) / (x.sigmoid().sum() + y.sum() + 1)
               for x, y in pairs) / 3
    assert got["loss_dice"].item() == pytest.approx(dice.item(), rel=1e-6)


# ---------------------------------------------------------------- normaliser


def test_explicit_num_masks_scales_only_the_mask_losses():
    out, tgt = _one_image([[0, 0, 0], [1, 0, 0]], [[[0, 0]], [[2, -2]]], [0], [[[1, 0]]])
    c = SetCriterion(2, deep_supervision=False)
    one, four = c(out, tgt), c(out, tgt, num_masks=4.0)
    assert four["loss_ce"].item() == one["loss_ce"].item()
    assert four["loss_mask"].item() == pytest.approx(one["loss_mask"].item() / 4, rel=1e-6)
    assert four["loss_dice"].item() == pytest.approx(one["loss_dice"].item() / 4, rel=1e-6)
    assert average_num_masks([{"labels": torch.zeros(0)}], torch.device("cpu")) == 1.0
    assert average_num_masks([{"labels": torch.zeros(3)}, {"labels": torch.zeros(2)}],
                             torch.device("cpu")) == 5.0


def _num_masks_worker(rank: int, port: int, results) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        counts = [3, 0][rank]  # 3 masks on rank 0, none on rank 1 -> (3 + 0) / 2
        results[rank] = average_num_masks([{"labels": torch.zeros(counts)}], torch.device("cpu"))
    finally:
        torch.distributed.destroy_process_group()


def test_num_masks_is_averaged_over_processes():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("fork")  # no re-import of torch in the children: ~1 s instead of ~30
    results = ctx.Manager().dict()
    mp.start_processes(_num_masks_worker, args=(port, results), nprocs=2, join=True,
                       start_method="fork")
    assert dict(results) == {0: 1.5, 1: 1.5}


# ---------------------------------------------------------------- bad input


def test_bad_outputs_are_refused():
    out, tgt = _one_image([[0, 0, 0]], [[[0, 0]]], [0], [[[1, 0]]])
    with pytest.raises(ZegFormerError, match="B x Q x 4"):
        SetCriterion(3, deep_supervision=False)(out, tgt)
    with pytest.raises(ZegFormerError, match="expects 5 aux_outputs"):
        SetCriterion(2)(out, tgt)
    with pytest.raises(ZegFormerError, match="num_classes"):
        SetCriterion(0)

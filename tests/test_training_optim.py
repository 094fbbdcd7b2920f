"""Optimiser groups (which parameter gets which LR and weight decay), the WarmupPolyLR curve
against its closed form, gradient clipping, and the SOLVER values of the shipped configs."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from zegformer.loading.config import list_configs, load_config
from zegformer.errors import ConfigError
from zegformer.modeling.backbone import FrozenBatchNorm2d
from zegformer.training.optimizer import (
    build_optimizer, build_param_groups, clip_gradients, gradient_clipping_enabled,
    optimizer_parameters)
from zegformer.training.schedule import WarmupPolyLR, build_lr_scheduler

R101 = "configs/coco-stuff/zegformer_R101_bs32_60k_vit16_coco-stuff.yaml"


class Toy(nn.Module):
    """A backbone with a conv, BatchNorm and FrozenBN, and a head with the other cases."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), FrozenBatchNorm2d(4))
        self.head = nn.Module()
        self.head.proj = nn.Linear(4, 4)
        self.head.norm = nn.LayerNorm(4)
        self.head.gn = nn.GroupNorm(2, 4)
        self.head.query_embed = nn.Embedding(3, 4)
        self.head.bg_feature = nn.Parameter(torch.zeros(1, 4))
        self.head.frozen = nn.Linear(4, 4)
        self.head.frozen.requires_grad_(False)
        self.head.tied = nn.Linear(4, 4, bias=False)
        self.head.tied.weight = self.head.proj.weight  # shared: counted once, for head.proj
        self.head.swin = nn.Module()
        self.head.swin.relative_position_bias_table = nn.Parameter(torch.zeros(5))
        self.head.sampling_offsets = nn.Linear(4, 2)
        self.backbone_semantic_query = nn.Linear(4, 1)  # "backbone" and "semantic_query"


def _cfg(**solver):
    cfg = load_config(R101)
    cfg.SOLVER.update(solver)
    return cfg


def test_param_groups_lr_and_decay_per_parameter():
    cfg = _cfg(BASE_LR=1.0, WEIGHT_DECAY=0.5, WEIGHT_DECAY_NORM=0.25, WEIGHT_DECAY_EMBED=0.125,
               BACKBONE_MULTIPLIER=0.1)
    cfg.MODEL.MASK_FORMER.SEMANTIC_QUERY_MULTIPLIER = 0.5
    groups = build_param_groups(Toy(), cfg)
    got = {g["params"][0][0]: (g["lr"], g["weight_decay"]) for g in groups}
    assert all(len(g["params"]) == 1 for g in groups)
    want = {
        "backbone.0.weight": (0.1, 0.5), "backbone.0.bias": (0.1, 0.5),
        "backbone.1.weight": (0.1, 0.25), "backbone.1.bias": (0.1, 0.25),  # BN: norm decay
        "head.proj.weight": (1.0, 0.5), "head.proj.bias": (1.0, 0.5),  # biases decay too
        "head.norm.weight": (1.0, 0.25), "head.norm.bias": (1.0, 0.25),
        "head.gn.weight": (1.0, 0.25), "head.gn.bias": (1.0, 0.25),
        "head.query_embed.weight": (1.0, 0.125),
        "head.bg_feature": (1.0, 0.5),
        "head.swin.relative_position_bias_table": (1.0, 0.0),
        "head.sampling_offsets.weight": (0.1, 0.5), "head.sampling_offsets.bias": (0.1, 0.5),
        "backbone_semantic_query.weight": (1.0 * 0.1 * 0.5, 0.5),
        "backbone_semantic_query.bias": (1.0 * 0.1 * 0.5, 0.5),
    }
    assert got.keys() == want.keys()  # no frozen, no FrozenBN, the tied weight once
    for name, (lr, decay) in want.items():
        assert got[name] == (pytest.approx(lr), pytest.approx(decay)), name
    # official order: named_modules(), then each module's own parameters
    assert [g["params"][0][0] for g in groups][:4] == [
        "backbone.0.weight", "backbone.0.bias", "backbone.1.weight", "backbone.1.bias"]


def test_optimizer_is_adamw_with_the_groups_and_keeps_names():
    opt = build_optimizer(Toy(), _cfg())
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.param_groups[0]["param_names"] == ["backbone.0.weight"]
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4 * 0.1)
    assert opt.param_groups[0]["betas"] == (0.9, 0.999) and opt.param_groups[0]["eps"] == 1e-8
    assert len(optimizer_parameters(opt)) == 17
    sgd = build_optimizer(Toy(), _cfg(OPTIMIZER="SGD"))
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.9
    with pytest.raises(ConfigError, match="ADAMW or SGD"):
        build_optimizer(Toy(), _cfg(OPTIMIZER="LAMB"))
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameter"):
        build_optimizer(frozen, _cfg())


def test_project_model_groups():
    """On the project's tiny ZegFormer made trainable like the training model (the logit scale
    stays fixed): every trainable parameter in exactly one group; the backbone at BASE_LR x 0.1;
    the queries, GroupNorm and LayerNorm parameters without weight decay, the rest 1e-4."""
    from zegformer.loading.build import build_model
    from zegformer.training.forward import prepare_for_training

    model = prepare_for_training(build_model("tiny"))
    assert not model.sem_seg_head.predictor.logit_scale.requires_grad
    groups = {g["params"][0][0]: g for g in build_param_groups(model, _cfg())}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert list(groups) == trainable  # named_modules order = named_parameters order here
    for name, g in groups.items():
        assert g["lr"] == pytest.approx(1e-5 if name.startswith("backbone.") else 1e-4), name
        no_decay = ".norm" in name or "query_embed" in name
        assert g["weight_decay"] == (0.0 if no_decay else pytest.approx(1e-4)), name
    assert "sem_seg_head.predictor.transformer.decoder.norm.weight" in groups
    assert groups["sem_seg_head.predictor.bg_feature"]["weight_decay"] == pytest.approx(1e-4)


# ---------------------------------------------------------------- schedule


def _lrs(cfg, iterations):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.SOLVER.BASE_LR)
    sched = build_lr_scheduler(cfg, opt)
    out, done = {}, 0
    for it in range(max(iterations) + 1):
        if it in iterations:
            out[it] = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
        done += 1
    return out


def test_poly_curve_of_the_shipped_config():
    cfg = _cfg(MAX_ITER=1000)
    got = _lrs(cfg, [0, 1, 10, 500, 999])
    for it, lr in got.items():
        assert lr == pytest.approx(1e-4 * (1 - it / 1000) ** 0.9, rel=1e-12), it


def test_linear_and_constant_warmup_and_constant_ending():
    lin = _lrs(_cfg(MAX_ITER=100, WARMUP_ITERS=10, WARMUP_FACTOR=0.01), [0, 5, 10, 50])
    for it, lr in lin.items():
        warm = 0.01 * (1 - it / 10) + it / 10 if it < 10 else 1.0
        assert lr == pytest.approx(1e-4 * warm * (1 - it / 100) ** 0.9, rel=1e-12), it
    const = _lrs(_cfg(MAX_ITER=100, WARMUP_ITERS=10, WARMUP_FACTOR=0.01,
                      WARMUP_METHOD="constant"), [0, 9, 10])
    assert const[0] == pytest.approx(1e-6) and const[9] == pytest.approx(1e-6 * 0.91 ** 0.9)
    assert const[10] == pytest.approx(1e-4 * 0.9 ** 0.9)
    ending = _lrs(_cfg(MAX_ITER=100, POLY_LR_CONSTANT_ENDING=0.2), [50, 90, 99])
    assert ending[50] == pytest.approx(1e-4 * 0.5 ** 0.9)  # 0.536 > 0.2
    assert ending[90] == pytest.approx(1e-4 * 0.2) and ending[99] == pytest.approx(1e-4 * 0.2)


def test_schedule_scales_every_group_and_resumes_from_its_state():
    cfg = _cfg(MAX_ITER=20)
    opt = build_optimizer(Toy(), cfg)
    sched = build_lr_scheduler(cfg, opt)
    for _ in range(7):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5 * (1 - 7 / 20) ** 0.9)
    assert opt.param_groups[4]["lr"] == pytest.approx(1e-4 * (1 - 7 / 20) ** 0.9)
    state = sched.state_dict()
    opt2 = build_optimizer(Toy(), cfg)
    opt2.load_state_dict(opt.state_dict())
    sched2 = build_lr_scheduler(cfg, opt2)
    sched2.load_state_dict(state)
    for _ in range(3):
        opt.step(), sched.step(), opt2.step(), sched2.step()
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in opt2.param_groups]
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5 * (1 - 10 / 20) ** 0.9)
    for _ in range(15):  # past MAX_ITER: held at the end value instead of a math error
        opt.step(), sched.step()
    assert opt.param_groups[0]["lr"] == 0.0


def test_bad_schedule_settings():
    with pytest.raises(ConfigError, match="WarmupPolyLR"):
        build_lr_scheduler(_cfg(LR_SCHEDULER_NAME="WarmupCosineLR"), build_optimizer(Toy(), _cfg()))
    with pytest.raises(ConfigError, match="WARMUP_METHOD"):
        build_lr_scheduler(_cfg(WARMUP_METHOD="exp"), build_optimizer(Toy(), _cfg()))
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ConfigError, match="MAX_ITER"):
        WarmupPolyLR(opt, 0, warmup_factor=1.0, warmup_iters=0, warmup_method="linear",
                     power=0.9, constant_ending=0.0)


# ---------------------------------------------------------------- clipping


def _params_with_grads(*grads):
    params = [nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    return params


def test_full_model_clipping_caps_the_joint_l2_norm():
    cfg = _cfg()  # full_model, 0.01, L2
    params = _params_with_grads(torch.tensor([3.0, 0.0]), torch.tensor([[0.0, 4.0]]))
    total = clip_gradients(cfg, params)
    assert total.item() == pytest.approx(5.0)
    joint = torch.cat([p.grad.flatten() for p in params]).norm()
    assert joint.item() == pytest.approx(0.01, rel=1e-4)
    assert params[0].grad[0].item() == pytest.approx(0.006, rel=1e-4)  # direction kept
    small = _params_with_grads(torch.tensor([0.003, 0.004]))
    clip_gradients(cfg, small)
    assert torch.equal(small[0].grad, torch.tensor([0.003, 0.004]))  # under the cap: untouched


def test_other_clip_types_and_disabled():
    def with_clip(**kw):
        cfg = _cfg()
        cfg.SOLVER.CLIP_GRADIENTS.update(kw)
        return cfg

    p = _params_with_grads(torch.tensor([3.0, -4.0]), torch.tensor([0.5]))
    assert clip_gradients(with_clip(CLIP_TYPE="value", CLIP_VALUE=1.0), p) is None
    assert p[0].grad.tolist() == [1.0, -1.0] and p[1].grad.tolist() == [0.5]
    p = _params_with_grads(torch.tensor([3.0, -4.0]), torch.tensor([0.5]))
    clip_gradients(with_clip(CLIP_TYPE="norm", CLIP_VALUE=1.0), p)  # each parameter alone
    assert p[0].grad.norm().item() == pytest.approx(1.0, rel=1e-4)
    assert p[1].grad.tolist() == [0.5]
    for off in (with_clip(ENABLED=False), with_clip(CLIP_VALUE=0.0)):
        p = _params_with_grads(torch.tensor([3.0, -4.0]))
        assert not gradient_clipping_enabled(off) and clip_gradients(off, p) is None
        assert p[0].grad.tolist() == [3.0, -4.0]
    with pytest.raises(ConfigError, match="CLIP_TYPE"):
        clip_gradients(with_clip(CLIP_TYPE="global"), p)


def test_clipping_after_amp_unscale_equals_clipping_unscaled_gradients():
    torch.manual_seed(0)
    model = nn.Linear(8, 3)
    ref = nn.Linear(8, 3)
    ref.load_state_dict(model.state_dict())
    x = torch.randn(4, 8)
    cfg = _cfg()
    opt = build_optimizer(model, cfg)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(model(x).square().sum()).backward()
    scaler.unscale_(opt)
    clip_gradients(cfg, optimizer_parameters(opt))
    ref(x).square().sum().backward()
    clip_gradients(cfg, ref.parameters())
    for a, b in zip(model.parameters(), ref.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-9)


# ---------------------------------------------------------------- shipped configs


def test_r101_training_config_gives_the_official_solver():
    s = load_config(R101).SOLVER
    assert (s.OPTIMIZER, s.BASE_LR, s.WEIGHT_DECAY, s.WEIGHT_DECAY_NORM, s.WEIGHT_DECAY_EMBED,
            s.BACKBONE_MULTIPLIER) == ("ADAMW", 0.0001, 0.0001, 0.0, 0.0, 0.1)
    assert (s.LR_SCHEDULER_NAME, s.MAX_ITER, s.WARMUP_FACTOR, s.WARMUP_ITERS, s.WARMUP_METHOD,
            s.POLY_LR_POWER, s.POLY_LR_CONSTANT_ENDING) == (
        "WarmupPolyLR", 60000, 1.0, 0, "linear", 0.9, 0.0)
    c = s.CLIP_GRADIENTS
    assert (c.ENABLED, c.CLIP_TYPE, c.CLIP_VALUE, c.NORM_TYPE) == (True, "full_model", 0.01, 2.0)
    assert (s.AMP.ENABLED, s.IMS_PER_BATCH, s.CHECKPOINT_PERIOD) == (True, 32, 1000)
    cfg = load_config(R101, ["SOLVER.MAX_ITER", "2000", "SOLVER.BASE_LR", "0.0002"])
    assert cfg.SOLVER.MAX_ITER == 2000 and cfg.SOLVER.BASE_LR == 0.0002


@pytest.mark.parametrize("name", [n for n in list_configs() if "eval" not in n and "/" in n])
def test_every_shipped_training_config_builds_optimizer_and_schedule(name):
    cfg = load_config(name)
    opt = build_optimizer(Toy(), cfg)
    sched = build_lr_scheduler(cfg, opt)
    assert sched.get_last_lr()[4] == pytest.approx(cfg.SOLVER.BASE_LR)
    assert gradient_clipping_enabled(cfg)
    assert math.isclose(cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE, 0.01)


def test_one_official_step_on_the_tiny_model():
    """forward -> SetCriterion -> backward -> clip (full model, 0.01) -> AdamW -> WarmupPolyLR on
    the project's tiny ZegFormer: the pieces fit, the clip caps the norm, the step moves."""
    from zegformer.loading.build import build_model
    from zegformer.training.criterion import SetCriterion
    from zegformer.training.forward import prepare_for_training, training_outputs

    torch.manual_seed(0)
    cfg = load_config("tiny", ["SOLVER.MAX_ITER", "10"])
    model = prepare_for_training(build_model("tiny"))
    text = nn.functional.normalize(torch.randn(3, cfg.MODEL.SEM_SEG_HEAD.CLIP_EMBED_DIM), dim=-1)
    images = torch.randn(2, 3, 64, 64)
    masks = torch.zeros(2, 2, 64, 64, dtype=torch.bool)
    masks[:, 0, :32], masks[:, 1, 32:] = True, True
    targets = [{"labels": torch.tensor([0, 2]), "masks": masks[0]},
               {"labels": torch.tensor([1]), "masks": masks[1, :1]}]
    criterion = SetCriterion(3, dec_layers=cfg.MODEL.MASK_FORMER.DEC_LAYERS)
    opt = build_optimizer(model, cfg)
    sched = build_lr_scheduler(cfg, opt)
    losses = criterion(training_outputs(model, images, text), targets)
    assert sorted(losses) == sorted(criterion.weight_dict)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    norm = clip_gradients(cfg, optimizer_parameters(opt))
    assert norm is not None and norm.item() > 0.01
    clipped = torch.cat([p.grad.flatten() for p in optimizer_parameters(opt) if p.grad is not None])
    assert clipped.norm().item() == pytest.approx(0.01, rel=1e-3)
    opt.step()
    sched.step()
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert "sem_seg_head.predictor.query_embed.weight" in moved
    assert "sem_seg_head.predictor.logit_scale" not in moved
    assert opt.param_groups[-1]["lr"] == pytest.approx(cfg.SOLVER.BASE_LR * 0.9 ** 0.9)

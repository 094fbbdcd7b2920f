"""Optimiser and gradient clipping as the official ZegFormer `train_net.py` builds them.

Parameter groups (`build_param_groups`), one group per trainable parameter, in the order of
`model.named_modules()` then `module.named_parameters(recurse=False)` (a parameter shared by
several modules counts once, for the first), each with:

- lr = SOLVER.BASE_LR, times SOLVER.BACKBONE_MULTIPLIER (0.1) when the module's name contains
  "backbone"; times 0.1 when it contains "reference_points" or "sampling_offsets" (deformable
  DETR, fixed factor in the official code); times MODEL.MASK_FORMER.SEMANTIC_QUERY_MULTIPLIER
  when it contains "semantic_query". The factors multiply.
- weight_decay = SOLVER.WEIGHT_DECAY, then, the later rule winning: 0.0 for a parameter named
  like "relative_position_bias_table" / "absolute_pos_embed" (Swin), SOLVER.WEIGHT_DECAY_NORM
  for parameters of normalisation layers (BatchNorm*, SyncBatchNorm, GroupNorm, InstanceNorm*,
  LayerNorm, LocalResponseNorm; FrozenBatchNorm has buffers only), SOLVER.WEIGHT_DECAY_EMBED for
  nn.Embedding weights (the learned queries). Biases get the default decay, as officially.

Parameters with requires_grad False (e.g. a frozen CLIP, the fixed logit scale) are left out.
SOLVER.OPTIMIZER "ADAMW": torch AdamW (betas 0.9/0.999, eps 1e-8); "SGD": momentum
SOLVER.MOMENTUM.

Gradient clipping (`clip_gradients`), called by the training loop between `backward()` and
`optimizer.step()` (the official code does it inside `step`). Under AMP call
`scaler.unscale_(optimizer)` first, so the norm is that of the true gradients (detectron2's
AMPTrainer gets the same through GradScaler.step, which unscales before step).
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import Tensor, nn

from ..loading.config import CfgNode
from ..errors import ConfigError

NORM_MODULE_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm, nn.LocalResponseNorm,
)
NO_DECAY_PARAM_NAMES = ("relative_position_bias_table", "absolute_pos_embed")  # Swin tables
DEFORMABLE_MODULE_NAMES = ("reference_points", "sampling_offsets")
DEFORMABLE_LR_FACTOR = 0.1  # hard-coded in the official build_optimizer
CLIP_TYPES = ("full_model", "value", "norm")


def build_param_groups(model: nn.Module, cfg: CfgNode) -> list[dict[str, Any]]:
    """One optimiser group per trainable parameter, with the official LR and weight decay.

    Args:
        model: the model (its backbone under a module whose name contains "backbone").
        cfg: config with SOLVER.{BASE_LR, WEIGHT_DECAY, WEIGHT_DECAY_NORM, WEIGHT_DECAY_EMBED,
            BACKBONE_MULTIPLIER} and MODEL.MASK_FORMER.SEMANTIC_QUERY_MULTIPLIER.
    Returns:
        [{"params": [(name, parameter)], "lr": float, "weight_decay": float}, ...] in the
        official order; torch stores the name under the group's "param_names".
    """
    solver = cfg.SOLVER
    groups: list[dict[str, Any]] = []
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            lr = solver.BASE_LR
            decay = solver.WEIGHT_DECAY
            if "backbone" in module_name:
                lr = lr * solver.BACKBONE_MULTIPLIER
            if any(n in module_name for n in DEFORMABLE_MODULE_NAMES):
                lr = lr * DEFORMABLE_LR_FACTOR
            if "semantic_query" in module_name:
                lr = lr * cfg.MODEL.MASK_FORMER.SEMANTIC_QUERY_MULTIPLIER
            if any(n in param_name for n in NO_DECAY_PARAM_NAMES):
                decay = 0.0
            if isinstance(module, NORM_MODULE_TYPES):
                decay = solver.WEIGHT_DECAY_NORM
            if isinstance(module, nn.Embedding):
                decay = solver.WEIGHT_DECAY_EMBED
            full_name = f"{module_name}.{param_name}" if module_name else param_name
            groups.append({"params": [(full_name, param)], "lr": lr, "weight_decay": decay})
    if not groups:
        raise ConfigError("the model has no trainable parameter (all have requires_grad False)")
    return groups


def build_optimizer(model: nn.Module, cfg: CfgNode) -> torch.optim.Optimizer:
    """SOLVER.OPTIMIZER ("ADAMW" or "SGD") over `build_param_groups(model, cfg)`.

    Gradient clipping is not folded into the optimiser: call `clip_gradients` before `step()`.
    """
    groups = build_param_groups(model, cfg)
    name = str(cfg.SOLVER.OPTIMIZER).upper()
    if name == "ADAMW":
        return torch.optim.AdamW(groups, lr=cfg.SOLVER.BASE_LR)
    if name == "SGD":
        return torch.optim.SGD(groups, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM)
    raise ConfigError(f"SOLVER.OPTIMIZER must be ADAMW or SGD, got {cfg.SOLVER.OPTIMIZER!r}")


def _clip_settings(cfg: CfgNode) -> CfgNode | None:
    """SOLVER.CLIP_GRADIENTS when clipping is on (checked), else None."""
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if clip.CLIP_TYPE not in CLIP_TYPES:
        raise ConfigError(
            f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE must be one of {CLIP_TYPES}, got {clip.CLIP_TYPE!r}")
    if not clip.ENABLED:
        return None
    if clip.CLIP_TYPE == "full_model" and not clip.CLIP_VALUE > 0.0:
        return None  # the official code skips full-model clipping at CLIP_VALUE <= 0
    return clip


def gradient_clipping_enabled(cfg: CfgNode) -> bool:
    """Whether `clip_gradients` does anything with this config (e.g. to skip an AMP unscale)."""
    return _clip_settings(cfg) is not None


def clip_gradients(cfg: CfgNode, parameters: Iterable[Tensor]) -> Tensor | None:
    """Clip gradients in place as SOLVER.CLIP_GRADIENTS says.

    - "full_model": scale all gradients together so that their joint NORM_TYPE-norm (the L2
      norm for the shipped configs: NORM_TYPE 2.0) is at most CLIP_VALUE (0.01). (The official
      code calls clip_grad_norm_ with its default L2 norm and never reads NORM_TYPE here; the
      two agree for NORM_TYPE 2.)
    - "norm": the same, but each parameter on its own (detectron2's per-parameter clipping).
    - "value": clamp every gradient entry to [-CLIP_VALUE, CLIP_VALUE].

    Args:
        cfg: config with SOLVER.CLIP_GRADIENTS.{ENABLED, CLIP_TYPE, CLIP_VALUE, NORM_TYPE}.
        parameters: the trainable parameters (e.g. the optimiser's), gradients UNSCALED.
    Returns:
        For "full_model", the total norm before clipping (a 0-dim tensor); otherwise None
        (also when clipping is disabled).
    """
    clip = _clip_settings(cfg)
    params = [p for p in parameters if p.grad is not None]
    if clip is None or not params:
        return None
    if clip.CLIP_TYPE == "full_model":
        return torch.nn.utils.clip_grad_norm_(params, clip.CLIP_VALUE, norm_type=clip.NORM_TYPE)
    for p in params:
        if clip.CLIP_TYPE == "norm":
            torch.nn.utils.clip_grad_norm_(p, clip.CLIP_VALUE, norm_type=clip.NORM_TYPE)
        else:
            torch.nn.utils.clip_grad_value_(p, clip.CLIP_VALUE)
    return None


def optimizer_parameters(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    """Every parameter of an optimiser, group by group (what the official clipping clips)."""
    return [p for group in optimizer.param_groups for p in group["params"]]

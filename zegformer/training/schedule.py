"""Learning-rate schedule of the official configs: detectron2 DeepLab's `WarmupPolyLR`.

Per iteration i (the scheduler is stepped once after every optimiser step; i = 0 for the first
iteration), for each parameter group with initial LR `base_lr`:

    warmup(i) = 1                                    if i >= WARMUP_ITERS
              = WARMUP_FACTOR                        "constant" method
              = WARMUP_FACTOR * (1 - a) + a,  a = i / WARMUP_ITERS      "linear" method
    poly(i)   = (1 - i / MAX_ITER) ** POLY_LR_POWER
    lr(i)     = base_lr * CONSTANT_ENDING            if CONSTANT_ENDING > 0, warmup(i) == 1
                                                     and poly(i) < CONSTANT_ENDING
              = base_lr * warmup(i) * poly(i)        otherwise

The shipped configs use WARMUP_ITERS 0 (no warm-up), POLY_LR_POWER 0.9, CONSTANT_ENDING 0, so
lr(i) = BASE_LR * (1 - i / MAX_ITER) ** 0.9 (x 0.1 for the backbone groups). Past MAX_ITER the
official code fails (power of a negative number); here i is clamped at MAX_ITER (lr 0).
"""
from __future__ import annotations

import math

import torch

from ..loading.config import CfgNode
from ..errors import ConfigError

WARMUP_METHODS = ("linear", "constant")


def warmup_factor_at_iter(method: str, iteration: int, warmup_iters: int,
                          warmup_factor: float) -> float:
    """The LR multiplier of warm-up at `iteration` (1.0 once `iteration >= warmup_iters`)."""
    if iteration >= warmup_iters:
        return 1.0
    if method == "constant":
        return warmup_factor
    if method == "linear":
        alpha = iteration / warmup_iters
        return warmup_factor * (1 - alpha) + alpha
    raise ConfigError(f"SOLVER.WARMUP_METHOD must be one of {WARMUP_METHODS}, got {method!r}")


def warmup_poly_lr(base_lr: float, iteration: int, *, max_iters: int, warmup_factor: float,
                   warmup_iters: int, warmup_method: str, power: float,
                   constant_ending: float) -> float:
    """The WarmupPolyLR learning rate at `iteration` of a group whose base LR is `base_lr`
    (see the module docstring; products in the official order, for bitwise equality)."""
    iteration = min(iteration, max_iters)
    warmup = warmup_factor_at_iter(warmup_method, iteration, warmup_iters, warmup_factor)
    poly = math.pow(1.0 - iteration / max_iters, power)
    if constant_ending > 0 and warmup == 1.0 and poly < constant_ending:
        return base_lr * constant_ending
    return base_lr * warmup * poly


class WarmupPolyLR(torch.optim.lr_scheduler.LRScheduler):
    """Poly decay with optional warm-up, stepped per iteration (`scheduler.step()` after each
    `optimizer.step()`). Its state (`last_epoch` = iterations done) is in `state_dict()`.

    Args:
        optimizer: the optimiser; each group's initial "lr" is its base LR.
        max_iters: SOLVER.MAX_ITER.
        warmup_factor, warmup_iters, warmup_method: SOLVER.WARMUP_{FACTOR, ITERS, METHOD}.
        power: SOLVER.POLY_LR_POWER.
        constant_ending: SOLVER.POLY_LR_CONSTANT_ENDING (0 = off).
        last_epoch: -1 for a new schedule.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, max_iters: int, *, warmup_factor: float,
                 warmup_iters: int, warmup_method: str, power: float, constant_ending: float,
                 last_epoch: int = -1) -> None:
        if max_iters <= 0:
            raise ConfigError(f"SOLVER.MAX_ITER must be positive, got {max_iters}")
        if warmup_method not in WARMUP_METHODS:
            raise ConfigError(
                f"SOLVER.WARMUP_METHOD must be one of {WARMUP_METHODS}, got {warmup_method!r}")
        self.max_iters = max_iters
        self.warmup_factor = warmup_factor
        self.warmup_iters = warmup_iters
        self.warmup_method = warmup_method
        self.power = power
        self.constant_ending = constant_ending
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr: float, iteration: int) -> float:
        """The learning rate at `iteration` of a group with base LR `base_lr`."""
        return warmup_poly_lr(
            base_lr, iteration, max_iters=self.max_iters, warmup_factor=self.warmup_factor,
            warmup_iters=self.warmup_iters, warmup_method=self.warmup_method, power=self.power,
            constant_ending=self.constant_ending)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        return [self.lr_at(float(base_lr), self.last_epoch) for base_lr in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()


def build_lr_scheduler(cfg: CfgNode, optimizer: torch.optim.Optimizer) -> WarmupPolyLR:
    """The scheduler SOLVER.LR_SCHEDULER_NAME names; only "WarmupPolyLR" (every shipped
    ZegFormer training config) is implemented.

    Args:
        cfg: config with SOLVER.{LR_SCHEDULER_NAME, MAX_ITER, WARMUP_FACTOR, WARMUP_ITERS,
            WARMUP_METHOD, POLY_LR_POWER, POLY_LR_CONSTANT_ENDING}.
        optimizer: e.g. from `build_optimizer`; build the scheduler right after it (the
            scheduler records each group's current "lr" as its base LR).
    """
    solver = cfg.SOLVER
    if solver.LR_SCHEDULER_NAME != "WarmupPolyLR":
        raise ConfigError(
            f"SOLVER.LR_SCHEDULER_NAME {solver.LR_SCHEDULER_NAME!r} is not supported; only "
            "'WarmupPolyLR' (the schedule of the ZegFormer configs) is implemented")
    return WarmupPolyLR(
        optimizer, solver.MAX_ITER, warmup_factor=solver.WARMUP_FACTOR,
        warmup_iters=solver.WARMUP_ITERS, warmup_method=solver.WARMUP_METHOD,
        power=solver.POLY_LR_POWER, constant_ending=solver.POLY_LR_CONSTANT_ENDING)

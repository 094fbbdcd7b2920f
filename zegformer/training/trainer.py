"""The training loop: the official ZegFormer recipe on one process or many (torchrun / --num-gpus).

One step (see docs/ARCHITECTURE.md): a batch from `data.training_set` / `data.loader` ->
normalise and pad -> `ZegFormer.forward` with the frozen training-class text embeddings (deep
supervision) -> `SetCriterion` -> backward (AMP on CUDA when SOLVER.AMP.ENABLED, gradient
accumulation when asked) -> full-model gradient clipping -> AdamW -> WarmupPolyLR.
"""
from __future__ import annotations

import copy
import functools
import logging
import math
import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.catalog import dataset_names, training_data
from ..data.loader import collate_semantic
from ..data.training_set import EpochSampler, TrainingData
from ..data.transforms import AugmentationSettings, SemanticTrainMapper
from ..data.vocabularies import class_list_for_official_path
from ..evaluation.distributed import DistInfo
from ..loading.build import build_model
from ..loading.clip import get_tokenizer
from ..loading.config import CfgNode
from ..loading.factory import load_clip
from ..loading.settings import settings_from_config
from ..text import TextEmbedder
from .checkpointer import (TrainingError, checkpoint_name, existing_checkpoints, initialize_weights,
                           last_checkpoint, model_state, read_training_checkpoint,
                           save_training_checkpoint)
from .config_io import dump_config
from .criterion import SetCriterion
from .forward import prepare_for_training, training_outputs
from .metrics import MetricsWriter, peak_memory_mb
from .optimizer import build_optimizer, clip_gradients, optimizer_parameters
from .schedule import build_lr_scheduler

log = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    """The command line's choices that are not config keys."""

    resume: bool = False
    grad_accum: int = 1  # micro-batches per optimiser step (per process)
    clip_weights: str | None = None  # CLIP file for the text tower (and evaluation)
    device: str | None = None
    log_period: int = 20
    eval_max_images: int | None = None
    progress: bool = True
    trust_pickle: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Trainer:
    """Builds everything the config describes, then `train()` runs SOLVER.MAX_ITER iterations."""

    def __init__(self, cfg: CfgNode, opts: TrainOptions, info: DistInfo) -> None:
        self.cfg, self.opts, self.info = cfg, opts, info
        self.device = torch.device(opts.device or (f"cuda:{info.local_rank}"
                                                   if torch.cuda.is_available() else "cpu"))
        self.out = Path(cfg.OUTPUT_DIR)
        self.seed = max(int(cfg.get("SEED", -1)), 0)
        torch.manual_seed(self.seed + info.rank)
        self.settings = settings_from_config(cfg)
        s = self.settings
        self.data = self._training_data()
        self.classes = self.data.classes
        self.model = prepare_for_training(build_model(s)).to(self.device)
        self.clip, self.clip_id = load_clip(s.clip_name, opts.clip_weights)
        self.clip.to(self.device)
        embed = TextEmbedder(self.clip.encode_text, get_tokenizer(s.clip_name), self.clip_id,
                             self.device)
        with torch.no_grad():
            self.text = embed(self.classes, s.prompt_ensemble_type).to(self.device).detach()
        self.text_embedder = embed
        self.criterion = SetCriterion(len(self.classes), dec_layers=s.dec_layers).to(self.device)
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_lr_scheduler(cfg, self.optimizer)
        self.amp = bool(cfg.SOLVER.AMP.ENABLED) and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)
        self.iteration = 0
        self._start(opts)
        self.ddp: nn.Module = self.model
        if info.distributed:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.micro_batch = self._micro_batch()
        self.writer = MetricsWriter(self.out, enabled=info.is_main)

    # ------------------------------------------------------------------ set-up

    def _training_data(self) -> TrainingData:
        names = dataset_names(self.cfg.DATASETS.TRAIN)
        if len(names) != 1:
            raise TrainingError(f"DATASETS.TRAIN must name one dataset, got {names}")
        official = list(class_list_for_official_path(self.settings.train_class_json)) \
            if not str(names[0]).startswith("folder:") else []
        data = training_data(str(names[0]), official, str(self.cfg.DATASETS.get("ROOT", "")))
        n_cfg = int(self.cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
        if official and len(data.classes) != n_cfg:
            raise TrainingError(f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is {n_cfg} but the training "
                                f"class list has {len(data.classes)} classes")
        self.cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = len(data.classes)  # saved with the run
        return data

    def _micro_batch(self) -> int:
        total = int(self.cfg.SOLVER.IMS_PER_BATCH)
        parts = self.info.world_size * self.opts.grad_accum
        if total % parts:
            raise TrainingError(f"SOLVER.IMS_PER_BATCH {total} cannot be split over "
                                f"{self.info.world_size} processes x {self.opts.grad_accum} "
                                "accumulation steps")
        return total // parts

    def _start(self, opts: TrainOptions) -> None:
        """--resume: continue from last_checkpoint; else MODEL.WEIGHTS initialises."""
        last = last_checkpoint(self.out)
        if opts.resume and last is not None:
            self.load_state(read_training_checkpoint(last))
            log.info("resumed from %s at iteration %d", last, self.iteration)
            return
        if not opts.resume and existing_checkpoints(self.out):
            found = ", ".join(p.name for p in existing_checkpoints(self.out)[:3])
            raise TrainingError(f"OUTPUT_DIR {self.out} holds checkpoints of another run "
                                f"({found}): pass --resume to continue it, or choose another "
                                "OUTPUT_DIR")
        weights = str(self.cfg.MODEL.WEIGHTS or "")
        if weights and "://" not in weights:
            summary = initialize_weights(self.model, weights, trust_pickle=opts.trust_pickle)
            if self.info.is_main:
                print(summary, flush=True)
        elif weights:
            log.warning("MODEL.WEIGHTS %s is a URL: not downloaded; the backbone starts random",
                        weights)
        prepare_for_training(self.model)

    def state(self) -> dict[str, Any]:
        return {
            "model": model_state(self.model, self.criterion),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iteration": self.iteration,
            "classes": list(self.classes),
            "config": dump_config(self.cfg),
            "rng": torch.get_rng_state(),
        }

    def load_state(self, ckpt: dict[str, Any]) -> None:
        if list(ckpt.get("classes", self.classes)) != list(self.classes):
            raise TrainingError(
                f"the checkpoint was trained on {len(ckpt['classes'])} other classes "
                f"({ckpt['classes'][:3]}...) than this run's {len(self.classes)} "
                f"({self.classes[:3]}...): resume with the same DATASETS.TRAIN")
        sd = {k: v for k, v in ckpt["model"].items() if not k.startswith("criterion.")}
        self.model.load_state_dict(sd, strict=True)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.iteration = int(ckpt["iteration"])
        if "rng" in ckpt and self.info.world_size == 1:
            torch.set_rng_state(ckpt["rng"])

    def loader(self) -> torch.utils.data.DataLoader:
        settings = AugmentationSettings.from_config(self.cfg, self.data.ignore_label)
        dataset = self.data.dataset(SemanticTrainMapper(settings, self.seed))
        sampler = EpochSampler(len(dataset), seed=self.seed, rank=self.info.rank,
                               world_size=self.info.world_size,
                               start=self.iteration * self.micro_batch * self.opts.grad_accum)
        workers = int(self.cfg.DATALOADER.NUM_WORKERS)
        return torch.utils.data.DataLoader(
            dataset, batch_size=self.micro_batch, sampler=sampler, num_workers=workers,
            collate_fn=functools.partial(collate_semantic, size_divisibility=0, pad_value=128,
                                         ignore_label=self.data.ignore_label),
            persistent_workers=workers > 0)

    # ------------------------------------------------------------------ one step

    def batch_to_device(self, batch: dict[str, Any]) -> tuple[torch.Tensor, list[dict]]:
        """Normalise with PIXEL_MEAN/STD and zero-pad to MASK_FORMER.SIZE_DIVISIBILITY (the
        official `ImageList.from_tensors`); target masks padded to the same size."""
        s = self.settings
        x = batch["images"].to(self.device).float()
        mean = torch.tensor(s.pixel_mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(s.pixel_std, device=self.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        for i, (h, w) in enumerate(batch["image_sizes"]):
            x[i, :, h:, :] = 0
            x[i, :, :, w:] = 0
        div = max(s.size_divisibility, 1)
        ph, pw = (-x.shape[-2]) % div, (-x.shape[-1]) % div
        x = nn.functional.pad(x, (0, pw, 0, ph))
        targets = []
        for inst in batch["instances"]:
            masks = nn.functional.pad(inst["masks"], (0, pw, 0, ph)).to(self.device)
            targets.append({"labels": inst["labels"].to(self.device), "masks": masks})
        return x, targets

    def step(self, batches: list[dict[str, Any]]) -> dict[str, float]:
        """One optimiser step over `grad_accum` micro-batches; returns the logged losses."""
        self.ddp.train()
        totals: dict[str, float] = {}
        for k, batch in enumerate(batches):
            images, targets = self.batch_to_device(batch)
            last = k == len(batches) - 1
            sync = nullcontext() if last or not self.info.distributed else self.ddp.no_sync()
            autocast = torch.autocast(self.device.type, enabled=self.amp)
            with sync:
                with autocast:
                    outputs = training_outputs(self.ddp, images, self.text)
                    losses = self.criterion(outputs, targets)
                total = sum(losses.values())
                self.scaler.scale(total / len(batches)).backward()
            for name, v in losses.items():
                totals[name] = totals.get(name, 0.0) + float(v.detach()) / len(batches)
        totals["total_loss"] = sum(v for k, v in totals.items() if k.startswith("loss_"))
        if not math.isfinite(totals["total_loss"]):
            self.optimizer.zero_grad(set_to_none=True)
            last_ckpt = last_checkpoint(self.out)
            raise TrainingError(
                f"the loss is {totals['total_loss']} at iteration {self.iteration + 1}: training "
                f"stopped; the last good checkpoint is {last_ckpt or 'none (none was written yet)'}")
        if self.amp:
            self.scaler.unscale_(self.optimizer)
        clip_gradients(self.cfg, optimizer_parameters(self.optimizer))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.iteration += 1
        return totals

    # ------------------------------------------------------------------ the loop

    def train(self) -> None:
        cfg, info = self.cfg, self.info
        max_iter = int(cfg.SOLVER.MAX_ITER)
        period = int(cfg.SOLVER.CHECKPOINT_PERIOD)
        eval_period = int(cfg.get("TEST", {}).get("EVAL_PERIOD", 0))
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
        from tqdm.auto import tqdm

        bar = tqdm(total=max_iter, initial=self.iteration, desc="train", unit="it",
                   dynamic_ncols=True, disable=not (self.opts.progress and info.is_main))
        data = iter(self.loader())
        try:
            while self.iteration < max_iter:
                t0 = time.perf_counter()
                batches = [next(data) for _ in range(self.opts.grad_accum)]
                t1 = time.perf_counter()
                losses = self.step(batches)
                it = self.iteration
                bar.update(1)
                bar.set_postfix(loss=f"{losses['total_loss']:.3f}")
                if it % self.opts.log_period == 0 or it == max_iter:
                    self._log(it, losses, time.perf_counter() - t0, t1 - t0)
                if period > 0 and it % period == 0 and it < max_iter:
                    self.save(checkpoint_name(it))
                if eval_period > 0 and it % eval_period == 0 and it < max_iter:
                    self.evaluate(f"iter_{it:07d}")
            self.save(checkpoint_name(max_iter, final=True))
            bar.close()
            self.evaluate("final")
        finally:
            bar.close()
            self.writer.close()

    def _log(self, it: int, losses: dict[str, float], step_time: float, data_time: float) -> None:
        lrs = [g["lr"] for g in self.optimizer.param_groups]
        record = {"iteration": it, **{k: round(v, 6) for k, v in losses.items()},
                  "lr": statistics.mode(lrs), "time": round(step_time, 4),
                  "data_time": round(data_time, 4),
                  "peak_memory_mb": round(peak_memory_mb(self.device), 1)}
        self.writer.write(record)

    def save(self, name: str) -> None:
        if self.info.is_main:
            save_training_checkpoint(self.out, name, self.state())
        if self.info.distributed:
            torch.distributed.barrier()

    def evaluate(self, tag: str) -> list[dict[str, Any]]:
        """The evaluation of `zegformer.evaluation` on DATASETS.TEST with the current weights."""
        from .evaluate import evaluate_model

        results = evaluate_model(self, tag)
        for r in results:
            strict = r.get("standard", {}).get("strict", {}) if r else {}
            if self.info.is_main and strict:
                self.writer.write_eval(self.iteration, {
                    k: v for k, v in strict.items() if k.endswith(("mIoU", "hIoU"))})
        return results

    def eval_model(self) -> nn.Module:
        """A copy of the model in eval mode (training continues on the original)."""
        return copy.deepcopy(self.model).eval()

"""Evaluation during and after training, and `--eval-only`: `zegformer.evaluation` on
DATASETS.TEST, results under OUTPUT_DIR/eval/<tag>/<dataset>/ (the same files as
`python -m zegformer.evaluate`)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..data.catalog import dataset_names, evaluation_dataset
from ..evaluation.runner import EvalOptions, run_evaluation
from ..inference.predictor import Predictor
from ..loading.clip import get_tokenizer
from ..loading.config import CfgNode
from ..modeling.clip_adapter import ClipAdapter

if TYPE_CHECKING:
    from .trainer import Trainer

log = logging.getLogger(__name__)


def evaluate_predictor(predictor: Predictor, cfg: CfgNode, tag: str, *,
                       max_images: int | None = None, progress: bool = True,
                       tta: bool = False) -> list[dict[str, Any]]:
    """Evaluate on every DATASETS.TEST entry; returns the summaries (rank 0; {} elsewhere)."""
    results = []
    for name in dataset_names(cfg.DATASETS.TEST):
        layout, root = evaluation_dataset(str(name), str(cfg.DATASETS.get("ROOT", "")))
        safe = str(name).replace("/", "_").replace(":", "_")
        out = Path(cfg.OUTPUT_DIR) / "eval" / tag / safe
        opts = EvalOptions(dataset=layout, root=root, output=str(out), mode="decoupled",
                           max_images=max_images, device=str(predictor.device),
                           progress=progress, tta=tta)
        summary = run_evaluation(opts, predictor=predictor)
        results.append(summary or {})
    return results


def training_predictor(model: torch.nn.Module, clip: ClipAdapter, cfg: CfgNode, settings,
                       classes: list[str], device: torch.device, clip_id: str,
                       description: str) -> Predictor:
    """A Predictor over an eval-mode model (the training classes are its "seen" classes)."""
    return Predictor(model, clip, get_tokenizer(settings.clip_name), settings,
                     seen_classes=frozenset(classes), device=device, description=description,
                     clip_id=clip_id)


def evaluate_model(trainer: Trainer, tag: str) -> list[dict[str, Any]]:
    """Evaluate the trainer's current weights (on a copy in eval mode)."""
    cfg = trainer.cfg
    if not dataset_names(cfg.DATASETS.TEST):
        return []
    predictor = training_predictor(
        trainer.eval_model(), trainer.clip, cfg, trainer.settings, trainer.classes,
        trainer.device, trainer.clip_id, f"{trainer.settings.name} @ {trainer.iteration} it")
    results = evaluate_predictor(predictor, cfg, tag, max_images=trainer.opts.eval_max_images,
                                 progress=trainer.opts.progress)
    trainer.clip.to(trainer.device)
    return results

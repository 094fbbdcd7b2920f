"""Training checkpoints in the official layout, written atomically, found again by --resume.

A checkpoint is `{"model": state dict in the official key layout (with the loss constant
`criterion.empty_weight`, as the official trainer saves it), "optimizer", "scheduler", "scaler",
"iteration", "classes", "config"}`. `load_predictor` loads its "model" strictly; detectron2's
checkpointer (the official code) loads it too: it takes "model" and keeps the rest as extras.

Files in OUTPUT_DIR, as detectron2 names them: `model_0000999.pth` (0-based iteration),
`model_final.pth`, and `last_checkpoint` holding the file name of the newest one.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import WeightsError, ZegFormerError
from ..loading.checkpoint import load_checkpoint, read_state_dict

log = logging.getLogger(__name__)
LAST = "last_checkpoint"


class TrainingError(ZegFormerError):
    """Training cannot start or continue (the message says why and what to do)."""


def checkpoint_name(iteration: int, final: bool = False) -> str:
    """detectron2's names: `model_0000999.pth` after iteration 1000 (0-based), `model_final.pth`."""
    return "model_final.pth" if final else f"model_{iteration - 1:07d}.pth"


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename: never a half file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def model_state(model: nn.Module, criterion: nn.Module | None) -> dict[str, torch.Tensor]:
    """The model's state dict in the official layout, plus `criterion.*` buffers."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if criterion is not None:
        sd.update({f"criterion.{k}": v.detach().cpu() for k, v in criterion.state_dict().items()})
    return sd


def save_training_checkpoint(output_dir: Path, name: str, state: Mapping[str, Any]) -> Path:
    """Write `state` as OUTPUT_DIR/name and point `last_checkpoint` at it."""
    path = Path(output_dir) / name
    atomic_save(dict(state), path)
    atomic_write_text(Path(output_dir) / LAST, name)
    return path


def last_checkpoint(output_dir: Path) -> Path | None:
    """The checkpoint `last_checkpoint` names, or None when there is none."""
    marker = Path(output_dir) / LAST
    if not marker.is_file():
        return None
    path = Path(output_dir) / marker.read_text(encoding="utf-8").strip()
    if not path.is_file():
        raise TrainingError(f"{marker} names {path.name}, which does not exist: delete {marker} "
                            "to start over, or restore the file")
    return path


def existing_checkpoints(output_dir: Path) -> list[Path]:
    d = Path(output_dir)
    return sorted(d.glob("model_*.pth")) if d.is_dir() else []


def read_training_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint this trainer wrote (safe load: tensors and plain containers only)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise TrainingError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict) or "model" not in obj or "iteration" not in obj:
        raise TrainingError(f"{path} is not a training checkpoint (no model/iteration): start "
                            "from it with MODEL.WEIGHTS instead of --resume")
    return obj


def initialize_weights(model: nn.Module, weights: str, *, trust_pickle: bool = False) -> str:
    """Load MODEL.WEIGHTS into a freshly built model and log what was loaded.

    Accepts a detectron2 ImageNet backbone (`R-101.pkl`), a torchvision ResNet
    (`resnet101-63fe2227.pth`), or a full ZegFormer checkpoint (fine-tuning). Returns a one-line
    summary: which keys came from the file and which start random.
    """
    path = Path(weights).expanduser()
    if not path.is_file():
        raise TrainingError(f"MODEL.WEIGHTS {weights} not found")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        sd = read_state_dict(path, trust_pickle=trust_pickle)
        fmt = load_checkpoint(model, sd)
    except WeightsError as e:
        raise TrainingError(f"MODEL.WEIGHTS: {e}") from None
    after = model.state_dict()
    loaded = [k for k in after if not torch.equal(before[k], after[k]) or _from_file(k, fmt)]
    random = [k for k in after if k not in set(loaded)]
    prefixes = sorted({k.split(".")[0] + ("." + k.split(".")[1] if k.startswith("sem_seg_head")
                                          else "") for k in random})
    summary = (f"MODEL.WEIGHTS {path.name} ({fmt}): {len(loaded)} of {len(after)} tensors "
               f"loaded; {len(random)} start random" + (f" ({', '.join(prefixes)})" if random else ""))
    log.info(summary)
    return summary


def _from_file(key: str, fmt: str) -> bool:
    """Keys a file of format `fmt` provides (a loaded tensor may equal its random init)."""
    if fmt in ("d2_backbone", "backbone_only"):
        return key.startswith("backbone.")
    return True

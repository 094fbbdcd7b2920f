"""The evaluation loop: dataset -> predictions (model or saved) -> metrics -> report.

Per image: read the ground truth, take the saved prediction when there is one (resume /
``--from-predictions``) or run the model and save its label map as ``<out>/predictions/<stem>.png``,
find the objects, compute the confusion matrix and the object / segment rows. Under torchrun the
images are sharded, confusion matrices are summed with all_reduce and rows gathered on rank 0,
which sorts them into dataset order, so the result equals a single-process run.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..data.datasets import DatasetError, EvalDataset, Record
from ..loading.config import opt_value
from .distributed import DistInfo, all_reduce_sum, finish, gather_objects, init_distributed, shard
from .metrics import UNLABELLED_PRED
from ..data.objects import extract_objects
from ..data.official import build_dataset
from .report import Accumulated, build_report, format_summary, write_report
from .small_targets import ClassInfo, evaluate_image

log = logging.getLogger(__name__)
PRED_DIR = "predictions"
RUN_FILE = "_run.json"  # identifies the model/mode that wrote a predictions folder


@dataclass
class EvalOptions:
    """What to evaluate and how (the CLI's arguments)."""

    dataset: str
    root: str
    output: str
    mode: str = "decoupled"
    tta: bool | None = False  # test-time augmentation (TEST.AUG): True, False (one pass), or
    #   None: the config's TEST.AUG.ENABLED decides (the CLI without --tta)
    fast: bool = False  # the fast approximation (`Predictor.predict(fast=True)`), not the
    #   official numbers; recorded in the run file
    max_images: int | None = None
    from_predictions: str | None = None
    config_file: str | None = None
    opts: list[str] = field(default_factory=list)
    random_weights: bool = False
    device: str | None = None
    min_area: int = 16
    classes: str | None = None
    objects: str | None = None
    plots: bool = True
    progress: bool = True


def save_prediction(path: Path, label_map: np.ndarray, num_classes: int) -> None:
    """Write a label map of class indices as PNG: 8-bit when N < 255, else 16-bit.

    The format's maximum value (255 / 65535) marks unlabelled pixels. Written atomically, so an
    interrupted run never leaves a truncated file behind.
    """
    if num_classes < 255:
        arr = np.where(label_map == UNLABELLED_PRED, 255, label_map).astype(np.uint8)
    elif num_classes < 65535:
        arr = np.where(label_map == UNLABELLED_PRED, 65535, label_map).astype(np.uint16)
    else:
        raise ValueError(f"{num_classes} classes do not fit a 16-bit PNG")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    Image.fromarray(arr).save(tmp, format="PNG")
    os.replace(tmp, path)


def load_prediction(path: Path, num_classes: int) -> np.ndarray:
    """Read a saved label map (see ``save_prediction``) as HxW int64, -1 = unlabelled."""
    try:
        with Image.open(path) as im:
            mode = im.mode
            arr = np.asarray(im).astype(np.int64)
    except FileNotFoundError as e:
        raise DatasetError(f"prediction {path} does not exist") from e
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read prediction {path}: {e}") from e
    if arr.ndim != 2:
        raise DatasetError(f"prediction {path} must be a single-channel label map")
    unlabelled = 255 if mode in ("L", "P") else 65535
    arr[arr == unlabelled] = UNLABELLED_PRED
    bad = (arr != UNLABELLED_PRED) & ((arr < 0) | (arr >= num_classes))
    if bad.any():
        raise DatasetError(f"prediction {path} has values {np.unique(arr[bad])[:10].tolist()} "
                           f"outside the class list ({num_classes} classes)")
    return arr


class _Model:
    """The predictor, loaded on first use (a resumed run may not need it)."""

    def __init__(self, opts: EvalOptions, info: DistInfo, predictor: Any = None) -> None:
        self.opts = opts
        self.info = info
        self.predictor: Any = predictor
        self.given = predictor is not None

    def device(self) -> str:
        if self.opts.device:
            return self.opts.device
        import torch

        return f"cuda:{self.info.local_rank}" if torch.cuda.is_available() else "cpu"

    def load(self) -> Any:
        if self.predictor is None:
            import zegformer

            if self.opts.random_weights:
                self.predictor = zegformer.load_random_predictor(device=self.device())
            else:
                if not self.opts.config_file:
                    raise DatasetError("--config-file is required to run the model "
                                       "(or use --random-weights / --from-predictions)")
                self.predictor = zegformer.load_predictor(
                    self.opts.config_file, opts=self.opts.opts, device=self.device())
        return self.predictor

    def tta(self) -> bool | None:
        """`tta` for the predictor: the option, or None (the config's TEST.AUG.ENABLED)."""
        return self.opts.tta

    def fast(self) -> dict[str, bool]:
        """The `fast` keyword for the predictor when the fast path is asked for (only then, so
        that stand-in predictors need not know it)."""
        return {"fast": True} if self.opts.fast else {}

    def tta_passes(self) -> int:
        """Forward passes per image (1 without test-time augmentation)."""
        aug = self.load().test_augmentation(self.tta())
        return aug.n_passes if aug is not None else 1

    def describe(self) -> str:
        """The loaded predictor's own description; before loading, what the options name."""
        if self.predictor is not None:
            return str(self.predictor.describe())
        return self.ident()

    def ident(self) -> str:
        """Stable name of the model the options ask for (identifies a predictions folder)."""
        if self.given:
            return str(self.predictor.describe())
        if self.opts.random_weights:
            return "random weights (untrained)"
        return str(self.opts.config_file)

    def label_map(self, image: np.ndarray, names: list[str], mode: str) -> np.ndarray:
        """Argmax label map (HxW int32) of the per-class scores, as ZegFormer's evaluator takes."""
        from zegformer.inference.image import limit_size

        predictor = self.load()
        rgb = limit_size(image, predictor.max_side)
        # Not predict: the dataset's class list is trusted data, and the app's limits on names
        # would refuse some of ADE20K-Full's official ones. label_map equals
        # scores(...).argmax(0) but resizes only the classes that can win a pixel.
        if hasattr(predictor, "label_map"):
            return predictor.label_map(rgb, list(names), mode, tta=self.tta(),
                                       **self.fast()).astype(np.int32)
        probs = predictor.scores(rgb, list(names), mode, tta=self.tta(), **self.fast())
        return probs.argmax(axis=0).astype(np.int32)


def _resize_nearest(label_map: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    img = Image.fromarray(label_map.astype(np.int32), mode="I")
    return np.asarray(img.resize((shape[1], shape[0]), Image.Resampling.NEAREST)).astype(np.int64)


RUN_FORMAT = 2  # 1 recorded only the number of classes


def run_ident(model: str, opts: EvalOptions, class_names: list[str]) -> dict[str, Any]:
    """What identifies the predictions in a folder: the model, its config and --opts, the mode,
    the dataset and the class list (names, in order)."""
    return {"format": RUN_FORMAT, "model": model, "config": opts.config_file,
            "opts": list(opts.opts), "mode": opts.mode, "dataset": opts.dataset,
            "classes": list(class_names)}


def _class_difference(here: list[str], saved: list[str]) -> str | None:
    """What differs between two class lists, in words (None when equal)."""
    if here == saved:
        return None
    if len(here) != len(saved):
        return f"this run has {len(here)} classes but the saved predictions {len(saved)}"
    diff = [i for i, (a, b) in enumerate(zip(here, saved)) if a != b]
    i = diff[0]
    more = f" (and {len(diff) - 1} more classes differ)" if len(diff) > 1 else ""
    return f"class {i} is {here[i]!r} here but {saved[i]!r} in the saved predictions{more}"


def run_differences(ident: dict[str, Any], saved: dict[str, Any],
                    keys: tuple[str, ...] = ("model", "config", "opts", "mode", "dataset", "tta",
                                             "fast")
                    ) -> list[str]:
    """One phrase per difference between this run's ident and a saved one."""
    if "classes" not in saved:
        return ["the saved predictions come from an older version that recorded only the number "
                f"of classes ({saved.get('n_classes')}), not their names"]
    out = [f"{key} is {ident.get(key)!r} here but {saved.get(key)!r} in the saved predictions"
           for key in keys if ident.get(key) != saved.get(key)]
    classes = _class_difference(ident["classes"], list(saved["classes"]))
    return out + ([classes] if classes else [])


def _read_run_file(path: Path) -> dict[str, Any]:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read {path}: {e}; delete it (and the predictions beside it) "
                           "to start over") from e
    if not isinstance(saved, dict):
        raise DatasetError(f"{path} is not a run file (expected a JSON object)")
    return saved


def _check_run_file(pred_dir: Path, ident: dict[str, Any], info: DistInfo) -> None:
    """Refuse to mix predictions of different models / modes / class lists in one folder."""
    path = pred_dir / RUN_FILE
    if path.is_file():
        differences = run_differences(ident, _read_run_file(path))
        if differences:
            raise DatasetError(
                f"{pred_dir} holds predictions of another run: {'; '.join(differences)}. "
                "Use a new --output, or delete that folder to start over.")
    elif info.is_main:
        tmp = path.with_name(f".{RUN_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(ident, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)


def check_saved_class_list(pred_dir: Path, class_names: list[str]) -> None:
    """--from-predictions: refuse a folder whose run file names another class list."""
    path = pred_dir / RUN_FILE
    if not path.is_file():
        return  # predictions made elsewhere: nothing records their classes
    saved = _read_run_file(path)
    if "classes" not in saved:
        if saved.get("n_classes") not in (None, len(class_names)):
            raise DatasetError(f"{pred_dir} holds predictions for {saved.get('n_classes')} "
                               f"classes but this dataset has {len(class_names)}")
        return
    difference = _class_difference(list(class_names), list(saved["classes"]))
    if difference:
        raise DatasetError(f"{pred_dir} holds predictions for another class list: {difference}")


def _predict_or_load(record: Record, ds: EvalDataset, gt: np.ndarray, pred_dir: Path,
                     model: _Model | None, opts: EvalOptions) -> tuple[np.ndarray, bool]:
    """The prediction of one record and whether it came from disk."""
    n = len(ds.vocab.classes)
    path = pred_dir / f"{record.image_id}.png"
    if path.is_file():
        pred = load_prediction(path, n)
        if pred.shape != gt.shape:
            raise DatasetError(f"prediction {path} is {pred.shape[1]}x{pred.shape[0]} but the "
                               f"label map {record.label_path} is {gt.shape[1]}x{gt.shape[0]}")
        return pred, True
    if model is None:
        raise DatasetError(f"no prediction for {record.image_id!r} in {pred_dir} "
                           f"(expected {path.name})")
    from zegformer.inference.image import load_image

    if record.image_path is None:
        raise DatasetError(f"no image for {record.image_id!r}")
    image = load_image(record.image_path)
    if image.shape[:2] != gt.shape:
        raise DatasetError(
            f"image {record.image_path} is {image.shape[1]}x{image.shape[0]} (after EXIF "
            f"rotation) but its label map {record.label_path} is {gt.shape[1]}x{gt.shape[0]}")
    pred = model.label_map(image, ds.vocab.classes, opts.mode).astype(np.int64)
    if pred.shape != gt.shape:  # the predictor downscaled a very large image
        pred = _resize_nearest(pred, gt.shape)
    save_prediction(path, pred, n)
    return pred, False


def run_evaluation(opts: EvalOptions, predictor: Any = None) -> dict[str, Any] | None:
    """Evaluate and write the report; returns the summary on rank 0 (None on other ranks).

    `predictor` (a `zegformer.Predictor`) is used instead of loading one from the options: the
    training loop evaluates its current weights this way.
    """
    t0 = time.time()
    model_needed = opts.from_predictions is None
    use_cuda = False
    if model_needed and (opts.device or "").startswith("cuda"):
        use_cuda = True
    elif model_needed and opts.device is None:
        import torch

        use_cuda = torch.cuda.is_available()
    info = init_distributed(use_cuda)
    try:
        return _run(opts, info, t0, predictor)
    finally:
        finish(info)


def _run(opts: EvalOptions, info: DistInfo, t0: float,
         predictor: Any = None) -> dict[str, Any] | None:
    if opts.min_area < 1:
        raise DatasetError(f"--min-area must be at least 1, got {opts.min_area}")
    ds = build_dataset(opts.dataset, opts.root, need_images=opts.from_predictions is None,
                       classes=opts.classes, objects=opts.objects)
    records = ds.records[: opts.max_images] if opts.max_images else ds.records
    out = Path(opts.output)
    if opts.from_predictions:
        pred_dir = Path(opts.from_predictions)
        if not pred_dir.is_dir():
            raise DatasetError(f"--from-predictions {pred_dir} is not a directory")
        check_saved_class_list(pred_dir, list(ds.vocab.classes))
        model = None
    else:
        pred_dir = out / PRED_DIR
        pred_dir.mkdir(parents=True, exist_ok=True)
        model = _Model(opts, info, predictor)
        ident = run_ident(model.ident(), opts, list(ds.vocab.classes))
        if opts.tta:  # only when on, so that folders written before --tta existed still resume
            ident["tta"] = True
        if opts.fast:  # the same: exact runs keep the run file they always had
            ident["fast"] = True
        _check_run_file(pred_dir, ident, info)
    classes = ClassInfo(ds.vocab.classes, ds.vocab.unseen_mask, ds.instance_classes)
    mine = shard(len(records), info)
    conf = np.zeros((len(classes.names), len(classes.names) + 1), dtype=np.int64)
    rows: dict[str, list[dict[str, Any]]] = {"objects": [], "segments": [], "dropped": []}
    reused = mismatched = 0
    error: BaseException | None = None
    from tqdm.auto import tqdm

    source = (opts.mode + (" + TTA" if opts.tta else "") + (" + fast" if opts.fast else "")
              if model else "saved predictions")
    bar = tqdm(mine, desc=f"{opts.dataset} [{source}]", unit="img", dynamic_ncols=True,
               disable=not (opts.progress and info.is_main))
    try:
        for idx in bar:
            record = records[idx]
            gt = ds.load_gt(record)
            pred, from_disk = _predict_or_load(record, ds, gt, pred_dir, model, opts)
            reused += from_disk
            objs = extract_objects(gt, ds.ignore_label, ds.load_instances(record, gt),
                                   opts.min_area)
            res = evaluate_image(record.image_id, gt, pred, objs, classes, ds.ignore_label,
                                 opts.min_area)
            conf += res.conf
            mismatched += res.n_mismatched
            for key, part in (("objects", res.objects), ("segments", res.segments),
                              ("dropped", res.dropped)):
                rows[key].extend((idx, r) for r in part)  # type: ignore[misc]
    except Exception as e:  # noqa: BLE001 - re-raised below, after telling the other ranks
        error = e
    finally:
        bar.close()
    failed = all_reduce_sum(np.array([int(error is not None)]), info)
    if error is not None:
        raise error
    if failed[0]:
        raise DatasetError("another evaluation process failed; see its error message")
    conf = all_reduce_sum(conf, info)
    gathered = gather_objects((rows, reused, mismatched), info)
    if not info.is_main:
        return None
    assert gathered is not None
    merged: dict[str, list] = {k: [] for k in rows}
    for part, _, _ in gathered:
        for key in merged:
            merged[key].extend(part[key])
    acc = Accumulated(conf=conf, n_images=len(records),
                      n_mismatched=sum(g[2] for g in gathered))
    for key in merged:  # dataset order, then the order within an image (stable sort)
        ordered = [r for _, r in sorted(merged[key], key=lambda t: t[0])]
        setattr(acc, key, ordered)
    meta = {
        "dataset": opts.dataset,
        "split_file": str(ds.label_dir),
        "class_list": ds.vocab.name,
        "n_classes": len(classes.names),
        "n_unseen_classes": int(classes.unseen.sum()),
        "model": model.describe() if model else f"saved predictions ({opts.from_predictions})",
        "checkpoint": opt_value(opts.opts, "MODEL.WEIGHTS"),
        "mode": opts.mode if model else None,
        "untrained": bool(model and getattr(model.predictor, "untrained", opts.random_weights)),
        "ignore_label": ds.ignore_label,
        "object_source_description": ds.object_source,
        "elapsed_s": round(time.time() - t0, 3),
        "world_size": info.world_size,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "reused_predictions": sum(g[1] for g in gathered),
    }
    if model and (opts.tta or model.predictor is not None) and model.tta_passes() > 1:
        meta["tta_passes"] = model.tta_passes()  # absent for single-pass runs (as before)
    if model and opts.fast:
        meta["fast"] = True  # the fast approximation, not the official numbers
    summary, tables = build_report(acc, classes, meta, opts.min_area)
    write_report(out, summary, tables, plots=opts.plots)
    print(format_summary(summary), flush=True)
    return summary

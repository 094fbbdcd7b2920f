"""ADE20K-Full 847 (ZegFormer's frequency split: 572 seen / 275 unseen "rare" classes).

Reads ``ADE20K_2021_17_01/index_ade20k.pkl`` (its ``folder`` and ``filename`` lists; folders are
relative to DATASETS) and, per image, ``<folder>/<name>.jpg`` with ``<folder>/<name>_seg.png``,
whose class mask is ``R // 10 * 256 + G`` (value k = ``objectnames[k - 1]``, 0 = unlabelled).
Like the official ``datasets/ade20k-full-frequency-split/prepare_ade20k_full_frequency_
{seen,all_val,unseen_val}.py`` and ``create_ade-frequency_json.py`` it writes:

* ``images_detectron2_freq/{training,validation}/<name>.jpg``: the image, its shorter side
  resized to 512 when longer (OpenCV INTER_LINEAR, the longer side ``round(long / short * 512)``
  with Python's rounding), re-encoded by PIL with its default JPEG settings (quality 75);
* ``annotations_detectron2_freq/{training_seen,validation_seen}/<name>.tif``: 16-bit TIFF, seen
  classes 0..571 (trainId order without the rare classes), everything else 65535; the class
  mask is resized with OpenCV INTER_NEAREST;
* ``annotations_detectron2_freq/val_all`` (trainIds 0..846) and ``val_unseen`` (rare classes
  0..274), validation images only;
* ``ADE20K_{572,275,847}_pure_class.json``.

An image is "validation" when the second ``_`` field of its file name is ``val``, as officially.
Class-mask values above the number of ``objectnames`` are errors; ADE20K classes outside the 847
are ignore (65535) by design. Needs OpenCV (``pip install opencv-python-headless``).
"""
from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from ...errors import DatasetError
from ..vocabularies import load_vocabulary
from .common import (
    Job,
    LabelOutput,
    TaskResult,
    check_values,
    find_dataset_dir,
    guarded,
    output_is_done,
    read_split_json,
    remap_table,
    remap_with_stats,
    save_array_atomic,
    worker_spec,
)

IGNORE = 65535
SHORT_SIDE = 512
MASK_VALUES = 26 * 256  # R // 10 <= 25, G <= 255: every value a class mask can hold


def ade_tables() -> tuple[list[int], list[int]]:
    """(the 847 class-mask ids in trainId order, the trainIds of the 275 rare classes)."""
    t = read_split_json("ade20k_full_847_ids.json")
    return list(t["ids"]), list(t["rare_train_ids"])


def tables() -> dict[str, np.ndarray]:
    """uint16 lookups class-mask value -> output id for "seen", "unseen" and "all"."""
    ids, rare = ade_tables()
    rare_set = set(rare)
    seen = [v for i, v in enumerate(ids) if i not in rare_set]
    unseen = [ids[i] for i in sorted(rare)]
    return {
        "seen": remap_table(MASK_VALUES, {v: i for i, v in enumerate(seen)}, IGNORE, np.uint16),
        "unseen": remap_table(MASK_VALUES, {v: i for i, v in enumerate(unseen)}, IGNORE,
                              np.uint16),
        "all": remap_table(MASK_VALUES, {v: i for i, v in enumerate(ids)}, IGNORE, np.uint16),
    }


def resized_size(width: int, height: int, short: int = SHORT_SIDE) -> tuple[int, int]:
    """(W, H) after the official rule: only images whose shorter side exceeds ``short``."""
    if width >= height > short:
        return round(width / float(height) * short), short
    if height >= width > short:
        return short, round(height / float(width) * short)
    return width, height


class _IndexUnpickler(pickle.Unpickler):
    """Lists, dicts, strings, numbers and numpy arrays only: never code from the file."""

    ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset({
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("collections", "OrderedDict")})

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it asks for {module}.{name}")


def read_index(path: Path, trust_pickle: bool = False) -> dict:
    """``index_ade20k.pkl`` with at least ``folder`` and ``filename`` of equal length."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e}") from None
    try:
        index = _IndexUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as e:
        if not trust_pickle:
            raise DatasetError(f"{path} cannot be read safely ({e}); if you trust the file, pass "
                               "--trust-pickle") from None
        index = pickle.loads(data, encoding="latin1")
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file
        raise DatasetError(f"{path} is not a readable ADE20K index ({type(e).__name__}: {e})") \
            from None
    if not isinstance(index, dict) or not {"folder", "filename"} <= set(index):
        raise DatasetError(f"{path} is not an ADE20K index: expected a dict with 'folder' and "
                           "'filename' lists")
    if len(index["folder"]) != len(index["filename"]):
        raise DatasetError(f"{path}: 'folder' and 'filename' have different lengths")
    return index


@dataclass(frozen=True)
class AdeSpec:
    tables: dict[str, np.ndarray]
    valid: np.ndarray  # bool[MASK_VALUES]: 0..len(objectnames)
    what: str


@dataclass(frozen=True)
class AdeTask:
    image: Path  # raw .jpg
    seg: Path  # raw _seg.png
    image_out: Path
    image_split: str  # "images_detectron2_freq/training" or ".../validation"
    labels: tuple[LabelOutput, ...]


def read_class_mask(path: Path) -> np.ndarray:
    """HxW int32 class mask ``R // 10 * 256 + G`` of an ADE20K ``_seg.png``."""
    try:
        with Image.open(path) as im:
            seg = np.asarray(im)
    except FileNotFoundError:
        raise DatasetError(f"segmentation {path} does not exist") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise DatasetError(f"cannot read segmentation {path}: {e}") from None
    if seg.ndim != 3 or seg.shape[2] < 3 or seg.dtype != np.uint8:
        raise DatasetError(f"segmentation {path} is not an 8-bit RGB _seg.png "
                           f"(shape {seg.shape}, {seg.dtype})")
    return (seg[..., 0].astype(np.int32) // 10) * 256 + seg[..., 1].astype(np.int32)


def _prepare_one(task: AdeTask) -> TaskResult:
    import cv2

    spec: AdeSpec = worker_spec()
    res = TaskResult(str(task.image))
    try:
        with Image.open(task.image) as im:
            w, h = im.size
    except FileNotFoundError:
        raise DatasetError(f"image {task.image} does not exist") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise DatasetError(f"cannot read image {task.image}: {e}") from None
    new_w, new_h = resized_size(w, h)
    resize = (new_w, new_h) != (w, h)
    todo = []
    for out in task.labels:
        if output_is_done(out.path, (new_w, new_h), ("I;16",)):
            res.skipped.append(out.split)
        else:
            todo.append(out)
    if todo:
        lab = read_class_mask(task.seg)
        if lab.shape != (h, w):
            raise DatasetError(f"segmentation {task.seg} is {lab.shape[1]}x{lab.shape[0]} but its "
                               f"image is {w}x{h}")
        check_values(np.unique(lab), spec.valid, task.seg, spec.what)
        if resize:
            lab = cv2.resize(lab, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
        uniq, counts = np.unique(lab, return_counts=True)
        for out in todo:
            arr, res.stats[out.split] = remap_with_stats(lab, spec.tables[out.table], IGNORE,
                                                         uniq, counts)
            save_array_atomic(arr.astype(np.uint16), out.path, "TIFF")
            res.written.append(out.split)
    if output_is_done(task.image_out, (new_w, new_h), None):
        res.skipped.append(task.image_split)
    else:
        try:
            with Image.open(task.image) as im:
                img = np.asarray(im)
        except (OSError, ValueError, SyntaxError) as e:
            raise DatasetError(f"cannot read image {task.image}: {e}") from None
        if resize:
            img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        save_array_atomic(img, task.image_out, "JPEG")
        res.written.append(task.image_split)
    return res


def ade_worker(task: AdeTask) -> TaskResult:
    """Pool entry point: one ADE20K image and all its outputs."""
    return guarded(_prepare_one, task, str(task.image))


def class_files(base: Path) -> dict[Path, object]:
    vocab = load_vocabulary("ade20k_full_847")
    _, rare = ade_tables()
    rare_set = set(rare)
    names = list(vocab["classes"])
    return {
        base / "ADE20K_572_pure_class.json": [n for i, n in enumerate(names) if i not in rare_set],
        base / "ADE20K_275_pure_class.json": [n for i, n in enumerate(names) if i in rare_set],
        base / "ADE20K_847_pure_class.json": names,
    }


def plan(root: Path, trust_pickle: bool = False) -> Job:
    """The ADE20K-Full job under ``root`` (DATASETS or the ADE20K_2021_17_01 folder)."""
    base = find_dataset_dir(root, ["ADE20K_2021_17_01", "."], "index_ade20k.pkl",
                            "the ADE20K_2021_17_01 download: index_ade20k.pkl and images/ADE/")
    try:
        import cv2  # noqa: F401
    except ImportError:
        raise DatasetError("preparing ade847 needs OpenCV, as the official script resizes with "
                           "it: pip install opencv-python-headless") from None
    index = read_index(base / "index_ade20k.pkl", trust_pickle)
    valid = np.zeros(MASK_VALUES, dtype=bool)
    names = index.get("objectnames")
    n_objects = len(names) if names is not None else MASK_VALUES - 1
    valid[: n_objects + 1] = True
    spec = AdeSpec(tables(), valid, f"the {n_objects} ADE20K object classes of "
                   f"{base / 'index_ade20k.pkl'} (0 = unlabelled)")
    data_root = base.resolve().parent  # the index's folders start with "ADE20K_2021_17_01/"
    img_out, ann_out = base / "images_detectron2_freq", base / "annotations_detectron2_freq"
    dirs = [ann_out / d for d in ("training_seen", "validation_seen", "val_all", "val_unseen")]
    dirs += [img_out / "training", img_out / "validation"]
    job = Job("ade847", base, [], ade_worker, spec, class_files(base), dirs)
    for folder, name in zip(index["folder"], index["filename"]):
        name, folder = str(name), str(folder)
        parts = name.split("_")
        split = "validation" if len(parts) > 1 and parts[1] == "val" else "training"
        image = data_root / folder / name
        label_name = name.replace(".jpg", ".tif")
        labels = [LabelOutput(f"annotations_detectron2_freq/{split}_seen",
                              ann_out / f"{split}_seen" / label_name, "seen")]
        if split == "validation":
            labels += [LabelOutput(f"annotations_detectron2_freq/{d}", ann_out / d / label_name, t)
                       for d, t in (("val_all", "all"), ("val_unseen", "unseen"))]
        job.tasks.append(AdeTask(image, image.with_name(name.replace(".jpg", "_seg.png")),
                                 img_out / split / name, f"images_detectron2_freq/{split}",
                                 tuple(labels)))
    if not job.tasks:
        raise DatasetError(f"{base / 'index_ade20k.pkl'} lists no images")
    return job

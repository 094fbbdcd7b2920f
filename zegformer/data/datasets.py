"""Evaluation datasets: records (image, label map, objects), class lists, label-file I/O.

Layouts (``--dataset``):

* ``folder``: ``ROOT/images/<stem>.jpg|png``, ``ROOT/labels/<stem>.png`` (class indices,
  255 = ignore), ``ROOT/classes.json`` = ``{"classes": [...], "unseen": [...]}`` (optional keys
  ``"ignore_label"`` and ``"things"``: the classes that ``objects/`` annotates; default all), and
  optional ``ROOT/objects/<stem>.png`` (instance ids, 0 = no object). With splits (for training):
  ``ROOT/{images,labels,objects}/{train,val}/<stem>.*``; evaluation reads ``val`` (see
  ``training_set`` for ``train``, where unseen classes become ignore);
* ``coco-stuff``, ``voc``, ``ade847``: the layouts of the official ZegFormer data preparation
  (see ``official.py``).

Every problem with the data raises ``DatasetError`` with a message that names the file.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DatasetError
from .objects import InstanceSet, instances_from_id_map

IMAGE_EXTS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
DATASETS: tuple[str, ...] = ("coco-stuff", "voc", "ade847", "folder")


@dataclass
class Record:
    """One evaluation image."""

    image_id: str  # file stem, used for prediction files and CSV rows
    label_path: Path
    image_path: Path | None = None  # None when the image is not on disk (predictions only)
    object_path: Path | None = None  # per-image instance file, when the layout has one


@dataclass
class Vocabulary:
    """Class names in label order and the unseen (novel) subset."""

    classes: list[str]
    unseen: list[str]
    name: str = ""

    @property
    def unseen_mask(self) -> np.ndarray:
        uns = set(self.unseen)
        return np.array([c in uns for c in self.classes], dtype=bool)


@dataclass
class EvalDataset:
    """A dataset ready for evaluation.

    Attributes:
        name: layout name ("coco-stuff", "voc", "ade847", "folder").
        root: the root given by the user.
        vocab: classes and unseen split.
        ignore_label: ground-truth value meaning "ignore" (255, or 65535 for ADE20K-Full).
        records: the images, sorted by image_id.
        label_dir: the directory of label maps (reported as ``split_file``).
        instance_classes: classes whose objects come from instance annotations: None = all,
            empty = none (connected components everywhere).
        object_source: human-readable description of the object source.
        instance_loader: record, ground truth -> InstanceSet (None without instances).
    """

    name: str
    root: Path
    vocab: Vocabulary
    ignore_label: int
    records: list[Record]
    label_dir: Path
    instance_classes: frozenset[int] | None = frozenset()
    object_source: str = "8-connected components"
    instance_loader: Callable[[Record, np.ndarray], InstanceSet] | None = field(
        default=None, repr=False
    )

    def load_gt(self, record: Record) -> np.ndarray:
        """HxW int64 ground truth of ``record``, validated against the class list."""
        return read_label_map(record.label_path, len(self.vocab.classes), self.ignore_label)

    def load_instances(self, record: Record, gt: np.ndarray) -> InstanceSet | None:
        """Instance annotations of ``record`` (None when the dataset has none)."""
        if self.instance_loader is None:
            return None
        inst = self.instance_loader(record, gt)
        inst.covered_classes = self.instance_classes
        return inst

    def image_size(self, record: Record) -> tuple[int, int]:
        """(H, W) of the record's image, read from the header only."""
        if record.image_path is None:
            raise DatasetError(f"no image for {record.image_id!r}")
        try:
            with Image.open(record.image_path) as im:
                return im.height, im.width
        except (OSError, ValueError) as e:
            raise DatasetError(f"cannot read image {record.image_path}: {e}") from e


LABEL_MODES = ("L", "P", "I", "I;16", "I;16B", "I;16L")  # single-channel class-id images


def read_label_file(path: Path, modes: Sequence[str] = LABEL_MODES) -> np.ndarray:
    """The raw values of a single-channel label image (PNG 8/16-bit, palette, 16-bit TIFF),
    as stored (no value checks); a missing, unreadable or multi-channel file is a DatasetError."""
    try:
        with Image.open(path) as im:
            if im.mode not in modes:
                raise DatasetError(
                    f"label map {path} has image mode {im.mode}: expected a single-channel "
                    "image of class indices (" + ("8-bit" if set(modes) <= {"L", "P"}
                                                  else "8- or 16-bit") + ")")
            return np.asarray(im)
    except FileNotFoundError:
        raise DatasetError(f"label map {path} does not exist") from None
    except DatasetError:
        raise
    except (OSError, ValueError, SyntaxError) as e:
        raise DatasetError(f"cannot read label map {path}: {e}") from None


def read_label_map(path: Path, num_classes: int, ignore_label: int) -> np.ndarray:
    """Read a ground-truth label map and check its values.

    Args:
        path: PNG (8/16-bit, palette allowed) or 16-bit TIFF with class indices.
        num_classes: N; valid values are 0..N-1 and ``ignore_label``.
        ignore_label: the ignore value.

    Returns:
        HxW int64 array.
    """
    arr = read_label_file(path).astype(np.int64)
    bad = (arr != ignore_label) & ((arr < 0) | (arr >= num_classes))
    if bad.any():
        values = np.unique(arr[bad])[:10].tolist()
        raise DatasetError(
            f"label map {path} has values {values} outside the class list "
            f"({num_classes} classes, 0..{num_classes - 1}; ignore = {ignore_label})"
        )
    return arr


def load_vocabulary_file(path: Path, name: str = "") -> Vocabulary:
    """Read ``{"classes": [...], "unseen": [...]}`` (the assets/vocabularies format)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError as e:
        raise DatasetError(f"class list {path} does not exist") from e
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetError(f"cannot read class list {path}: {e}") from e
    return vocabulary_from_dict(data, str(path), name or str(data.get("name", "")))


def vocabulary_from_dict(data: object, where: str, name: str = "") -> Vocabulary:
    """Validate a class-list dict: unique non-empty names; unseen names must be classes."""
    if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
        raise DatasetError(f"{where}: expected a JSON object with a list under \"classes\"")
    classes = data["classes"]
    unseen = data.get("unseen", [])
    if not classes or not all(isinstance(c, str) and c.strip() for c in classes):
        raise DatasetError(f"{where}: \"classes\" must be a non-empty list of names")
    dupes = sorted({c for c in classes if classes.count(c) > 1})
    if dupes:
        raise DatasetError(f"{where}: class names listed twice: {dupes[:5]}")
    if not isinstance(unseen, list):
        raise DatasetError(f"{where}: \"unseen\" must be a list of class names")
    unknown = [u for u in unseen if u not in set(classes)]
    if unknown:
        raise DatasetError(f"{where}: unseen classes not in \"classes\": {unknown[:5]}")
    return Vocabulary(list(classes), list(unseen), name)


def find_image(directory: Path, stem: str, exts: Sequence[str] = IMAGE_EXTS) -> Path | None:
    """``directory/<stem><ext>`` for the first extension that exists, else None."""
    for ext in exts:
        p = directory / f"{stem}{ext}"
        if p.is_file():
            return p
    return None


def list_labels(label_dir: Path, exts: Sequence[str] = (".png",)) -> list[Path]:
    """Label files in ``label_dir`` sorted by name; errors when there are none."""
    files = sorted(p for p in label_dir.iterdir() if p.suffix.lower() in exts and p.is_file())
    if not files:
        raise DatasetError(f"no label files ({', '.join(exts)}) in {label_dir}")
    return files


def attach_images(records: list[Record], image_dir: Path | None, need_images: bool) -> None:
    """Fill ``image_path``; with ``need_images`` every record must have its image."""
    if image_dir is None or not image_dir.is_dir():
        if need_images:
            raise DatasetError(f"image directory {image_dir} does not exist")
        return
    missing = []
    for r in records:
        r.image_path = find_image(image_dir, r.image_id)
        if r.image_path is None:
            missing.append(r.image_id)
    if missing and need_images:
        raise DatasetError(
            f"{len(missing)} label maps have no image in {image_dir} "
            f"(looked for .jpg/.png), e.g. {missing[:5]}"
        )


def check_root(root: str | Path) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist or is not a directory")
    return root


def folder_split_dir(root: Path, kind: str, split: str | None) -> Path:
    """``ROOT/<kind>/<split>`` when the layout has splits, else ``ROOT/<kind>``."""
    return root / kind / split if split else root / kind


def default_folder_split(root: Path) -> str | None:
    """"val" when the folder dataset is laid out with splits (``ROOT/labels/val``), else None."""
    return "val" if (root / "labels" / "val").is_dir() else None


def read_folder_meta(root: Path) -> dict:
    """``ROOT/classes.json`` as a dict ({} when the file is missing)."""
    meta_path = root / "classes.json"
    if not meta_path.is_file():
        return {}
    with open(meta_path, encoding="utf-8") as f:
        try:
            meta = json.load(f)
        except json.JSONDecodeError as e:
            raise DatasetError(f"cannot read {meta_path}: {e}") from e
    if not isinstance(meta, dict):
        raise DatasetError(f"{meta_path}: expected a JSON object with a list under \"classes\"")
    return meta


def folder_vocabulary(root: Path, meta: dict) -> Vocabulary:
    """The class list of a folder dataset, from its classes.json."""
    meta_path = root / "classes.json"
    if not meta:
        raise DatasetError(f"{meta_path} is missing: write "
                           '{"classes": [...], "unseen": [...]} or pass --classes FILE')
    return vocabulary_from_dict(meta, str(meta_path), str(meta.get("name") or root.name))


def folder_ignore_label(root: Path, meta: dict) -> int:
    try:
        return int(meta.get("ignore_label", 255))
    except (TypeError, ValueError) as e:
        raise DatasetError(f"{root / 'classes.json'}: \"ignore_label\" must be an integer") from e


def build_folder(root: str | Path, need_images: bool = True,
                 vocab: Vocabulary | None = None, split: str | None = None) -> EvalDataset:
    """The generic ``folder`` layout (see the module docstring); `split` defaults to "val" when
    the layout has splits."""
    root = check_root(root)
    split = split or default_folder_split(root)
    label_dir = folder_split_dir(root, "labels", split)
    if not label_dir.is_dir():
        raise DatasetError(f"{root} is not a folder dataset: {label_dir} is missing "
                           "(expected ROOT/images, ROOT/labels, ROOT/classes.json)")
    meta = read_folder_meta(root)
    vocab = vocab or folder_vocabulary(root, meta)
    ignore = folder_ignore_label(root, meta)
    records = [Record(p.stem, p) for p in list_labels(label_dir)]
    attach_images(records, folder_split_dir(root, "images", split), need_images)
    ds = EvalDataset("folder", root, vocab, ignore, records, label_dir)
    obj_dir = folder_split_dir(root, "objects", split)
    if obj_dir.is_dir():
        missing = []
        for r in records:
            r.object_path = obj_dir / f"{r.image_id}.png"
            if not r.object_path.is_file():
                missing.append(r.image_id)
        if missing:
            raise DatasetError(f"{obj_dir} exists but has no object map for "
                               f"{len(missing)} images, e.g. {missing[:5]}")
        things = meta.get("things")
        if things is None:
            ds.instance_classes = None
        else:
            unknown = [t for t in things if t not in vocab.classes]
            if unknown:
                raise DatasetError(f"classes.json: \"things\" not in \"classes\": {unknown[:5]}")
            ds.instance_classes = frozenset(vocab.classes.index(t) for t in things)
        ds.object_source = f"instance maps in {obj_dir}"
        ds.instance_loader = _id_map_loader(skip=(0,))
    return ds


def _id_map_loader(skip: Sequence[int]) -> Callable[[Record, np.ndarray], InstanceSet]:
    """Loader for per-image maps of instance ids (class taken from the ground truth)."""

    def load(record: Record, gt: np.ndarray) -> InstanceSet:
        assert record.object_path is not None
        try:
            with Image.open(record.object_path) as im:
                ids = np.asarray(im)
        except (OSError, ValueError) as e:
            raise DatasetError(f"cannot read object map {record.object_path}: {e}") from e
        if ids.ndim != 2:
            raise DatasetError(f"object map {record.object_path} must be single-channel")
        if ids.shape != gt.shape:
            raise DatasetError(f"object map {record.object_path} is {ids.shape[1]}x{ids.shape[0]}"
                               f" but its label map is {gt.shape[1]}x{gt.shape[0]}")
        return InstanceSet(instances_from_id_map(ids, skip=skip))

    return load


# Re-exported for the official layouts.
id_map_loader = _id_map_loader

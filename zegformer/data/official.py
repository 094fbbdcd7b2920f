"""The official ZegFormer dataset layouts (as its ``datasets/`` preparation scripts leave them).

Paths are relative to ``--root`` (detectron2's ``$DETECTRON2_DATASETS``); the root may also be
the dataset's own folder (``coco/coco_stuff``, ``VOCZERO``, ``ADE20K_2021_17_01``).

* ``coco-stuff`` (171 classes, 15 unseen): images ``coco/coco_stuff/images/val2017/*.jpg``
  (also ``coco/images/val2017``), labels ``coco/coco_stuff/annotations_detectron2/val2017_all/
  *.png`` (contiguous ids, 255 = ignore). Objects of thing classes: COCO panoptic
  (``coco/annotations/panoptic_val2017.json`` + ``coco/panoptic_val2017/*.png``) or, failing
  that, instances (``coco/annotations/instances_val2017.json``, via pycocotools).
* ``voc`` (20 classes, 5 unseen, background ignored): images ``VOCZERO/images/val/*.jpg`` (or
  ``JPEGImages``), labels ``VOCZERO/annotations_detectron2/val_all/*.png``; objects from
  ``SegmentationObject/*.png`` (ids 1..254) in VOCZERO, ROOT or ``VOCdevkit/VOC2012``.
* ``ade847`` (847 classes, frequency split): images ``ADE20K_2021_17_01/images_detectron2_freq/
  validation/*.jpg``, labels ``annotations_detectron2_freq/val_all/*.tif`` (16-bit, 65535 =
  ignore); objects from the B channel of ``images/ADE/validation/**/<stem>_seg.png``, resized
  to the label size with OpenCV's nearest-neighbour rule as the official script did.
"""
from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..resources import vocabulary_dir
from .datasets import (
    DATASETS,
    DatasetError,
    EvalDataset,
    Record,
    Vocabulary,
    attach_images,
    check_root,
    id_map_loader,
    list_labels,
    load_vocabulary_file,
)
from .objects import Instance, InstanceSet, instances_from_id_map

log = logging.getLogger(__name__)
VOCAB_FILES = {"coco-stuff": "coco_stuff_171", "voc": "pascal_voc_20", "ade847": "ade20k_full_847"}


def official_vocabulary(dataset: str) -> Vocabulary:
    """The class list of an official dataset, from ``assets/vocabularies``."""
    return load_vocabulary_file(vocabulary_dir() / f"{VOCAB_FILES[dataset]}.json", VOCAB_FILES[dataset])


def _first_dir(root: Path, candidates: Sequence[str], what: str, hint: str) -> Path:
    for c in candidates:
        if (root / c).is_dir():
            return root / c
    tried = ", ".join(str(root / c) for c in candidates)
    raise DatasetError(f"no {what} under {root} (looked for {tried}); {hint}")


def _optional_dir(root: Path, candidates: Sequence[str]) -> Path | None:
    return next(((root / c).resolve() for c in candidates if (root / c).is_dir()), None)


def build_coco_stuff(root: str | Path, need_images: bool = True,
                     vocab: Vocabulary | None = None, objects: str | None = None) -> EvalDataset:
    root = check_root(root)
    vocab = vocab or official_vocabulary("coco-stuff")
    label_dir = _first_dir(
        root,
        ["coco/coco_stuff/annotations_detectron2/val2017_all", "coco_stuff/annotations_detectron2/"
         "val2017_all", "annotations_detectron2/val2017_all"],
        "COCO-Stuff label maps",
        "run ZegFormer's datasets/coco-stuff/prepare_coco_stuff_sem_seg_val_all.py",
    )
    base = label_dir.parents[1]  # .../coco_stuff
    records = [Record(p.stem, p) for p in list_labels(label_dir)]
    image_dir = _optional_dir(base, ["images/val2017", "../images/val2017", "../val2017"])
    attach_images(records, image_dir, need_images)
    ds = EvalDataset("coco-stuff", root, vocab, 255, records, label_dir)
    coco_dir = base.parent if base.name == "coco_stuff" else base
    candidates = [Path(objects)] if objects else [
        coco_dir / "annotations/panoptic_val2017.json",
        coco_dir / "annotations/instances_val2017.json",
    ]
    found = next((p for p in candidates if p.is_file()), None)
    if objects and found is None:
        raise DatasetError(f"object annotations {objects} do not exist")
    if found is None:
        log.warning("no COCO panoptic/instance JSON under %s: objects of every class are "
                    "8-connected components", coco_dir / "annotations")
        return ds
    with open(found, encoding="utf-8") as f:
        data = json.load(f)
    name_to_idx = {n: i for i, n in enumerate(vocab.classes)}
    if data.get("annotations") and "segments_info" in data["annotations"][0]:
        _setup_panoptic(ds, data, found, name_to_idx)
    else:
        _setup_instances(ds, data, found, name_to_idx)
    return ds


def _category_classes(data: dict, name_to_idx: dict[str, int], things_only: bool) -> dict[int, int]:
    out = {}
    for cat in data.get("categories", []):
        if things_only and not cat.get("isthing", 1):
            continue
        if cat["name"] in name_to_idx:
            out[int(cat["id"])] = name_to_idx[cat["name"]]
    return out


def _setup_panoptic(ds: EvalDataset, data: dict, path: Path, name_to_idx: dict[str, int]) -> None:
    cat_to_cls = _category_classes(data, name_to_idx, things_only=True)
    png_dir = next((d for d in (path.parent.parent / path.stem, path.parent / path.stem)
                    if d.is_dir()), None)
    if png_dir is None:
        raise DatasetError(f"{path} needs its PNG folder {path.parent.parent / path.stem}")
    by_stem = {Path(a["file_name"]).stem: a for a in data["annotations"]}
    _require_all(ds.records, by_stem, path)
    ds.instance_classes = frozenset(cat_to_cls.values())
    ds.object_source = f"COCO panoptic things ({path.name})"

    def load(record: Record, gt: np.ndarray) -> InstanceSet:
        ann = by_stem[record.image_id]
        png = png_dir / ann["file_name"]
        try:
            with Image.open(png) as im:
                rgb = np.asarray(im.convert("RGB")).astype(np.int64)
        except (OSError, ValueError) as e:
            raise DatasetError(f"cannot read panoptic map {png}: {e}") from e
        _check_shape(rgb.shape[:2], gt.shape, png)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]
        classes = {int(s["id"]): cat_to_cls[int(s["category_id"])]
                   for s in ann["segments_info"] if int(s["category_id"]) in cat_to_cls}
        crowd = [int(s["id"]) for s in ann["segments_info"] if s.get("iscrowd", 0)]
        return InstanceSet(instances_from_id_map(ids, classes, crowd))

    ds.instance_loader = load


def _setup_instances(ds: EvalDataset, data: dict, path: Path, name_to_idx: dict[str, int]) -> None:
    try:
        from pycocotools import mask as mask_util
    except ImportError as e:  # pragma: no cover - pycocotools is in requirements.txt
        raise DatasetError("reading COCO instance JSON needs pycocotools: "
                           "pip install pycocotools") from e
    cat_to_cls = _category_classes(data, name_to_idx, things_only=False)
    images = {Path(im["file_name"]).stem: im for im in data.get("images", [])}
    _require_all(ds.records, images, path)
    anns: dict[int, list[dict]] = {}
    for a in data.get("annotations", []):
        anns.setdefault(int(a["image_id"]), []).append(a)
    ds.instance_classes = frozenset(cat_to_cls.values())
    ds.object_source = f"COCO instances ({path.name})"

    def load(record: Record, gt: np.ndarray) -> InstanceSet:
        im = images[record.image_id]
        h, w = int(im["height"]), int(im["width"])
        _check_shape((h, w), gt.shape, path)
        out = []
        for a in anns.get(int(im["id"]), []):
            if int(a["category_id"]) not in cat_to_cls:
                continue
            seg = a["segmentation"]
            if isinstance(seg, list):
                rle = mask_util.merge(mask_util.frPyObjects(seg, h, w))
            elif isinstance(seg.get("counts"), list):
                rle = mask_util.frPyObjects(seg, h, w)
            else:
                rle = seg
            with warnings.catch_warnings():  # pycocotools 2.0 + NumPy 2: a harmless warning
                warnings.simplefilter("ignore", DeprecationWarning)
                m = mask_util.decode(rle).astype(bool)
            if not m.any():
                continue
            ys, xs = np.nonzero(m)
            crop = m[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
            out.append(Instance(int(ys.min()), int(xs.min()), crop,
                                cat_to_cls[int(a["category_id"])], bool(a.get("iscrowd", 0))))
        return InstanceSet(out)

    ds.instance_loader = load


def _require_all(records: list[Record], index: dict, path: Path) -> None:
    missing = [r.image_id for r in records if r.image_id not in index]
    if missing:
        raise DatasetError(f"{path} has no annotation for {len(missing)} images, "
                           f"e.g. {missing[:5]}")


def _check_shape(shape: tuple[int, ...], gt_shape: tuple[int, ...], path: Path) -> None:
    if tuple(shape) != tuple(gt_shape):
        raise DatasetError(f"{path}: size {shape[1]}x{shape[0]} does not match the label map "
                           f"({gt_shape[1]}x{gt_shape[0]})")


def build_voc(root: str | Path, need_images: bool = True, vocab: Vocabulary | None = None,
              objects: str | None = None) -> EvalDataset:
    root = check_root(root)
    vocab = vocab or official_vocabulary("voc")
    label_dir = _first_dir(
        root, ["VOCZERO/annotations_detectron2/val_all", "annotations_detectron2/val_all"],
        "PASCAL VOC label maps", "run ZegFormer's datasets/pascal/prepare_pascal_voc_val_all.py",
    )
    base = label_dir.parents[1]
    records = [Record(p.stem, p) for p in list_labels(label_dir)]
    image_dir = _optional_dir(base, ["images/val", "JPEGImages", "../VOCdevkit/VOC2012/JPEGImages",
                                     "VOCdevkit/VOC2012/JPEGImages"])
    attach_images(records, image_dir, need_images)
    ds = EvalDataset("voc", root, vocab, 255, records, label_dir)
    obj_dir = Path(objects) if objects else _optional_dir(
        base, ["SegmentationObject", "../SegmentationObject", "../VOCdevkit/VOC2012/"
               "SegmentationObject", "VOCdevkit/VOC2012/SegmentationObject"])
    if objects and (obj_dir is None or not obj_dir.is_dir()):
        raise DatasetError(f"object directory {objects} does not exist")
    if obj_dir is None:
        log.warning("no SegmentationObject folder near %s: objects are 8-connected components",
                    base)
        return ds
    _attach_object_files(ds.records, lambda r: obj_dir / f"{r.image_id}.png", obj_dir)
    ds.instance_classes = None
    ds.object_source = f"VOC SegmentationObject ({obj_dir})"
    ds.instance_loader = id_map_loader(skip=(0, 255))
    return ds


def _attach_object_files(records: list[Record], path_of: Callable[[Record], Path | None],
                         where: Path) -> None:
    missing = []
    for r in records:
        r.object_path = path_of(r)
        if r.object_path is None or not r.object_path.is_file():
            missing.append(r.image_id)
    if missing:
        raise DatasetError(f"{where} has no instance file for {len(missing)} images, "
                           f"e.g. {missing[:5]}")


def nearest_resize_cv2(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize with OpenCV's INTER_NEAREST index rule: src = floor(dst * s/d)."""
    sh, sw = arr.shape[:2]
    ys = np.minimum(np.floor(np.arange(height) * (1.0 / (height / sh))).astype(np.int64), sh - 1)
    xs = np.minimum(np.floor(np.arange(width) * (1.0 / (width / sw))).astype(np.int64), sw - 1)
    return arr[ys[:, None], xs[None, :]]


def build_ade847(root: str | Path, need_images: bool = True, vocab: Vocabulary | None = None,
                 objects: str | None = None) -> EvalDataset:
    root = check_root(root)
    vocab = vocab or official_vocabulary("ade847")
    label_dir = _first_dir(
        root, ["ADE20K_2021_17_01/annotations_detectron2_freq/val_all",
               "annotations_detectron2_freq/val_all"],
        "ADE20K-Full label maps",
        "run ZegFormer's datasets/ade20k-full-frequency-split/"
        "prepare_ade20k_full_frequency_all_val.py",
    )
    base = label_dir.parents[1]
    records = [Record(p.stem, p) for p in list_labels(label_dir, (".tif", ".tiff", ".png"))]
    attach_images(records, _optional_dir(base, ["images_detectron2_freq/validation"]), need_images)
    ds = EvalDataset("ade847", root, vocab, 65535, records, label_dir)
    seg_root = Path(objects) if objects else _optional_dir(base, ["images/ADE/validation",
                                                                   "images/validation"])
    if objects and (seg_root is None or not seg_root.is_dir()):
        raise DatasetError(f"object directory {objects} does not exist")
    if seg_root is None:
        log.warning("no ADE20K images/ADE/validation folder under %s: objects are 8-connected "
                    "components", base)
        return ds
    index = {p.name[: -len("_seg.png")]: p for p in seg_root.rglob("*_seg.png")}
    _attach_object_files(ds.records, lambda r: index.get(r.image_id), seg_root)
    ds.instance_classes = None
    ds.object_source = f"ADE20K instance channel ({seg_root})"

    def load(record: Record, gt: np.ndarray) -> InstanceSet:
        assert record.object_path is not None
        try:
            with Image.open(record.object_path) as im:
                seg = np.asarray(im.convert("RGB"))
        except (OSError, ValueError) as e:
            raise DatasetError(f"cannot read {record.object_path}: {e}") from e
        inst = seg[..., 2]
        if inst.shape != gt.shape:
            inst = nearest_resize_cv2(inst, *gt.shape)
        return InstanceSet(instances_from_id_map(inst, skip=()))

    ds.instance_loader = load
    return ds


def build_dataset(name: str, root: str | Path, *, need_images: bool = True,
                  classes: str | Path | None = None, objects: str | None = None) -> EvalDataset:
    """Build an evaluation dataset by layout name.

    Args:
        name: "coco-stuff", "voc", "ade847" or "folder".
        root: dataset root.
        need_images: require every label map to have its image (False with saved predictions).
        classes: optional class-list JSON that replaces the default one.
        objects: optional object source that replaces the one found automatically (COCO:
            panoptic or instance JSON; VOC: SegmentationObject folder; ADE: folder of _seg.png).
    """
    from .datasets import build_folder

    vocab = load_vocabulary_file(Path(classes)) if classes else None
    if name == "folder":
        if objects:
            raise DatasetError("--objects is not used by the folder layout (use ROOT/objects/)")
        return build_folder(root, need_images, vocab)
    builders = {"coco-stuff": build_coco_stuff, "voc": build_voc, "ade847": build_ade847}
    if name not in builders:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return builders[name](root, need_images, vocab, objects)

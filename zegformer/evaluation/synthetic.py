"""Synthetic evaluation data with known answers, in every supported layout.

Each 128 x 192 image has two stuff regions (top / bottom half; ignored in VOC, whose background is
ignore) and nine thing squares at fixed places, with classes drawn from two seen and two unseen
thing classes::

    slot   size      area   abs bucket   note
    a      6 x 6       36   XS
    b     12 x 12     144   XS
    c     20 x 20     400   S
    d     40 x 40    1600   M
    e      3 x 3        9   -            dropped by the default min_area = 16
    f+g   12 x 12     144   XS           two instances of one class, side by side: connected
                                         components see one 288 px object (S)
    h    100 x 100  10000   L
    crowd 10 x 10     100   -            COCO only: a crowd segment (pixels count, no object)

Prediction rules (``predict``): ``perfect`` (= ground truth; ignore pixels get class 0),
``small_unseen_miss`` (perfect, except that unseen objects under 1024 px are predicted as the
first seen thing class), ``noisy`` (seeded; the chance of segmenting an object grows with its
size and is lower for unseen classes; misses take the surrounding stuff class).

    python -m zegformer.evaluation.synthetic --layout folder --root /tmp/synth --images 24 \\
        --predict noisy --seed 0
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.official import official_vocabulary
from .runner import save_prediction

H, W = 128, 192
# slot name -> (top, left, size)
SLOTS: dict[str, tuple[int, int, int]] = {
    "a": (4, 4, 6), "b": (4, 16, 12), "c": (4, 34, 20), "d": (30, 4, 40), "e": (30, 50, 3),
    "f": (80, 4, 12), "g": (80, 16, 12), "h": (20, 88, 100),
}
CROWD_SLOT = (100, 40, 10)
LAYOUTS = ("folder", "coco-stuff", "voc", "ade847")
# per layout: (stuff top, stuff bottom, seen things, unseen things); None stuff = ignore
CLASSES: dict[str, tuple[str | None, str | None, tuple[str, str], tuple[str, str]]] = {
    "folder": ("sky", "grass", ("cat", "dog"), ("frisbee", "cow")),
    "coco-stuff": ("sky-other", "grass", ("cat", "dog"), ("frisbee", "cow")),
    "voc": (None, None, ("cat", "dog"), ("sheep", "sofa")),
    "ade847": ("sky", "grass", ("cat", "box"), ("catwalk", "control panel")),
}
FOLDER_CLASSES = ["sky", "grass", "cat", "dog", "frisbee", "cow"]
COCO_IDS = {"cat": 17, "dog": 18, "frisbee": 34, "cow": 21}  # COCO category ids (1-based)


@dataclass
class SynthObject:
    """A thing placed in a synthetic image (the known answer)."""

    image_id: str
    slot: str
    class_id: int
    class_name: str
    unseen: bool
    y0: int
    x0: int
    size: int

    @property
    def area(self) -> int:
        return self.size * self.size


@dataclass
class SynthImage:
    image_id: str
    gt: np.ndarray  # H x W int64, ignore = the layout's ignore label
    instances: np.ndarray  # H x W int64 instance ids, 0 = none
    objects: list[SynthObject]
    stuff: tuple[int | None, int | None]


def layout_classes(layout: str) -> tuple[list[str], list[str]]:
    """(class names, unseen names) of a layout: the official list, or the folder demo list."""
    if layout == "folder":
        return FOLDER_CLASSES, ["frisbee", "cow"]
    v = official_vocabulary(layout)
    return v.classes, v.unseen


def make_images(layout: str, n_images: int, seed: int = 0) -> list[SynthImage]:
    """Ground truth, instance ids and the list of placed objects for ``n_images`` images."""
    names, unseen = layout_classes(layout)
    top, bottom, seen_things, unseen_things = CLASSES[layout]
    ignore = 65535 if layout == "ade847" else 255
    idx = {n: i for i, n in enumerate(names)}
    things = list(seen_things) + list(unseen_things)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_images):
        image_id = _stem(layout, i)
        gt = np.full((H, W), ignore, dtype=np.int64)
        s_top = idx[top] if top else None
        s_bot = idx[bottom] if bottom else None
        if s_top is not None and s_bot is not None:
            gt[: H // 2] = s_top
            gt[H // 2 :] = s_bot
        inst = np.zeros((H, W), dtype=np.int64)
        objs = []
        pair_cls = things[int(rng.integers(len(things)))]
        for k, (slot, (y, x, s)) in enumerate(SLOTS.items()):
            cname = pair_cls if slot in "fg" else things[int(rng.integers(len(things)))]
            c = idx[cname]
            gt[y : y + s, x : x + s] = c
            inst[y : y + s, x : x + s] = k + 1
            objs.append(SynthObject(image_id, slot, c, cname, cname in unseen, y, x, s))
        if layout == "voc":  # VOC's void ring (255) around every object, outside the squares
            ring = np.zeros((H, W), dtype=bool)
            for o in objs:
                y0, x0 = max(o.y0 - 1, 0), max(o.x0 - 1, 0)
                ring[y0 : o.y0 + o.size + 1, x0 : o.x0 + o.size + 1] = True
            ring &= inst == 0
            gt[ring] = ignore
            inst[ring] = 255
        out.append(SynthImage(image_id, gt, inst, objs, (s_top, s_bot)))
    return out


def _stem(layout: str, i: int) -> str:
    return {"coco-stuff": f"{i + 1:012d}", "voc": f"2007_{i + 1:06d}",
            "ade847": f"ADE_val_{i + 1:08d}"}.get(layout, f"img_{i + 1:03d}")


def render(img: SynthImage, seed: int = 0) -> np.ndarray:
    """An RGB picture of the ground truth (one colour per class, plus noise)."""
    rng = np.random.default_rng(seed)
    g = np.where(img.gt > 1000, 0, img.gt)
    colours = np.stack([(g * 53) % 256, (g * 97 + 40) % 256, (g * 151 + 90) % 256], axis=-1)
    noise = rng.integers(-12, 13, size=colours.shape)
    return np.clip(colours + noise, 0, 255).astype(np.uint8)


def write_dataset(root: str | Path, layout: str, n_images: int, seed: int = 0,
                  coco_objects: str = "panoptic", crowd: bool = True) -> list[SynthImage]:
    """Write a synthetic dataset in the official (or folder) layout under ``root``."""
    root = Path(root)
    imgs = make_images(layout, n_images, seed)
    if layout == "folder":
        d = {k: root / k for k in ("images", "labels", "objects")}
        for p in d.values():
            p.mkdir(parents=True, exist_ok=True)
        names, unseen = layout_classes(layout)
        things = list(CLASSES["folder"][2] + CLASSES["folder"][3])
        (root / "classes.json").write_text(json.dumps(
            {"name": "SYNTHETIC demo data", "classes": names, "unseen": unseen, "things": things},
            indent=1), encoding="utf-8")
        for im in imgs:
            Image.fromarray(render(im, seed)).save(d["images"] / f"{im.image_id}.png")
            Image.fromarray(im.gt.astype(np.uint8)).save(d["labels"] / f"{im.image_id}.png")
            ids = Image.fromarray(im.instances.astype(np.uint16))
            ids.save(d["objects"] / f"{im.image_id}.png")
    elif layout == "coco-stuff":
        _write_coco(root, imgs, seed, coco_objects, crowd)
    elif layout == "voc":
        base = root / "VOCZERO"
        for sub in ("images/val", "annotations_detectron2/val_all"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        obj_dir = root / "VOCdevkit/VOC2012/SegmentationObject"
        obj_dir.mkdir(parents=True, exist_ok=True)
        for im in imgs:
            Image.fromarray(render(im, seed)).save(base / "images/val" / f"{im.image_id}.jpg",
                                                   quality=95)
            Image.fromarray(im.gt.astype(np.uint8)).save(
                base / "annotations_detectron2/val_all" / f"{im.image_id}.png")
            pal = Image.fromarray(im.instances.astype(np.uint8), mode="P")
            pal.putpalette([v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, i)])
            pal.save(obj_dir / f"{im.image_id}.png")
    elif layout == "ade847":
        base = root / "ADE20K_2021_17_01"
        for sub in ("images_detectron2_freq/validation", "annotations_detectron2_freq/val_all",
                    "images/ADE/validation/outdoor/field"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        for im in imgs:
            Image.fromarray(render(im, seed)).save(
                base / "images_detectron2_freq/validation" / f"{im.image_id}.jpg", quality=95)
            Image.fromarray(im.gt.astype(np.uint16)).save(
                base / "annotations_detectron2_freq/val_all" / f"{im.image_id}.tif")
            # full-resolution _seg.png (2x): R/10*256+G = ADE class id (made up), B = instance
            inst = im.instances.copy()
            top, bot = im.stuff
            inst[(inst == 0) & (np.arange(H)[:, None] < H // 2)] = 50  # stuff regions are
            inst[(inst == 0) & (np.arange(H)[:, None] >= H // 2)] = 51  # instances in ADE too
            big = np.kron(inst, np.ones((2, 2), dtype=np.int64))
            cls = np.kron(np.where(im.gt > 1000, 0, im.gt + 1), np.ones((2, 2), dtype=np.int64))
            seg = np.stack([(cls // 256) * 10, cls % 256, big], axis=-1).astype(np.uint8)
            Image.fromarray(seg).save(base / "images/ADE/validation/outdoor/field" /
                                      f"{im.image_id}_seg.png")
    else:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    return imgs


def _write_coco(root: Path, imgs: list[SynthImage], seed: int, objects: str, crowd: bool) -> None:
    base = root / "coco/coco_stuff"
    for sub in ("images/val2017", "annotations_detectron2/val2017_all"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (root / "coco/annotations").mkdir(parents=True, exist_ok=True)
    pan_dir = root / "coco/panoptic_val2017"
    pan_dir.mkdir(parents=True, exist_ok=True)
    names, _ = layout_classes("coco-stuff")
    cats = [{"id": cid, "name": n, "isthing": 1} for n, cid in COCO_IDS.items()]
    cats += [{"id": 187, "name": "sky-other-merged", "isthing": 0},
             {"id": 193, "name": "grass-merged", "isthing": 0}]
    images, anns = [], []
    ann_id = 1
    for n, im in enumerate(imgs):
        gt = im.gt.copy()
        pan = np.zeros((H, W), dtype=np.int64)
        segs = []
        for k, o in enumerate(im.objects):
            sid = 1000 + k
            pan[im.instances == k + 1] = sid
            segs.append({"id": sid, "category_id": COCO_IDS[o.class_name], "iscrowd": 0})
        if crowd:
            y, x, s = CROWD_SLOT
            gt[y : y + s, x : x + s] = names.index("cat")
            pan[y : y + s, x : x + s] = 999
            segs.append({"id": 999, "category_id": COCO_IDS["cat"], "iscrowd": 1})
        im.gt = gt
        Image.fromarray(render(im, seed)).save(base / "images/val2017" / f"{im.image_id}.jpg",
                                               quality=95)
        Image.fromarray(gt.astype(np.uint8)).save(
            base / "annotations_detectron2/val2017_all" / f"{im.image_id}.png")
        rgb = np.stack([pan % 256, (pan // 256) % 256, pan // 65536], axis=-1).astype(np.uint8)
        Image.fromarray(rgb).save(pan_dir / f"{im.image_id}.png")
        images.append({"id": n + 1, "file_name": f"{im.image_id}.jpg", "height": H, "width": W})
        anns.append({"image_id": n + 1, "file_name": f"{im.image_id}.png", "segments_info": segs})
        if objects == "instances":
            from pycocotools import mask as mask_util

            for seg in segs:
                m = np.asfortranarray((pan == seg["id"]).astype(np.uint8))
                rle = mask_util.encode(m)
                rle["counts"] = rle["counts"].decode("ascii")
                anns.append({"id": ann_id, "image_id": n + 1, "category_id": seg["category_id"],
                             "iscrowd": seg["iscrowd"], "segmentation": rle})
                ann_id += 1
    if objects == "panoptic":
        doc = {"images": images, "annotations": anns, "categories": cats}
        (root / "coco/annotations/panoptic_val2017.json").write_text(json.dumps(doc))
    else:
        doc = {"images": images, "annotations": [a for a in anns if "segmentation" in a],
               "categories": [c for c in cats if c["isthing"]]}
        (root / "coco/annotations/instances_val2017.json").write_text(json.dumps(doc))


def predict(img: SynthImage, rule: str, layout: str, seed: int = 0) -> np.ndarray:
    """A synthetic prediction (HxW int64 class indices) for one image; see the module docstring."""
    ignore = 65535 if layout == "ade847" else 255
    pred = np.where(img.gt == ignore, 0, img.gt)
    if rule == "perfect":
        return pred
    names, _ = layout_classes(layout)
    first_seen = names.index(CLASSES[layout][2][0])
    rng = np.random.default_rng([seed, int.from_bytes(img.image_id.encode()[-4:], "little")])
    p_seen = {36: 0.55, 144: 0.75, 400: 0.85, 1600: 0.95, 9: 0.5, 10000: 1.0}
    p_unseen = {36: 0.1, 144: 0.25, 400: 0.45, 1600: 0.75, 9: 0.05, 10000: 0.9}
    for o in img.objects:
        sl = (slice(o.y0, o.y0 + o.size), slice(o.x0, o.x0 + o.size))
        background = img.stuff[0] if o.y0 + o.size // 2 < H // 2 else img.stuff[1]
        if rule == "small_unseen_miss":
            if o.unseen and o.area < 1024:
                pred[sl] = first_seen
        elif rule == "noisy":
            p = (p_unseen if o.unseen else p_seen)[o.area]
            if rng.random() >= p:
                pred[sl] = background if background is not None else 0
            elif o.size > 4 and rng.random() < 0.5:  # a ragged edge: lose one border column
                pred[sl[0], o.x0] = background if background is not None else 0
        else:
            raise ValueError(f"unknown rule {rule!r}: perfect, small_unseen_miss or noisy")
    return pred


def write_predictions(out_dir: str | Path, imgs: list[SynthImage], rule: str, layout: str,
                      seed: int = 0) -> Path:
    """Save ``predict`` label maps as ``out_dir/<stem>.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = len(layout_classes(layout)[0])
    for im in imgs:
        save_prediction(out / f"{im.image_id}.png", predict(im, rule, layout, seed), n)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zegformer.evaluation.synthetic",
                                description="Write a synthetic dataset (and predictions).")
    p.add_argument("--layout", choices=LAYOUTS, default="folder")
    p.add_argument("--root", required=True)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--predict", choices=("perfect", "small_unseen_miss", "noisy"), nargs="*",
                   default=[], help="also write ROOT/predictions_<rule>/<stem>.png")
    args = p.parse_args(argv)
    imgs = write_dataset(args.root, args.layout, args.images, args.seed)
    for rule in args.predict:
        write_predictions(Path(args.root) / f"predictions_{rule}", imgs, rule, args.layout,
                          args.seed)
    print(f"wrote {len(imgs)} {args.layout} images to {args.root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

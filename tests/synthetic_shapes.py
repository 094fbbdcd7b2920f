"""A tiny synthetic segmentation dataset in the `folder` layout with train / val splits.

Each image: a blue top region ("sky"), a green bottom region ("grass"), and a red square ("cat")
and a yellow bar ("dog") at random places and sizes. "dog" is the unseen class: the training split
marks it as such in classes.json, and the training set turns it into ignore.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["sky", "grass", "cat", "dog"]
UNSEEN = ["dog"]
COLOURS = {0: (40, 80, 220), 1: (40, 180, 60), 2: (220, 40, 40), 3: (230, 220, 40)}


def make_image(rng: np.random.Generator, h: int = 64, w: int = 64) -> tuple[np.ndarray, np.ndarray]:
    label = np.zeros((h, w), dtype=np.uint8)
    label[h // 2 + int(rng.integers(-8, 8)):] = 1
    s = int(rng.integers(12, 24))
    y, x = int(rng.integers(0, h - s)), int(rng.integers(0, w - s))
    label[y:y + s, x:x + s] = 2
    bh, bw = int(rng.integers(6, 10)), int(rng.integers(20, 36))
    y, x = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
    label[y:y + bh, x:x + bw] = 3
    image = np.zeros((h, w, 3), dtype=np.float64)
    for c, colour in COLOURS.items():
        image[label == c] = colour
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


def write_shapes_dataset(root: Path, n_train: int = 16, n_val: int = 6, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root = Path(root)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image, label = make_image(rng)
            Image.fromarray(image).save(root / "images" / split / f"{split}_{i:03d}.png")
            Image.fromarray(label).save(root / "labels" / split / f"{split}_{i:03d}.png")
    (root / "classes.json").write_text(json.dumps({"classes": CLASSES, "unseen": UNSEEN}))
    return root


def tiny_training_overrides(data: Path, out: Path, **extra: object) -> list[str]:
    """Config overrides (KEY VALUE ...) for a seconds-long run of the tiny config on the shapes
    dataset at `data`, writing to `out`; `extra` adds or replaces keys, `__` standing for `.`
    (`SOLVER__MAX_ITER=150`)."""
    values = {
        "OUTPUT_DIR": str(out), "MODEL.WEIGHTS": "",
        "DATASETS.TRAIN": f"('folder:{data}',)", "DATASETS.TEST": f"('folder:{data}',)",
        "INPUT.MIN_SIZE_TRAIN": "(64,)", "INPUT.MAX_SIZE_TRAIN": "128",
        "INPUT.CROP.ENABLED": "False", "INPUT.COLOR_AUG_SSD": "False",
        "INPUT.SIZE_DIVISIBILITY": "64", "INPUT.MIN_SIZE_TEST": "64",
        "SOLVER.IMS_PER_BATCH": "2", "SOLVER.BASE_LR": "0.001", "SOLVER.MAX_ITER": "6",
        "SOLVER.CHECKPOINT_PERIOD": "3", "DATALOADER.NUM_WORKERS": "0", "TEST.EVAL_PERIOD": "0",
        # Score with the segment classifier alone, as the official training configs do: the tiny
        # CLIP is random, so its crop scores (and the seen-class calibration) are noise.
        "MODEL.SEM_SEG_HEAD.CLIP_CLASSIFICATION": "False", "MODEL.MASK_FORMER.ENSEMBLING": "False",
        "MODEL.MASK_FORMER.GZERO_CALIBRATE": "-1.0",
        # A run this short with decoder dropout (0.1 officially) learns to tell its 10 queries
        # apart by the dropout noise, and in eval mode they all collapse to "no object".
        "MODEL.MASK_FORMER.DROPOUT": "0.0",
    }
    values.update({k.replace("__", "."): str(v) for k, v in extra.items()})
    return [x for kv in values.items() for x in kv]

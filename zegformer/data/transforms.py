"""The official training augmentation: MaskFormer's ``MaskFormerSemanticDatasetMapper`` with the
detectron2 augmentations its ``from_config`` builds from ``INPUT.*``, in the official order:

1. ResizeShortestEdge(MIN_SIZE_TRAIN, MAX_SIZE_TRAIN, MIN_SIZE_TRAIN_SAMPLING): the size rule is
   written by hand (detectron2's ``get_transform``: shorter side to a drawn size, longer side
   capped at MAX_SIZE_TRAIN, both rounded with ``int(x + 0.5)``); the resampling is
   ``torchvision.transforms.v2.functional.resize``: on a PIL image with BILINEAR, which is
   PIL's ``Image.resize`` exactly as detectron2 resizes uint8 images, and on the label as a
   ``tv_tensors.Mask`` with NEAREST, which is ``torch.nn.functional.interpolate(mode="nearest")``
   exactly as detectron2 resizes its float64 label.
2. RandomCrop_CategoryAreaConstraint(CROP.TYPE, CROP.SIZE, SINGLE_CATEGORY_MAX_AREA,
   MODEL.SEM_SEG_HEAD.IGNORE_VALUE), by hand (torchvision has no such rule): up to 10 windows
   are drawn; the first whose most frequent class (the ignore value left out) covers less than
   SINGLE_CATEGORY_MAX_AREA of the counted pixels, with at least two classes, is taken, else the
   10th; 1.0 disables the rule (one window). The cut itself is ``v2.functional.crop``.
3. ColorAugSSDTransform(INPUT.FORMAT) when COLOR_AUG_SSD, by hand (torchvision's ColorJitter
   blends differently and works in float HSV): on a BGR uint8 image (an RGB image is turned to
   BGR and back, as officially), brightness (p 0.5, delta U(-32, 32)), then with p 0.5 either
   contrast, saturation, hue or saturation, hue, contrast; contrast and saturation (p 0.5 each)
   scale by U(0.5, 1.5), hue (p 0.5) adds an integer in [-18, 18] to OpenCV's 0..179 hue; each
   step computes in float32 then clips and truncates to uint8. Needs OpenCV (cvtColor).
4. RandomFlip (horizontal, p 0.5): ``v2.functional.horizontal_flip`` on image and label together.
5. Padding to SIZE_DIVISIBILITY on the right and bottom, image with 128 and label with the
   dataset's ignore value (255; 65535 for ADE20K-Full): ``v2.functional.pad``. The official
   mapper pads to exactly SIZE_DIVISIBILITY x SIZE_DIVISIBILITY (the crop size in every official
   config); a side longer than that is padded up to the next multiple instead of being cut.
6. One binary mask per class present (ignore excluded) with the class ids, by hand.

Randomness: every draw comes from one ``numpy.random.Generator`` seeded by
``SeedSequence([seed, epoch, index])``, so a sample is the same in any DataLoader worker, process
or rank, and differs between epochs.
"""
from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ..errors import ConfigError, DatasetError

CROP_TYPES = ("absolute", "relative", "relative_range", "absolute_range")
_NUM = r"(\d+(?:\.\d*)?|\.\d+)"
_EVAL_LIST = re.compile(  # [int(x * F * S) for x in range(A, B)], as in the official Base configs
    r"^\s*(?:!!python/object/apply:eval\s*)?\[?\s*['\"]?\s*\[\s*int\(\s*x\s*\*\s*" + _NUM
    + r"\s*\*\s*" + _NUM + r"\s*\)\s+for\s+x\s+in\s+range\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*\]"
    r"\s*['\"]?\s*\]?\s*$")


def _number(text: str) -> int | float:
    return float(text) if "." in text else int(text)


def resolve_min_size_train(value: Any) -> tuple[int, ...]:
    """INPUT.MIN_SIZE_TRAIN as a tuple of ints.

    Accepts ints, lists / tuples of ints, their text (``"(512, 640)"``), and the one expression
    the official Base configs write with ``!!python/object/apply:eval``,
    ``[int(x * F * S) for x in range(A, B)]`` (recognised by pattern and computed here, never
    evaluated). Anything else raises ConfigError.
    """
    if isinstance(value, str):
        m = _EVAL_LIST.match(value)
        if m:
            f, s, a, b = _number(m[1]), _number(m[2]), int(m[3]), int(m[4])
            value = [int(x * f * s) for x in range(a, b)]
        else:
            try:
                value = ast.literal_eval(value.strip())
            except (ValueError, SyntaxError):
                raise ConfigError(f"INPUT.MIN_SIZE_TRAIN {value!r} is neither a list of sizes "
                                  "nor the official [int(x * F * S) for x in range(A, B)]") from None
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    if (not isinstance(value, (list, tuple)) or not value
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)):
        raise ConfigError(f"INPUT.MIN_SIZE_TRAIN must be a list of non-negative ints, got {value!r}")
    return tuple(value)


def _pair(value: Any, key: str) -> tuple[float, float]:
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            raise ConfigError(f"{key} {value!r} is not a pair of numbers") from None
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise ConfigError(f"{key} must be two numbers (height, width), got {value!r}")
    return (value[0], value[1])


@dataclass(frozen=True)
class AugmentationSettings:
    """The INPUT.* keys the official training mapper reads (see ``from_config``)."""

    min_size_train: tuple[int, ...]  # INPUT.MIN_SIZE_TRAIN (choices, or [min, max] for "range")
    min_size_train_sampling: str = "choice"  # INPUT.MIN_SIZE_TRAIN_SAMPLING: "choice" | "range"
    max_size_train: int = 1333  # INPUT.MAX_SIZE_TRAIN: cap on the longer side
    crop_enabled: bool = False  # INPUT.CROP.ENABLED
    crop_type: str = "absolute"  # INPUT.CROP.TYPE
    crop_size: tuple[float, float] = (512, 512)  # INPUT.CROP.SIZE (h, w) or fractions
    single_category_max_area: float = 1.0  # INPUT.CROP.SINGLE_CATEGORY_MAX_AREA; 1.0 = off
    crop_ignore_value: int | None = 255  # MODEL.SEM_SEG_HEAD.IGNORE_VALUE: left out of the rule
    color_aug_ssd: bool = False  # INPUT.COLOR_AUG_SSD
    image_format: str = "RGB"  # INPUT.FORMAT: channel order of the input and output image
    size_divisibility: int = -1  # INPUT.SIZE_DIVISIBILITY (<= 0: no padding)
    ignore_label: int = 255  # the training dataset's ignore value (label padding, no mask)

    def __post_init__(self) -> None:
        if self.min_size_train_sampling not in ("choice", "range"):
            raise ConfigError("INPUT.MIN_SIZE_TRAIN_SAMPLING must be 'choice' or 'range', got "
                              f"{self.min_size_train_sampling!r}")
        if self.min_size_train_sampling == "range" and len(self.min_size_train) != 2:
            raise ConfigError("INPUT.MIN_SIZE_TRAIN needs [min, max] with sampling 'range'")
        if self.crop_type not in CROP_TYPES:
            raise ConfigError(f"INPUT.CROP.TYPE must be one of {CROP_TYPES}, got "
                              f"{self.crop_type!r}")
        if self.image_format not in ("RGB", "BGR"):
            raise ConfigError(f"INPUT.FORMAT must be RGB or BGR, got {self.image_format!r}")

    @classmethod
    def from_config(cls, cfg: Mapping, ignore_label: int | None = None) -> AugmentationSettings:
        """Read an official config (``zegformer.config.load_config``).

        Args:
            cfg: the config tree.
            ignore_label: the training dataset's ignore value (the official mapper takes it from
                the dataset metadata: 255 for COCO-Stuff and VOC, 65535 for ADE20K-Full);
                default MODEL.SEM_SEG_HEAD.IGNORE_VALUE.
        """
        inp, crop = cfg["INPUT"], cfg["INPUT"].get("CROP", {})
        head_ignore = cfg.get("MODEL", {}).get("SEM_SEG_HEAD", {}).get("IGNORE_VALUE", 255)
        if "MIN_SIZE_TRAIN" not in inp:
            raise ConfigError("the config has no INPUT.MIN_SIZE_TRAIN (not a training config?)")
        return cls(
            min_size_train=resolve_min_size_train(inp["MIN_SIZE_TRAIN"]),
            min_size_train_sampling=str(inp.get("MIN_SIZE_TRAIN_SAMPLING", "choice")),
            max_size_train=int(inp.get("MAX_SIZE_TRAIN", 1333)),
            crop_enabled=bool(crop.get("ENABLED", False)),
            crop_type=str(crop.get("TYPE", "absolute")),
            crop_size=_pair(crop.get("SIZE", (0.9, 0.9)), "INPUT.CROP.SIZE"),
            single_category_max_area=float(crop.get("SINGLE_CATEGORY_MAX_AREA", 1.0)),
            crop_ignore_value=int(head_ignore),
            color_aug_ssd=bool(inp.get("COLOR_AUG_SSD", False)),
            image_format=str(inp.get("FORMAT", "RGB")),
            size_divisibility=int(inp.get("SIZE_DIVISIBILITY", -1)),
            ignore_label=int(head_ignore if ignore_label is None else ignore_label),
        )


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one sample: the same for the same (seed, epoch, index) everywhere."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch, index])))


def resized_shape(h: int, w: int, size: int, max_size: int) -> tuple[int, int]:
    """(new_h, new_w) of detectron2's ResizeShortestEdge for a drawn shorter-side ``size``."""
    scale = size * 1.0 / min(h, w)
    newh, neww = (size, scale * w) if h < w else (scale * h, size)
    if max(newh, neww) > max_size:
        scale = max_size * 1.0 / max(newh, neww)
        newh, neww = newh * scale, neww * scale
    return int(newh + 0.5), int(neww + 0.5)


def crop_shape(s: AugmentationSettings, h: int, w: int,
               rng: np.random.Generator) -> tuple[int, int]:
    """(crop_h, crop_w) of detectron2's RandomCrop.get_crop_size for an (h, w) image."""
    ch, cw = s.crop_size
    if s.crop_type == "relative":
        return int(h * ch + 0.5), int(w * cw + 0.5)
    if s.crop_type == "relative_range":
        c = np.asarray(s.crop_size, dtype=np.float32)
        ch, cw = c + rng.random(2) * (1 - c)
        return int(h * ch + 0.5), int(w * cw + 0.5)
    if s.crop_type == "absolute":
        return min(int(ch), h), min(int(cw), w)
    lo, hi = int(ch), int(cw)  # absolute_range: (min, max) for both sides
    return (int(rng.integers(min(h, lo), min(h, hi) + 1)),
            int(rng.integers(min(w, lo), min(w, hi) + 1)))


def crop_window(s: AugmentationSettings, label: np.ndarray,
                rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(top, left, height, width) by RandomCrop_CategoryAreaConstraint (see the module doc)."""
    h, w = label.shape
    for _ in range(1 if s.single_category_max_area >= 1.0 else 10):
        ch, cw = crop_shape(s, h, w, rng)
        y0, x0 = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
        if s.single_category_max_area >= 1.0:
            break
        values, counts = np.unique(label[y0:y0 + ch, x0:x0 + cw], return_counts=True)
        if s.crop_ignore_value is not None:
            counts = counts[values != s.crop_ignore_value]
        if len(counts) > 1 and counts.max() < counts.sum() * s.single_category_max_area:
            break
    return y0, x0, ch, cw


def _convert(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def color_aug_ssd(image: np.ndarray, rng: np.random.Generator, image_format: str = "RGB",
                  brightness_delta: float = 32, contrast: tuple[float, float] = (0.5, 1.5),
                  saturation: tuple[float, float] = (0.5, 1.5), hue_delta: int = 18) -> np.ndarray:
    """detectron2's ColorAugSSDTransform on an HxWx3 uint8 image in ``image_format`` order."""
    import cv2

    img = image[:, :, ::-1] if image_format == "RGB" else image
    img = np.ascontiguousarray(img)

    def coin() -> bool:
        return bool(rng.integers(2))

    def do_contrast(x: np.ndarray) -> np.ndarray:
        return _convert(x, alpha=float(rng.uniform(*contrast))) if coin() else x

    def do_saturation(x: np.ndarray) -> np.ndarray:
        if not coin():
            return x
        hsv = cv2.cvtColor(x, cv2.COLOR_BGR2HSV)
        hsv[:, :, 1] = _convert(hsv[:, :, 1], alpha=float(rng.uniform(*saturation)))
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)

    def do_hue(x: np.ndarray) -> np.ndarray:
        if not coin():
            return x
        hsv = cv2.cvtColor(x, cv2.COLOR_BGR2HSV)
        shift = int(rng.integers(-hue_delta, hue_delta + 1))
        hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + shift) % 180
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)

    if coin():
        img = _convert(img, beta=float(rng.uniform(-brightness_delta, brightness_delta)))
    if coin():
        img = do_hue(do_saturation(do_contrast(img)))
    else:
        img = do_contrast(do_hue(do_saturation(img)))
    return np.ascontiguousarray(img[:, :, ::-1]) if image_format == "RGB" else img


class SemanticTrainMapper:
    """One training sample: image + label map -> augmented, padded tensors and per-class masks.

    Args:
        settings: the INPUT.* values (``AugmentationSettings.from_config(cfg)``).
        seed: base seed; sample (epoch, index) uses ``sample_rng(seed, epoch, index)``.

    Call with ``image`` (HxWx3 uint8 numpy array or PIL image, channels in
    ``settings.image_format``) and ``sem_seg`` (HxW integer class ids, ignore =
    ``settings.ignore_label``). Returns a dict:

    * ``"image"``: uint8 tensor 3 x H x W, 0-255, same channel order (RGB for the official
      configs, matching MODEL.PIXEL_MEAN), padded with 128;
    * ``"sem_seg"``: int64 tensor H x W, padded with the ignore value;
    * ``"instances"``: ``{"labels": int64 [n] (sorted class ids), "masks": bool [n, H, W]}``,
      one mask per class present, never covering ignore pixels;
    * ``"image_size"``: (h, w) of the valid region before padding; ``"index"``, ``"epoch"``.
    """

    def __init__(self, settings: AugmentationSettings, seed: int = 0) -> None:
        self.settings = settings
        self.seed = int(seed)
        if settings.color_aug_ssd:
            try:
                import cv2  # noqa: F401
            except ImportError:
                raise ConfigError("INPUT.COLOR_AUG_SSD needs OpenCV (as detectron2's "
                                  "ColorAugSSDTransform): pip install opencv-python-headless") \
                    from None

    def __call__(self, image: np.ndarray | Image.Image, sem_seg: np.ndarray, *, index: int,
                 epoch: int = 0) -> dict[str, Any]:
        s = self.settings
        rng = sample_rng(self.seed, epoch, index)
        pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
        label = tv_tensors.Mask(torch.as_tensor(np.asarray(sem_seg).astype(np.int64)))
        if pil.mode != "RGB":
            raise DatasetError(f"expected an HxWx3 uint8 image, got PIL mode {pil.mode}")
        if (pil.height, pil.width) != tuple(label.shape):
            raise DatasetError(f"image is {pil.width}x{pil.height} but its label map is "
                               f"{label.shape[1]}x{label.shape[0]}")
        # 1. resize
        if s.min_size_train_sampling == "range":
            size = int(rng.integers(s.min_size_train[0], s.min_size_train[1] + 1))
        else:
            size = int(rng.choice(s.min_size_train))
        if size:
            new = list(resized_shape(pil.height, pil.width, size, s.max_size_train))
            pil = TF.resize(pil, new, interpolation=InterpolationMode.BILINEAR)
            label = TF.resize(label, new, interpolation=InterpolationMode.NEAREST)
        img = TF.pil_to_tensor(pil)  # 3 x H x W uint8
        # 2. crop
        if s.crop_enabled:
            top, left, ch, cw = crop_window(s, label.numpy(), rng)
            img, label = TF.crop(img, top, left, ch, cw), TF.crop(label, top, left, ch, cw)
        # 3. colour
        if s.color_aug_ssd:
            hwc = color_aug_ssd(img.permute(1, 2, 0).numpy(), rng, s.image_format)
            img = torch.from_numpy(hwc).permute(2, 0, 1).contiguous()
        # 4. flip
        if rng.uniform(0.0, 1.0) < 0.5:
            img, label = TF.horizontal_flip(img), TF.horizontal_flip(label)
        # 5. pad
        h, w = img.shape[-2:]
        if s.size_divisibility > 0:
            d = s.size_divisibility
            pad = [0, 0, -(-w // d) * d - w, -(-h // d) * d - h]  # left, top, right, bottom
            img = TF.pad(img, pad, fill=128)
            label = TF.pad(label, pad, fill=s.ignore_label)
        sem = label.as_subclass(torch.Tensor).to(torch.int64).contiguous()
        return {"image": img.contiguous(), "sem_seg": sem,
                "instances": class_masks(sem, s.ignore_label), "image_size": (int(h), int(w)),
                "index": index, "epoch": epoch}


def class_masks(sem_seg: torch.Tensor, ignore_label: int) -> dict[str, torch.Tensor]:
    """``{"labels": int64 [n], "masks": bool [n, H, W]}``: one mask per class id present."""
    labels = torch.unique(sem_seg)
    labels = labels[labels != ignore_label]
    return {"labels": labels.to(torch.int64), "masks": sem_seg[None] == labels[:, None, None]}

"""Turning user images into RGB uint8 arrays, and the official resizing rule."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError

Image.MAX_IMAGE_PIXELS = 200_000_000  # refuse decompression bombs beyond 200 MP
MAX_ASPECT_RATIO = 20.0


def load_image(source: str | os.PathLike | Image.Image | np.ndarray) -> np.ndarray:
    """Read an image as H x W x 3 uint8 RGB.

    Accepts a path, a PIL image (EXIF orientation applied) or an array. Grayscale is repeated to
    three channels; an alpha channel is composited onto white; 16-bit and 32-bit integer images are
    scaled to 8 bits by their maximum possible value; float arrays must be in [0, 1].

    Raises:
        ImageError: unreadable file, unsupported array, empty or degenerate image.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"image not found: {path}")
        try:
            with Image.open(path) as im:
                im.load()
                return load_image(im)
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
            raise ImageError(f"{path.name}: not a readable image ({type(e).__name__})") from None
    if isinstance(source, Image.Image):
        return _from_pil(source)
    if isinstance(source, np.ndarray):
        return _from_array(source)
    raise ImageError(f"expected an image (path, PIL image or array), got {type(source).__name__}")


def _from_pil(im: Image.Image) -> np.ndarray:
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # broken EXIF data should not lose the image
        pass
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im)
        return _from_array(arr.astype(np.uint16 if im.mode.startswith("I;16") else np.int32))
    if im.mode == "F":
        return _from_array(np.asarray(im, dtype=np.float32))
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im)
    return _check(np.asarray(im.convert("RGB")))


def _from_array(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageError(f"expected an H x W, H x W x 3 or H x W x 4 array, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        raise ImageError("a boolean array is a mask, not an image")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise ImageError("float images must hold values in [0, 1]")
        arr = np.round(arr * 255).astype(np.uint8)
    elif arr.dtype == np.uint16:
        arr = (arr.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    elif arr.dtype in (np.int32, np.uint32, np.int64):
        top = 65535 if arr.max() > 255 else 255
        arr = (np.clip(arr, 0, top).astype(np.int64) * 255 // top).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ImageError(f"unsupported image dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.shape[2] == 4:
        alpha = arr[..., 3:].astype(np.float32) / 255
        arr = np.round(arr[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    return _check(np.ascontiguousarray(arr))


def _check(arr: np.ndarray) -> np.ndarray:
    h, w = arr.shape[:2]
    if h < 2 or w < 2:
        raise ImageError(f"image is too small ({w} x {h} pixels)")
    if max(h, w) / min(h, w) > MAX_ASPECT_RATIO:
        raise ImageError(f"image is too elongated ({w} x {h}); at most {MAX_ASPECT_RATIO:.0f}:1")
    return arr


def shortest_edge_size(h: int, w: int, short: int, max_size: int) -> tuple[int, int]:
    """detectron2's ResizeShortestEdge: scale the short side to `short`, cap the long side at
    `max_size`, round with int(x + 0.5). Returns (new_h, new_w)."""
    scale = short / min(h, w)
    nh, nw = (short, scale * w) if h < w else (scale * h, short)
    if max(nh, nw) > max_size:
        s = max_size / max(nh, nw)
        nh, nw = nh * s, nw * s
    return int(nh + 0.5), int(nw + 0.5)


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize H x W x 3 uint8 to (h, w) with PIL bilinear, as detectron2 does."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    return np.array(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))


def limit_size(image: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale so the long side is at most `max_side` (aspect kept); smaller images unchanged."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    s = max_side / max(h, w)
    return resize(image, (max(2, round(h * s)), max(2, round(w * s))))

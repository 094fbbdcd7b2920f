"""Turning user images into RGB uint8 arrays, and the official resizing rule.

Limits (each refused with an `ImageError` naming the cap):
- more than `MAX_IMAGE_PIXELS` pixels (width x height), checked from the file header before any
  pixel is decoded: a 351 KB PNG can claim 19000 x 19000 grey pixels (361 MP, 7 GB to process);
- file formats other than `IMAGE_FORMATS` (Pillow's plugins for e.g. EPS would run Ghostscript);
- URLs (`http://...`, `file://...`, `data:...`): images are read from local files or memory only,
  this library never fetches anything;
- fewer than 2 pixels a side, or longer than `MAX_ASPECT_RATIO` : 1.
"""
from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError

MAX_IMAGE_PIXELS = 40_000_000  # width x height accepted by load_image (a 7296 x 5472 photo)
MAX_ASPECT_RATIO = 20.0
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "AVIF", "GIF", "BMP", "TIFF", "PPM")  # JPEG covers MPO
_URL = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.\-]+://|data:|file:)", re.ASCII)

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO, Image.Image,
                    np.ndarray]


def load_image(source: ImageSource, *, max_pixels: int | None = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read an image as H x W x 3 uint8 RGB.

    Accepts a path, encoded bytes or a binary file object, a PIL image (EXIF orientation applied)
    or an array. Grayscale is repeated to three channels; an alpha channel (RGBA, LA, a palette
    with a transparent colour) is composited onto white; 16-bit and 32-bit integer images are
    scaled to 8 bits by their maximum possible value (16-bit mid-grey 32768 -> 127); float arrays
    must be in [0, 1].

    Args:
        source: the image. A string that looks like a URL is refused, never fetched.
        max_pixels: largest width x height accepted (default `MAX_IMAGE_PIXELS`); files, bytes
            and not-yet-loaded PIL images are checked from their header, before decoding.
            None: no limit of ours (Pillow's own bomb check, by default above 179 MP, stays).

    Raises:
        ImageError: URL, unreadable file, unaccepted format, too many pixels, unsupported array,
            empty or degenerate image.
    """
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if isinstance(text, str) and _URL.match(text.strip()):
            shown = text.strip()[:80]
            raise ImageError(f"{shown!r} is a URL; images are only read from local files or "
                             "uploads, never fetched (download it first)")
        path = Path(text)
        if not path.is_file():
            raise ImageError(f"image not found: {path}")
        return _decode(path, path.name, max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode(io.BytesIO(bytes(source)), "image", max_pixels)
    if hasattr(source, "read") and not isinstance(source, (Image.Image, np.ndarray)):
        return _decode(source, getattr(source, "name", None) or "image", max_pixels)
    if isinstance(source, Image.Image):
        _check_pixels(source.size, "image", max_pixels)
        return _from_pil(source)
    if isinstance(source, np.ndarray):
        if source.ndim in (2, 3):
            _check_pixels(source.shape[1::-1], "array", max_pixels)
        return _from_array(source)
    raise ImageError("expected an image (path, bytes, file object, PIL image or array), got "
                     f"{type(source).__name__}")


def _decode(fp, label: str, max_pixels: int | None) -> np.ndarray:
    """Open `fp` (path or binary file), check the header's size, then decode."""
    label = Path(str(label)).name or "image"
    try:
        with Image.open(fp, formats=IMAGE_FORMATS) as im:
            _check_pixels(im.size, label, max_pixels)  # header only: nothing decoded yet
            im.load()
            return _from_pil(im)
    except ImageError:
        raise
    except Image.DecompressionBombError:  # Pillow refused the header first (> 2 x its limit)
        most = f"; at most {max_pixels / 1e6:g} MP are accepted" if max_pixels else ""
        raise ImageError(f"{label}: the image is too large (over "
                         f"{2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f} MP, a decompression "
                         f"bomb?){most} (downscale it first)") from None
    except UnidentifiedImageError:
        raise ImageError(f"{label}: not a readable image (accepted formats: "
                         f"{', '.join(IMAGE_FORMATS)})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"{label}: not a readable image ({type(e).__name__})") from None


def _check_pixels(size: tuple[int, int], label: str, max_pixels: int | None) -> None:
    w, h = int(size[0]), int(size[1])
    if max_pixels is not None and w * h > max_pixels:
        raise ImageError(f"{label}: {w} x {h} pixels ({w * h / 1e6:.0f} MP) is too large; at "
                         f"most {max_pixels / 1e6:g} MP are accepted (downscale it first)")


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

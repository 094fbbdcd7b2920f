"""Pre-processing of one image, as the official test-time mapper and model do it.

resize (shortest edge to MIN_SIZE_TEST, long edge capped at MAX_SIZE_TEST, bilinear on uint8 as
detectron2's ResizeShortestEdge) -> normalise with a mean/std (RGB, 0-255 scale) -> zero-pad
bottom/right to a multiple of the size divisibility.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .image import resize, shortest_edge_size


@dataclass
class Preprocessed:
    """One image ready for the model.

    resized: 3 x h x w float, 0-255 RGB, the image the model sees (before normalising).
    image: 1 x 3 x Hp x Wp normalised and padded (Hp, Wp multiples of the divisibility).
    """

    resized: torch.Tensor
    image: torch.Tensor

    @property
    def size(self) -> tuple[int, int]:
        """(h, w) of the resized image, before padding."""
        return int(self.resized.shape[-2]), int(self.resized.shape[-1])


def resize_shortest_edge(rgb: np.ndarray, short: int, max_size: int,
                         device: torch.device | str = "cpu") -> torch.Tensor:
    """H x W x 3 uint8 -> 3 x h x w float 0-255 with min(h, w) = short, max(h, w) <= max_size."""
    h, w = rgb.shape[:2]
    nh, nw = shortest_edge_size(h, w, short, max_size)
    arr = resize(rgb, (nh, nw))
    arr = arr if arr.flags.writeable else arr.copy()  # torch refuses read-only arrays
    return torch.from_numpy(arr).to(device).permute(2, 0, 1).float()


def normalize_and_pad(x: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                      divisor: int) -> torch.Tensor:
    """3 x h x w 0-255 -> 1 x 3 x Hp x Wp: (x - mean) / std, zero-padded to multiples of divisor."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return pad_to_multiple((x - m) / s, divisor)[None]


def pad_to_multiple(x: torch.Tensor, divisor: int) -> torch.Tensor:
    """Zero-pad ... x H x W bottom/right to multiples of `divisor` (no-op for divisor <= 0)."""
    if divisor <= 0:
        return x
    h, w = x.shape[-2:]
    ph, pw = (-h) % divisor, (-w) % divisor
    return F.pad(x, (0, pw, 0, ph)) if ph or pw else x


def preprocess(rgb: np.ndarray, *, short: int, max_size: int, mean: Sequence[float],
               std: Sequence[float], divisor: int,
               device: torch.device | str = "cpu") -> Preprocessed:
    """Resize, normalise and pad an H x W x 3 uint8 RGB image (see the module docstring)."""
    x = resize_shortest_edge(rgb, short, max_size, device)
    return Preprocessed(resized=x, image=normalize_and_pad(x, mean, std, divisor))

"""Class colours: stable per class name across requests, distinct within one vocabulary."""

import colorsys
import hashlib
from typing import Sequence

import numpy as np

_N_HUES, _TONES = 20, ((0.80, 0.92), (0.70, 0.62), (0.45, 0.95))  # (saturation, value)


# Entry i has hue (7 i mod 20) and tone (i mod 3): neighbouring entries look different and, as
# 20 and 3 are coprime, the 60 entries are the 60 distinct (hue, tone) pairs.
PALETTE: np.ndarray = np.array(  # 60 x 3 uint8; no near-white, no near-black entries
    [[round(255 * c) for c in colorsys.hsv_to_rgb((7 * i % _N_HUES) / _N_HUES, *_TONES[i % 3])]
     for i in range(_N_HUES * len(_TONES))], dtype=np.uint8)


def _name_key(name: str) -> str:
    return " ".join(name.lower().split())


def _home_index(name: str) -> int:
    digest = hashlib.blake2b(_name_key(name).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % len(PALETTE)


def class_color(name: str) -> tuple[int, int, int]:
    """The colour of one class name, the same in every request and process.

    The palette entry is chosen by a stable hash of the lower-cased, whitespace-normalised name
    (not Python's salted `hash`). Two names may share a colour; `class_colors` resolves that.

    Returns:
        (r, g, b) ints in 0..255.
    """
    r, g, b = PALETTE[_home_index(name)]
    return int(r), int(g), int(b)


def _extra_color(j: int) -> tuple[int, int, int]:
    # Colours beyond the palette for vocabularies of more than 60 classes: golden-angle hues.
    hue = (0.137 + j * 0.6180339887) % 1.0
    s, v = ((0.60, 0.85), (0.90, 0.75), (0.50, 0.70))[j % 3]
    r, g, b = colorsys.hsv_to_rgb(hue, s, v)
    return round(255 * r), round(255 * g), round(255 * b)


def class_colors(names: Sequence[str]) -> np.ndarray:
    """Distinct colours for one vocabulary.

    Every class starts from `class_color(name)`. On a collision, classes are settled in sorted
    order of their normalised names (so the result does not depend on the order they were typed
    in): the first keeps its colour, the next ones probe the following palette entries, and when
    all 60 are taken, further colours are generated.

    Args:
        names: K class names.

    Returns:
        K x 3 uint8 array; no two rows are equal.
    """
    colors = np.zeros((len(names), 3), dtype=np.uint8)
    used: set[tuple[int, ...]] = set()
    extra = 0
    for i in sorted(range(len(names)), key=lambda i: (_name_key(names[i]), i)):
        home = _home_index(names[i])
        probes = (tuple(int(c) for c in PALETTE[(home + j) % len(PALETTE)])
                  for j in range(len(PALETTE)))
        chosen = next((c for c in probes if c not in used), None)
        while chosen is None or chosen in used:  # palette exhausted
            chosen, extra = _extra_color(extra), extra + 1
        used.add(chosen)
        colors[i] = chosen
    return colors


def hex_color(rgb: Sequence[int]) -> str:
    """'#rrggbb' for an (r, g, b) triple."""
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in rgb[:3]))

"""Size buckets (SMALL_TARGETS.md section 8.3). All bins are half-open, [lo, hi).

Absolute buckets, in pixels of the evaluated ground-truth map::

    XS [min_area, 256)   S [256, 1024)   M [1024, 9216)   L [9216, inf)

plus COCO_small = XS + S, COCO_medium = M, COCO_large = L. Deviation from COCO, on purpose:
COCO's closed ranges put an object of exactly 1024 px (or 9216 px) in two buckets; here it goes
to the upper one only.

Relative buckets, in decades of the image area r = area / (H * W) (ignore pixels included)::

    R0 r < 0.1%   R1 [0.1%, 1%)   R2 [1%, 10%)   R3 r >= 10%

Relative edges are compared exactly (as fractions), so r = 0.001 lands in R1, never in R0.
"""
from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

ABS_EDGES: tuple[int, int, int] = (256, 1024, 9216)  # upper edges of XS, S, M
ABS_BUCKETS: tuple[str, ...] = ("XS", "S", "M", "L")
REL_EDGES: tuple[float, float, float] = (0.001, 0.01, 0.1)
REL_BUCKETS: tuple[str, ...] = ("R0", "R1", "R2", "R3")
BELOW_MIN = "below_min"  # abs bucket of an object smaller than min_area (dropped)
ALL = "ALL"  # every kept object, whatever its size

# Bucket groups reported next to the primary buckets: name -> primary buckets it unites.
ABS_GROUPS: dict[str, tuple[str, ...]] = {
    "COCO_small": ("XS", "S"),
    "COCO_medium": ("M",),
    "COCO_large": ("L",),
    ALL: ABS_BUCKETS,
}
REL_GROUPS: dict[str, tuple[str, ...]] = {ALL: REL_BUCKETS}
SCHEMES: tuple[str, ...] = ("abs", "rel")


def abs_bucket(area: int, min_area: int = 16, edges: Sequence[int] = ABS_EDGES) -> str:
    """Absolute size bucket of an object of ``area`` pixels ("below_min" under ``min_area``)."""
    if area < min_area:
        return BELOW_MIN
    for name, hi in zip(ABS_BUCKETS, edges):
        if area < hi:
            return name
    return ABS_BUCKETS[len(edges)]


def _fraction(edge: float) -> Fraction:
    # Fraction("0.001") is exactly 1/1000, unlike Fraction(0.001) (the binary float).
    return Fraction(repr(float(edge)))


def rel_bucket(area: int, height: int, width: int, edges: Sequence[float] = REL_EDGES) -> str:
    """Relative size bucket of an object of ``area`` pixels in a ``height`` x ``width`` image."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    image_area = int(height) * int(width)
    for name, edge in zip(REL_BUCKETS, edges):
        f = _fraction(edge)
        # area / image_area < num / den, in integers
        if int(area) * f.denominator < f.numerator * image_area:
            return name
    return REL_BUCKETS[len(edges)]


def bucket_order(scheme: str) -> tuple[str, ...]:
    """Primary buckets of a scheme followed by its groups, in report order."""
    if scheme == "abs":
        return ABS_BUCKETS + tuple(ABS_GROUPS)
    if scheme == "rel":
        return REL_BUCKETS + tuple(REL_GROUPS)
    raise ValueError(f"unknown bucket scheme {scheme!r}; expected one of {SCHEMES}")


def primary_buckets(scheme: str) -> tuple[str, ...]:
    """The primary (non-overlapping) buckets of a scheme, smallest first."""
    return ABS_BUCKETS if scheme == "abs" else REL_BUCKETS


def members(scheme: str, bucket: str) -> tuple[str, ...]:
    """Primary buckets that make up ``bucket`` (itself, or the buckets of a group)."""
    groups = ABS_GROUPS if scheme == "abs" else REL_GROUPS
    if bucket in groups:
        return groups[bucket]
    if bucket in primary_buckets(scheme):
        return (bucket,)
    raise ValueError(f"unknown bucket {bucket!r} for scheme {scheme!r}")

"""Disk use and encoding time of what one request writes, lossless PNG (before) vs WebP (now).

    python scripts/measure_outputs.py [--size 2048x1536] [--image examples/coffee.jpg]
                                      [--modes decoupled pixel]

Segments the image (resized to --size) with the tiny random model in each mode, then writes the
app's files (`APP_LAYOUT`: overlay, figure and label map per mode, disagreement map, JSON) and
the demo CLI's (`cli_layout`) twice: with `picture_format="png"` (what was written before) and
with the default (WebP, quality 90). A second scene replaces the tiny model's label maps, which
hardly vary, by six regions of the image's colours (boundaries like a real model's), to show
that the sizes do not depend on that. Prints the bytes per file and the totals.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zegformer import load_random_predictor  # noqa: E402
from zegformer.inference.result import SegmentationResult, class_statistics  # noqa: E402
from zegformer.viz import export  # noqa: E402

CLASSES = "cup, table, wall, plant, window, chair"


def region_results(rgb: np.ndarray, like: list[SegmentationResult]) -> list[SegmentationResult]:
    """Results whose label maps are six colour regions of `rgb` (modes differ by a shift)."""
    small = np.asarray(Image.fromarray(rgb).resize((64, 48), Image.Resampling.BOX)).astype(float)
    h, w = rgb.shape[:2]
    out = []
    for shift, r in enumerate(like):
        score = np.stack([-np.abs(small.mean(-1) - 40 * k - 20 * shift) for k in range(6)])
        big = np.stack([np.asarray(Image.fromarray(s.astype(np.float32)).resize(
            (w, h), Image.Resampling.BILINEAR)) for s in score])
        probs = np.exp(big / 10.0).astype(np.float32)
        probs /= probs.sum(0, keepdims=True)
        labels, stats = class_statistics(probs, r.class_names, [True] * 3 + [False] * 3)
        out.append(SegmentationResult(r.class_names, probs, labels, stats, r.mode, r.timings,
                                      r.model, r.untrained, r.device, r.original_size))
    return out


def write(results, rgb, layout: export.FileLayout) -> tuple[dict[str, int], float]:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        written = export.write_results(tmp, rgb, results, 0.5, layout)
        seconds = time.perf_counter() - t0
        return {p.name: p.stat().st_size for p in written.files}, seconds


def report(title: str, results, rgb) -> None:
    print(f"\n== {title}")
    for name, base in (("app", export.APP_LAYOUT), ("cli", export.cli_layout("photo"))):
        png, t_png = write(results, rgb, export.FileLayout(**{**base.__dict__,
                                                              "picture_format": "png"}))
        now, t_now = write(results, rgb, base)
        print(f"{name} layout{'':26}{'PNG (before)':>14}{'now':>12}")
        for (a, sa), (b, sb) in zip(png.items(), now.items()):
            print(f"  {b:<32}{sa / 1e6:>11.2f} MB{sb / 1e6:>9.2f} MB")
        total_a, total_b = sum(png.values()), sum(now.values())
        print(f"  {'total':<32}{total_a / 1e6:>11.2f} MB{total_b / 1e6:>9.2f} MB "
              f"({total_a / total_b:.1f}x smaller)")
        print(f"  {'write_results time':<32}{t_png:>12.2f} s{t_now:>9.2f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="2048x1536", help="W x H the image is resized to")
    p.add_argument("--image", default=str(Path(__file__).resolve().parent.parent / "examples"
                                          / "coffee.jpg"))
    p.add_argument("--modes", nargs="+", default=["decoupled", "pixel"])
    args = p.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    with Image.open(args.image) as im:
        rgb = np.asarray(im.convert("RGB").resize((w, h), Image.Resampling.BICUBIC))
    predictor = load_random_predictor(device="cpu")
    results = [predictor.predict(rgb, CLASSES, mode=m) for m in args.modes]
    print(f"{Path(args.image).name} at {w} x {h}, modes {', '.join(args.modes)}")
    report("tiny random model", results, rgb)
    report("six colour regions", region_results(rgb, results), rgb)


if __name__ == "__main__":
    main()

"""What test-time augmentation costs: one plain prediction vs the TEST.AUG average, per mode.

    python scripts/benchmark_tta.py [--config tiny] [--size 480] [--threads 1] [--repeat 3]
                                    [--device cpu] [--modes decoupled pixel]

Random weights (the cost does not depend on them). Prints seconds per image for the plain pass
and for TTA, the number of passes, the ratio, and peak memory where the device reports it.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zegformer import load_random_predictor  # noqa: E402

CLASSES = ["person", "dog", "grass", "sky", "tree", "building", "road", "car", "cat", "frisbee"]


def _seconds(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="tiny")
    p.add_argument("--size", type=int, default=480, help="image height (width = 4/3 of it)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--modes", nargs="+", default=["decoupled", "pixel"])
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    predictor = load_random_predictor(args.config, device=args.device)
    aug = predictor.settings.tta
    image = np.random.default_rng(0).integers(0, 256, (args.size, args.size * 4 // 3, 3),
                                              dtype=np.uint8)
    print(f"{predictor.describe()} on {args.device} ({torch.get_num_threads()} threads), image "
          f"{image.shape[1]}x{image.shape[0]}, {len(CLASSES)} classes; TEST.AUG sizes "
          f"{list(aug.min_sizes)}, max {aug.max_size}, flip {aug.flip}: {aug.n_passes} passes")
    for mode in args.modes:
        predictor.predict(image, CLASSES, mode, tta=False)  # warm-up, text embeddings cached
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        plain = _seconds(lambda: predictor.predict(image, CLASSES, mode, tta=False), args.repeat)
        peak_plain = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith(
            "cuda") else float("nan")
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        with_tta = _seconds(lambda: predictor.predict(image, CLASSES, mode, tta=True), args.repeat)
        peak_tta = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith(
            "cuda") else float("nan")
        print(f"  {mode:<10} plain {plain:7.3f} s   TTA {with_tta:7.3f} s   "
              f"({aug.n_passes} passes, {with_tta / plain:5.1f}x)   peak GiB plain {peak_plain:.2f}"
              f" TTA {peak_tta:.2f}", flush=True)


if __name__ == "__main__":
    main()

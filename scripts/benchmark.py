"""Per-stage latency and peak memory of the full-size model (random weights) on CPU and CUDA.

    python scripts/benchmark.py [--config NAME] [--size 640] [--threads N] [--repeat 3]
                                [--classes N] [--device cpu cuda]

Random weights time the same computation as trained ones. Prints one table per device and mode.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zegformer import load_random_predictor  # noqa: E402
from zegformer.data.vocabularies import load_vocabulary  # noqa: E402

STAGES = ["preprocess", "text", "backbone", "pixel_decoder", "transformer", "clip_crops",
          "clip_dense", "merge", "statistics", "total"]


def run(device: str, args: argparse.Namespace) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        print("cuda: not available on this machine, skipped")
        return
    t = time.perf_counter()
    predictor = load_random_predictor(args.config, device=device)
    build_s = time.perf_counter() - t
    predictor.text.disk = None  # time the text tower, not the disk cache of earlier runs
    predictor.crop_features.max_entries = 0  # the same image every run: encode its crops each time
    classes = load_vocabulary("coco_stuff_171")["classes"][: args.classes]
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (args.size, round(args.size * 4 / 3), 3), dtype=np.uint8)
    print(f"\n{device}: {predictor.describe()}, image {image.shape[1]}x{image.shape[0]}, "
          f"{len(classes)} classes, threads {torch.get_num_threads()}, build {build_s:.1f} s")
    for mode in args.modes:
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        predictor.text._cache.clear()
        cold = predictor.predict(image, classes, mode=mode).timings  # text tower runs here
        runs = [predictor.predict(image, classes, mode=mode).timings for _ in range(args.repeat)]
        print(f"  mode {mode}: first run (text embeddings computed) {cold['total']:.2f} s, "
              f"of which text {cold.get('text', 0):.2f} s")
        print(f"  mode {mode}: median of {args.repeat} runs with cached text (seconds)")
        for stage in STAGES:
            vals = [rt[stage] for rt in runs if stage in rt]
            if vals:
                print(f"    {stage:<14}{statistics.median(vals):8.3f}")
        if device == "cuda":
            print(f"    peak CUDA memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"  peak process RSS so far {rss:.2f} GiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="zegformer_R101_bs32_60k_vit16_coco-stuff_gzss_eval")
    ap.add_argument("--size", type=int, default=640, help="image height (width = 4/3 of it)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--classes", type=int, default=171)
    ap.add_argument("--modes", nargs="+", default=["decoupled", "pixel"])
    ap.add_argument("--device", nargs="+", default=["cpu", "cuda"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for device in args.device:
        run(device, args)


if __name__ == "__main__":
    main()

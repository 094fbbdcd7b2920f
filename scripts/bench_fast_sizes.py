"""Fast path vs exact path for several CLIP crop sizes, on the same images and weights (CPU).

    python scripts/bench_fast_sizes.py --config RUN/config.yaml --weights RUN/model_final.pth \\
        --clip-weights CLIP.pt --images DIR --classes-file JSON [--sizes 224 160 112]
        [--max-images 6] [--threads 1] [--eval-scoring] [--quantize]

Per image: the exact path once (empty crop caches), then `fast=FastSettings(crop_size=S)` for each
size (empty caches, towers built before the timing: fp32 like the library's default, int8
with `--quantize`). Printed per size: argmax agreement with
the exact path over all pixels, max |diff| of the probabilities, median CPU and wall time of the
exact path / the fast path, the CPU of the CLIP-crop stage, crops encoded. No official-equivalent
run (scripts/benchmark.py does that).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from zegformer import load_predictor  # noqa: E402
from zegformer.inference.fast import FastSettings  # noqa: E402
from zegformer.inference.image import load_image  # noqa: E402
from zegformer.text import CLIP_TEMPLATES  # noqa: E402


def timed(fn):
    c, t = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--clip-weights", default=None)
    ap.add_argument("--eval-scoring", action="store_true",
                    help="a run of scripts/train_bench_model.py: CLIP classification + ensembling")
    ap.add_argument("--images", required=True)
    ap.add_argument("--max-images", type=int, default=6)
    ap.add_argument("--classes-file", required=True)
    ap.add_argument("--sizes", nargs="+", type=int, default=[224, 160, 112])
    ap.add_argument("--max-crops", type=int, default=None)
    ap.add_argument("--mass-fraction", type=float, default=None)
    ap.add_argument("--quantize", action=argparse.BooleanOptionalAction, default=None,
                    help="int8 towers (default: FastSettings' default, fp32)")
    ap.add_argument("--share-iou", type=float, default=None,
                    help="FastSettings.share_iou (0: only equal masks share a crop)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    opts: list[str] = []
    if args.eval_scoring:
        from train_bench_model import EVAL_OPTS
        opts = list(EVAL_OPTS)
    p = load_predictor(args.config, args.weights, clip_weights=args.clip_weights, device="cpu",
                       opts=opts)
    names = list(json.loads(Path(args.classes_file).read_text())["classes"])
    p.text(names, p.settings.prompt_ensemble_type)
    p.text(names, CLIP_TEMPLATES)
    extra = {k: v for k, v in (("max_crops", args.max_crops),
                                ("mass_fraction", args.mass_fraction)) if v is not None}
    extra["quantize"] = FastSettings().quantize if args.quantize is None else args.quantize
    if args.share_iou is not None:
        extra["share_iou"] = args.share_iou if args.share_iou > 0 else None
    settings = {s: FastSettings(crop_size=s, **extra) for s in args.sizes}
    for s in args.sizes:
        p.fast_towers.tower(s, extra["quantize"])
    files = sorted(f for f in Path(args.images).iterdir()
                   if f.suffix.lower() in (".png", ".jpg", ".jpeg"))[: args.max_images]
    load = os.getloadavg()[0]
    print(f"{p.describe()}; settings {settings[args.sizes[0]]};\n  {len(files)} images, "
          f"{len(names)} classes, threads {torch.get_num_threads()}, load average {load:.1f}",
          flush=True)
    rows: dict = {"exact": []}
    rows.update({s: [] for s in args.sizes})
    for f in files:
        rgb = load_image(f)
        p.crop_features.clear()
        p.fast_crop_features.clear()
        e, wall, cpu = timed(lambda: p.predict(rgb, names))
        rows["exact"].append(dict(wall=wall, cpu=cpu, clip=e.timings.get("clip_crops", 0.0),
                                  enc=p.crop_stats.get("encoded")))
        line = [f"{f.name}: exact {cpu:6.2f} s CPU ({p.crop_stats.get('encoded')} crops)"]
        for s in args.sizes:
            p.crop_features.clear()
            p.fast_crop_features.clear()
            r, wall, cpu = timed(lambda: p.predict(rgb, names, fast=settings[s]))
            rows[s].append(dict(wall=wall, cpu=cpu, clip=r.timings.get("clip_crops", 0.0),
                                enc=p.crop_stats.get("encoded"),
                                agree=int((r.label_map == e.label_map).sum()),
                                n=int(e.label_map.size),
                                diff=float(np.abs(r.probs - e.probs).max())))
            line.append(f"{s}: {cpu:5.2f} s CPU {(r.label_map == e.label_map).mean():.2%}")
        print("  " + "; ".join(line), flush=True)

    def med(key: str, k) -> float:
        return statistics.median(r[key] for r in rows[k])

    ex = rows["exact"]
    print(f"\nexact: median {med('cpu', 'exact'):.2f} s CPU, {med('wall', 'exact'):.2f} s wall, "
          f"CLIP stage {med('clip', 'exact'):.2f} s wall, crops {[r['enc'] for r in ex]}")
    print("crop  tokens  agreement   max|diff|  CPU x (median)  wall x  fast CPU s  "
          "CLIP wall s  crops")
    for s in args.sizes:
        rs = rows[s]
        agree = sum(r["agree"] for r in rs) / sum(r["n"] for r in rs)
        cx = statistics.median(a["cpu"] / b["cpu"] for a, b in zip(ex, rs))
        wx = statistics.median(a["wall"] / b["wall"] for a, b in zip(ex, rs))
        tokens = (s // p.clip.patch_size) ** 2
        print(f"{s:4d}  {tokens:6d}  {agree:9.2%}  {max(r['diff'] for r in rs):10.3g}  "
              f"{cx:13.2f}x  {wx:5.2f}x  {med('cpu', s):10.2f}  {med('clip', s):11.2f}  "
              f"{[r['enc'] for r in rs]}", flush=True)


if __name__ == "__main__":
    main()

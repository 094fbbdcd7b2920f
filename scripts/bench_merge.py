"""Merge + per-class statistics time for large vocabularies, before and after, per mode.

    python scripts/bench_merge.py [--config tiny] [--size 480] [--repeat 3] [--threads N]
                                  [--vocabularies coco_stuff_171 ade20k_full_847]
                                  [--modes decoupled pixel] [--device cpu] [--opts K V ...]
                                  [--rule-weights DIR]

"before" is `predict(full_maps=True)`: all K classes at the image size, then the statistics
from the K x H x W maps (the code path before the statistics were computed from the
working-resolution maps; where the decoupled masks are merged at the image size, `full_maps`
merges them that way too); "after" is the default `predict`. Both give the same label map and
statistics (tests/test_map_statistics.py). Text embeddings are computed once before timing.
"model" is the network itself (backbone, pixel decoder, transformer, CLIP crops / dense CLIP,
text); "outside" is everything else, as a share of the total. Every run is timed as a new
image's: the CLIP crop-feature cache (which makes a second vocabulary on the same image skip the
image tower) is switched off. `--rule-weights DIR` times the full-size network (COCO-Stuff R101,
ViT-B/16 CLIP) with the deterministic rule weights of `scripts/benchmark.py` instead of `--config`.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmark import RULE_CONFIG, rule_weights  # noqa: E402
from zegformer import load_predictor, load_random_predictor  # noqa: E402
from zegformer.inference.crop_cache import CropFeatureCache  # noqa: E402
from zegformer.data.vocabularies import load_vocabulary  # noqa: E402

MODEL_STAGES = ("text", "backbone", "pixel_decoder", "transformer", "clip_crops", "clip_dense")


def _median(runs: list[dict[str, float]], key) -> float:
    return statistics.median(key(t) for t in runs)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="tiny", help="config for random weights (default: tiny)")
    ap.add_argument("--size", type=int, default=480, help="image height (width = 4/3 of it)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--vocabularies", nargs="+", default=["coco_stuff_171", "ade20k_full_847"])
    ap.add_argument("--modes", nargs="+", default=["decoupled", "pixel"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--opts", nargs="*", default=[], help="config overrides KEY VALUE ...")
    ap.add_argument("--rule-weights", metavar="DIR", default=None,
                    help="full-size network with the rule weights (written to DIR once)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.rule_weights:
        ckpt, clip = rule_weights(Path(args.rule_weights))
        predictor = load_predictor(RULE_CONFIG, ckpt, clip_weights=clip, device=args.device,
                                   opts=args.opts)
    else:
        predictor = load_random_predictor(args.config, device=args.device, opts=args.opts)
    predictor.crop_features = CropFeatureCache(0)  # every run as a new image's
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (args.size, round(args.size * 4 / 3), 3), dtype=np.uint8)
    print(f"{predictor.describe()} on {args.device}, image {image.shape[1]}x{image.shape[0]}, "
          f"threads {torch.get_num_threads()}, median of {args.repeat} runs (seconds)")
    print(f"{'vocabulary':<16}{'mode':<11}{'path':<8}{'merge':>8}{'stats':>8}{'merge+st':>10}"
          f"{'model':>8}{'total':>8}{'outside':>9}")
    for vocab in args.vocabularies:
        classes = load_vocabulary(vocab)["classes"]
        for mode in args.modes:
            predictor.predict(image, classes, mode=mode)  # text embeddings, warm caches
            for path, full in (("before", True), ("after", False)):
                runs = [predictor.predict(image, classes, mode=mode, full_maps=full).timings
                        for _ in range(args.repeat)]
                merge = _median(runs, lambda t: t.get("merge", 0.0))
                stats = _median(runs, lambda t: t["statistics"])
                both = _median(runs, lambda t: t.get("merge", 0.0) + t["statistics"])
                model = _median(runs, lambda t: sum(t.get(k, 0.0) for k in MODEL_STAGES))
                total = _median(runs, lambda t: t["total"])
                outside = _median(runs, lambda t: 1 - sum(t.get(k, 0.0) for k in MODEL_STAGES)
                                  / t["total"])
                print(f"{vocab:<16}{mode:<11}{path:<8}{merge:8.3f}{stats:8.3f}{both:10.3f}"
                      f"{model:8.3f}{total:8.3f}{outside:9.0%}", flush=True)


if __name__ == "__main__":
    main()

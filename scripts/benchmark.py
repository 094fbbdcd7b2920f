"""Speed of the official-equivalent, exact and fast decoupled paths, on the same images and weights.

    python scripts/benchmark.py [--config NAME|YAML] [--weights PTH] [--clip-weights PT]
                                [--rule-weights DIR] [--image FILE|NPZ] [--images DIR]
                                [--classes N | --classes-file JSON] [--threads N]
                                [--device cpu cuda] [--text 171 847] [--merge 171 847]

Weights: `--weights` (+ `--clip-weights`), or `--rule-weights DIR` (the reference rule weights,
tests/fake_weights.py salt "pub", full-size COCO-Stuff R101 `_gzss_eval` and CLIP ViT-B/16,
written to DIR once), else random weights of `--config`. A model trained by
`python -m zegformer.train`: scripts/train_bench_model.py trains one and prints nothing else.

Per image, in this order and each with empty crop caches (a first visit of the image):
official-equivalent (`plain=True`: every crop encoded, the official algorithm), exact (the
default), fast (`fast=True`). Text embeddings are computed before the timed runs. Printed:
ratios first (official-equivalent / exact, exact / fast, medians over images), argmax agreement
and max |diff| of fast vs exact (all pixels of all images), then per-stage times, wall and CPU
time, peak RSS (and CUDA max allocated) per path; then cold and warm text times (a temporary
disk cache: cold = text tower + writes, warm = a new in-memory cache reading the files) and
merge + statistics times (scripts/bench_merge.py) for 171 and 847 classes. On CUDA the exact
path is also timed in fp32 without autocast.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

from zegformer import load_predictor, load_random_predictor  # noqa: E402
from zegformer.data.vocabularies import load_vocabulary  # noqa: E402
from zegformer.inference.fast import DEFAULT_FAST  # noqa: E402
from zegformer.inference.image import load_image  # noqa: E402
from zegformer.text import CLIP_TEMPLATES  # noqa: E402

RULE_CONFIG = "zegformer_R101_bs32_60k_vit16_coco-stuff_gzss_eval"
GOLDEN = ROOT / "tests" / "data" / "golden_coco-stuff_R101_train_salt-pub.npz"
STAGES = ["preprocess", "backbone", "pixel_decoder", "transformer", "clip_crops", "merge",
          "statistics", "total"]
PATHS = ("official-eq", "exact", "fast")
VOCABS = {171: "coco_stuff_171", 847: "ade20k_full_847"}


class PeakRSS:
    """Largest resident set size while the block runs (sampled every 10 ms from /proc)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def now() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:  # not Linux: the process-wide maximum
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def __enter__(self) -> "PeakRSS":
        self.peak = self.now()

        def sample() -> None:
            while not self._stop.wait(0.01):
                self.peak = max(self.peak, self.now())
        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


def rule_weights(folder: Path) -> tuple[Path, Path]:
    """The reference rule weights (salt "pub"), written to `folder` the first time (~30 s)."""
    from fake_weights import KEYS_DIR, save_clip_file, save_zegformer_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    ckpt, clip = folder / "gzss_eval_pub.pth", folder / "clip_pub.pt"
    if not ckpt.is_file():
        save_zegformer_checkpoint(KEYS_DIR / f"{RULE_CONFIG}.txt", ckpt, "pub")
    if not clip.is_file():
        save_clip_file(clip, "pub")
    return ckpt, clip


def build(args: argparse.Namespace, device: str):
    opts = list(args.opts)
    if args.rule_weights:
        ckpt, clip = rule_weights(Path(args.rule_weights))
        return load_predictor(args.config or RULE_CONFIG, ckpt, clip_weights=clip, device=device,
                              opts=opts), "rule weights (tests/fake_weights.py, salt pub)"
    if args.weights:
        if args.eval_scoring:
            from train_bench_model import EVAL_OPTS
            opts = EVAL_OPTS + opts
        return load_predictor(args.config, args.weights, clip_weights=args.clip_weights,
                              device=device, opts=opts), f"weights {args.weights}"
    return load_random_predictor(args.config or RULE_CONFIG, device=device, opts=opts), \
        "random weights"


def images(args: argparse.Namespace) -> list[tuple[str, np.ndarray]]:
    if args.images:
        files = sorted(p for p in Path(args.images).iterdir()
                       if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[: args.max_images]
        return [(p.name, load_image(p)) for p in files]
    if args.image:
        if args.image.endswith(".npz"):
            return [(Path(args.image).name, np.load(args.image)["image_rgb"])]
        return [(Path(args.image).name, load_image(args.image))]
    rng = np.random.default_rng(0)
    return [("random", rng.integers(0, 256, (args.size, round(args.size * 4 / 3), 3),
                                    dtype=np.uint8))]


def class_names(args: argparse.Namespace) -> list[str]:
    if args.classes_file:
        return list(json.loads(Path(args.classes_file).read_text())["classes"])
    if args.image and args.image.endswith(".npz"):
        return [str(n) for n in np.load(args.image)["class_names"]]
    return load_vocabulary("coco_stuff_171")["classes"][: args.classes]


def timed(predictor, device: str, fn):
    """(result, wall s, process CPU s, peak RSS bytes, CUDA max allocated bytes or None)."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() as rss:
        c, t = time.process_time(), time.perf_counter()
        out = fn()
        wall, cpu = time.perf_counter() - t, time.process_time() - c
    cuda = torch.cuda.max_memory_allocated() if device == "cuda" else None
    return out, wall, cpu, rss.peak, cuda


def compare(args: argparse.Namespace, predictor, device: str) -> None:
    names = class_names(args)
    predictor.text(names, predictor.settings.prompt_ensemble_type)
    predictor.text(names, CLIP_TEMPLATES)
    t = time.perf_counter()
    if device == "cpu":  # the fast path's default tower (its crop size, int8 or not)
        predictor.fast_towers.tower(DEFAULT_FAST.crop_size, DEFAULT_FAST.quantize)
    print(f"  fast image tower ({DEFAULT_FAST}) built once in {time.perf_counter() - t:.2f} s "
          "(not in the times)")
    runs: dict[str, list] = {p: [] for p in PATHS}
    variants = [("official-eq", dict(plain=True)), ("exact", {}), ("fast", dict(fast=True))]
    if device == "cuda":
        variants.insert(2, ("exact fp32", {}))
        runs["exact fp32"] = []
    agree = total = 0
    max_diff = 0.0
    for name, rgb in images(args):
        print(f"  image {name} {rgb.shape[1]}x{rgb.shape[0]}, {len(names)} classes", flush=True)
        by_path = {}
        for label, kw in variants:
            predictor.crop_features.clear()
            predictor.fast_crop_features.clear()
            ctx = (lambda: contextlib.nullcontext()) if label == "exact fp32" else None
            saved = predictor._autocast
            if ctx is not None:
                predictor._autocast = ctx
            try:
                res, wall, cpu, rss, cuda = timed(predictor, device,
                                                  lambda: predictor.predict(rgb, names, **kw))
            finally:
                predictor._autocast = saved
            res.probs  # noqa: B018 - compute the full maps outside the timing
            runs[label].append(dict(res=res, wall=wall, cpu=cpu, rss=rss, cuda=cuda,
                                    crops=dict(predictor.crop_stats)))
            by_path[label] = res
            print(f"    {label:<12} {wall:8.2f} s wall {cpu:8.2f} s CPU  crops "
                  f"{predictor.crop_stats}", flush=True)
        e, f = by_path["exact"], by_path["fast"]
        agree += int((e.label_map == f.label_map).sum())
        total += e.label_map.size
        max_diff = max(max_diff, float(np.abs(e.probs - f.probs).max()))
        d = float(np.abs(by_path["exact"].probs - by_path["official-eq"].probs).max())
        print(f"    exact vs official-eq max|diff| {d:.2e}; fast vs exact agreement "
              f"{(e.label_map == f.label_map).mean():.4%}", flush=True)

    def med(label: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[label])

    print("\n  RATIOS (median over images, wall time; CPU time in brackets)")
    for a, b, what in (("official-eq", "exact", "exact path vs official-equivalent"),
                       ("exact", "fast", "fast path vs exact path")):
        ratio = statistics.median(x["wall"] / y["wall"] for x, y in zip(runs[a], runs[b]))
        cratio = statistics.median(x["cpu"] / y["cpu"] for x, y in zip(runs[a], runs[b]))
        print(f"    {what:<38} {ratio:6.2f}x faster  ({cratio:.2f}x CPU)")
    print(f"    fast vs exact: argmax agreement {agree / total:.4%} of {total} pixels, "
          f"max |diff| {max_diff:.3e}")
    print("\n  per-stage seconds (median over images)")
    labels = [p for p in runs if runs[p]]
    print("    " + f"{'stage':<15}" + "".join(f"{p:>13}" for p in labels))
    for stage in STAGES:
        vals = [statistics.median(r["res"].timings.get(stage, 0.0) for r in runs[p])
                for p in labels]
        print("    " + f"{stage:<15}" + "".join(f"{v:13.3f}" for v in vals))
    print("    " + f"{'CPU time':<15}" + "".join(f"{med(p, 'cpu'):13.2f}" for p in labels))
    print("    " + f"{'peak RSS GiB':<15}" +
          "".join(f"{max(r['rss'] for r in runs[p]) / 2**30:13.2f}" for p in labels))
    if device == "cuda":
        print("    " + f"{'CUDA max GiB':<15}" +
              "".join(f"{max(r['cuda'] for r in runs[p]) / 2**30:13.2f}" for p in labels))
    print("    " + f"{'crops encoded':<15}" +
          "".join(f"{statistics.median(r['crops'].get('encoded', 0) for r in runs[p]):13.0f}"
                  for p in labels))


def text_times(predictor, sizes: list[int]) -> None:
    """Cold (text tower, written to an empty disk cache) and warm (read back) text embeddings."""
    from zegformer.text_cache import TextDiskCache

    saved_disk = predictor.text.disk
    print("\n  text embeddings (both template sets: the prompt ensemble and CLIP's)")
    with tempfile.TemporaryDirectory(prefix="zegformer-bench-text-") as tmp:
        predictor.text.disk = TextDiskCache(tmp)
        try:
            for n in sizes:
                names = load_vocabulary(VOCABS[n])["classes"]
                times = []
                for _ in ("cold", "warm disk"):
                    predictor.text._cache.clear()
                    t = time.perf_counter()
                    predictor.text(names, predictor.settings.prompt_ensemble_type)
                    predictor.text(names, CLIP_TEMPLATES)
                    times.append(time.perf_counter() - t)
                t = time.perf_counter()
                predictor.text(names, CLIP_TEMPLATES)
                mem = time.perf_counter() - t
                print(f"    {n:>4} classes: cold {times[0]:8.2f} s, warm (disk) "
                      f"{times[1]:6.3f} s, warm (memory) {mem:.4f} s", flush=True)
        finally:
            predictor.text.disk = saved_disk


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None, help=f"config (default {RULE_CONFIG})")
    ap.add_argument("--weights", default=None, help="ZegFormer checkpoint (.pth / .safetensors)")
    ap.add_argument("--clip-weights", default=None, help="CLIP file for --weights")
    ap.add_argument("--rule-weights", metavar="DIR", default=None,
                    help="use the reference rule weights, written to DIR once")
    ap.add_argument("--eval-scoring", action="store_true", help="with --weights of a run of "
                    "scripts/train_bench_model.py: CLIP classification + ensembling on")
    ap.add_argument("--opts", nargs="*", default=[], help="config overrides KEY VALUE ...")
    ap.add_argument("--image", default=None, help=f"image file or npz with image_rgb and "
                    f"class_names (e.g. {GOLDEN.relative_to(ROOT)})")
    ap.add_argument("--images", default=None, help="folder of images (all, up to --max-images)")
    ap.add_argument("--max-images", type=int, default=8)
    ap.add_argument("--size", type=int, default=480, help="random image height without --image")
    ap.add_argument("--classes", type=int, default=5, help="first N COCO-Stuff classes")
    ap.add_argument("--classes-file", default=None, help='JSON {"classes": [...]}')
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", nargs="+", default=["cpu", "cuda"])
    ap.add_argument("--text", nargs="*", type=int, default=[171, 847], choices=sorted(VOCABS),
                    help="vocabulary sizes for the text times (none: skip)")
    ap.add_argument("--merge", nargs="*", type=int, default=[171, 847], choices=sorted(VOCABS),
                    help="vocabulary sizes for merge + statistics (none: skip)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    for device in args.device:
        if device == "cuda" and not torch.cuda.is_available():
            print("cuda: not available on this machine, skipped")
            continue
        t = time.perf_counter()
        predictor, source = build(args, device)
        print(f"\n{device}: {predictor.describe()}, {source}; threads {torch.get_num_threads()}, "
              f"{os.cpu_count()} CPUs, load average {load:.1f}; built in "
              f"{time.perf_counter() - t:.1f} s", flush=True)
        compare(args, predictor, device)
        if args.text:
            text_times(predictor, args.text)
    if args.merge:
        import bench_merge

        print("\nmerge + statistics (scripts/bench_merge.py: tiny random model with 100 queries, "
              "CPU)", flush=True)
        bench_merge.main(["--vocabularies", *(VOCABS[n] for n in args.merge), "--repeat", "2",
                          "--opts", "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "100"])


if __name__ == "__main__":
    main()

"""Training speed: time per iteration and peak memory of one official training step, and the
data loader's images per second.

    python scripts/benchmark_training.py [--config NAME] [--size 640] [--batch 1] [--steps 3]
                                         [--threads N] [--device cpu cuda] [--workers 0 2]

The step is the real one (`Trainer.step`: forward with deep supervision, Hungarian matching and
the weighted losses, backward, full-model clipping, AdamW, WarmupPolyLR) on random weights and a
random batch of `--batch` images of `--size` x `--size` with 5 classes each; the text embeddings
of the training classes are random (they are computed once per run in real training). The data
loader reads synthetic 640 x 480 JPEG / PNG pairs through the config's full augmentation
(resize choice, 640 crop with the category-area rule, SSD colour augmentation, flip, padding).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zegformer.loading.build import build_model  # noqa: E402
from zegformer.loading.config import load_config  # noqa: E402
from zegformer.loading.settings import settings_from_config  # noqa: E402
from zegformer.training.criterion import SetCriterion  # noqa: E402
from zegformer.training.forward import prepare_for_training, training_outputs  # noqa: E402
from zegformer.training.metrics import peak_memory_mb  # noqa: E402
from zegformer.training.optimizer import build_optimizer, clip_gradients, optimizer_parameters  # noqa: E402
from zegformer.training.schedule import build_lr_scheduler  # noqa: E402


def random_targets(n: int, size: int, k: int, device: torch.device) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        label = torch.randint(0, 5, (size // 32, size // 32), generator=g)
        label = label.repeat_interleave(32, 0).repeat_interleave(32, 1)
        classes = torch.unique(label)
        out.append({"labels": classes.to(device), "masks": (label[None] == classes[:, None, None])
                    .to(device)})
    return out


def time_steps(device: str, args: argparse.Namespace) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        print("cuda: not available on this machine, skipped")
        return
    dev = torch.device(device)
    cfg = load_config(args.config)
    s = settings_from_config(cfg)
    k = int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
    model = prepare_for_training(build_model(s)).to(dev)
    criterion = SetCriterion(k, dec_layers=s.dec_layers).to(dev)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_lr_scheduler(cfg, optimizer)
    amp = bool(cfg.SOLVER.AMP.ENABLED) and dev.type == "cuda"
    scaler = torch.amp.GradScaler(dev.type, enabled=amp)
    text = torch.nn.functional.normalize(torch.randn(k, s.embed_dim, device=dev), dim=-1)
    images = torch.randn(args.batch, 3, args.size, args.size, device=dev)
    targets = random_targets(args.batch, args.size, k, dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps + 1):  # the first step warms up
        t = time.perf_counter()
        with torch.autocast(dev.type, enabled=amp):
            losses = criterion(training_outputs(model, images, text), targets)
        scaler.scale(sum(losses.values())).backward()
        if amp:
            scaler.unscale_(optimizer)
        clip_gradients(cfg, optimizer_parameters(optimizer))
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    print(f"{device}: {s.name}, batch {args.batch} x {args.size}x{args.size}, AMP {amp}, "
          f"threads {torch.get_num_threads()}: {statistics.median(times[1:]):.2f} s / iteration "
          f"(median of {args.steps}), peak memory {peak_memory_mb(dev) / 1024:.2f} GiB "
          f"({'CUDA allocator' if dev.type == 'cuda' else 'process RSS'})")


def loader_speed(args: argparse.Namespace) -> None:
    from PIL import Image

    from zegformer.data.loader import MappedDataset, collate_semantic
    from zegformer.data.transforms import AugmentationSettings, SemanticTrainMapper

    cfg = load_config(args.config)
    mapper = SemanticTrainMapper(AugmentationSettings.from_config(cfg), seed=0)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        pairs = []
        for i in range(24):
            image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
            label = np.repeat(np.repeat(rng.integers(0, 20, (15, 20)), 32, 0), 32, 1)
            Image.fromarray(image).save(f"{tmp}/{i}.jpg", quality=90)
            Image.fromarray(label.astype(np.uint8)).save(f"{tmp}/{i}.png")
            pairs.append((f"{tmp}/{i}.jpg", f"{tmp}/{i}.png"))
        dataset = MappedDataset(pairs, mapper)
        for workers in args.workers:
            loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=workers,
                                                 collate_fn=collate_semantic)
            t = time.perf_counter()
            n = sum(len(b["instances"]) for b in loader)
            dt = time.perf_counter() - t
            print(f"data loader, {workers} workers: {n / dt:.1f} images/s ({n} images, "
                  f"{args.config} augmentation)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="zegformer_R101_bs32_60k_vit16_coco-stuff")
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", nargs="+", default=["cpu", "cuda"])
    ap.add_argument("--workers", nargs="+", type=int, default=[0, 2])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for device in args.device:
        time_steps(device, args)
    loader_speed(args)


if __name__ == "__main__":
    main()

"""The evaluation command line: ``python -m zegformer.evaluate --dataset D --root R --output O``.

Examples::

    python -m zegformer.evaluate \\
        --config-file configs/coco-stuff/zegformer_R101_bs32_60k_vit16_coco-stuff_gzss_eval.yaml \\
        --dataset coco-stuff --root datasets --output out/coco_decoupled \\
        --opts MODEL.WEIGHTS zegformer_R101_coco-stuff.pth
    python -m zegformer.evaluate --dataset coco-stuff --root datasets --output out/coco_again \\
        --from-predictions out/coco_decoupled/predictions --min-area 1
    torchrun --nproc_per_node 4 -m zegformer.evaluate ...   # same command, images sharded
"""
from __future__ import annotations

import argparse
import logging
import sys

from ..errors import ZegFormerError
from ..data.datasets import DATASETS
from .runner import EvalOptions, run_evaluation


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m zegformer.evaluate",
        description="Generalized zero-shot mIoU (seen / unseen / harmonic) and small-target "
        "metrics per object size. Writes OUTPUT/small_target/{summary.json, *.csv, *.png} and "
        "OUTPUT/predictions/<stem>.png (reused when a run is resumed).",
    )
    p.add_argument("--config-file", help="official-schema YAML config (or config name)")
    p.add_argument("--dataset", required=True, choices=DATASETS, help="dataset layout")
    p.add_argument("--root", required=True, help="dataset root ($DETECTRON2_DATASETS or the "
                   "dataset folder; for 'folder': the folder with images/, labels/, classes.json)")
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--mode", default="decoupled", choices=("decoupled", "pixel"),
                   help="scoring mode of the model (default: decoupled)")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation as the official SemanticSegmentorWithTTA: the "
                   "config's TEST.AUG sizes (and flips) averaged; that many times slower "
                   "(also on with --opts TEST.AUG.ENABLED True)")
    p.add_argument("--fast", action="store_true",
                   help="the fast approximation (CLIP crops only for the segments carrying most "
                   "of the score, similar masks sharing one crop, 192-pixel crops): not the "
                   "official numbers; recorded in the "
                   "predictions folder, which then refuses exact runs (and the reverse)")
    p.add_argument("--max-images", type=int, default=None, help="evaluate the first N images")
    p.add_argument("--from-predictions", metavar="DIR", default=None,
                   help="read DIR/<stem>.png label maps instead of running the model")
    p.add_argument("--random-weights", action="store_true",
                   help="tiny untrained model (smoke tests; numbers are meaningless)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA if "
                   "available; under torchrun cuda:LOCAL_RANK)")
    p.add_argument("--min-area", type=int, default=16,
                   help="objects smaller than this many pixels are dropped (default 16)")
    p.add_argument("--classes", default=None, metavar="JSON",
                   help='class list {"classes": [...], "unseen": [...]} replacing the default')
    p.add_argument("--objects", default=None, metavar="PATH", help="object annotations replacing "
                   "the ones found automatically (COCO panoptic/instance JSON, VOC "
                   "SegmentationObject folder, ADE20K images/ADE/validation folder)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG size curves")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                   help="config overrides as KEY VALUE pairs, e.g. MODEL.WEIGHTS model.pth")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if len(args.opts) % 2:
        print(f"error: --opts takes KEY VALUE pairs and comes last on the command line "
              f"(got {' '.join(args.opts)})", file=sys.stderr)
        return 2
    if args.max_images is not None and args.max_images < 1:
        print("error: --max-images must be at least 1", file=sys.stderr)
        return 2
    if not (args.config_file or args.random_weights or args.from_predictions):
        print("error: give --config-file (with --opts MODEL.WEIGHTS ...), --random-weights or "
              "--from-predictions DIR", file=sys.stderr)
        return 2
    opts = EvalOptions(
        dataset=args.dataset, root=args.root, output=args.output, mode=args.mode,
        tta=True if args.tta else None, fast=args.fast,
        max_images=args.max_images, from_predictions=args.from_predictions,
        config_file=args.config_file, opts=list(args.opts), random_weights=args.random_weights,
        device=args.device, min_area=args.min_area, classes=args.classes, objects=args.objects,
        plots=not args.no_plots, progress=not args.no_progress,
    )
    try:
        run_evaluation(opts)
    except ZegFormerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0

"""``python -m zegformer.data.prepare coco-stuff|voc|ade847 --root DATASETS [--workers N]``.

Exit status: 0 when every file is prepared, 1 when some files failed (listed at the end, the
others are done), 2 for a wrong root or raw layout (one line, nothing written).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ...errors import ZegFormerError
from . import DATASET_NAMES, prepare_dataset
from .common import default_workers


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m zegformer.data.prepare",
        description="Turn the raw COCO-Stuff / PASCAL VOC / ADE20K-Full downloads into the "
                    "official ZegFormer prepared layouts (seen-only training labels, seen / "
                    "unseen / all validation labels, class-name JSON files). Safe to rerun: "
                    "finished files are checked and kept.")
    p.add_argument("dataset", choices=DATASET_NAMES)
    p.add_argument("--root", required=True,
                   help="DATASETS folder (detectron2's $DETECTRON2_DATASETS) holding coco/, "
                        "VOCZERO/ or ADE20K_2021_17_01/ (or that dataset folder itself)")
    p.add_argument("--workers", type=int, default=default_workers(),
                   help="worker processes (default: min(4, CPUs) = %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--trust-pickle", action="store_true",
                   help="ade847: load index_ade20k.pkl even if it holds arbitrary objects")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        report = prepare_dataset(args.dataset, args.root, workers=args.workers,
                                 progress=not args.no_progress, trust_pickle=args.trust_pickle)
    except ZegFormerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

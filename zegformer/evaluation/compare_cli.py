"""Command line: ``python -m zegformer.evaluate.compare RUN_A RUN_B [--output DIR]``.

Puts two evaluation runs side by side per object-size bucket (seen / novel / harmonic, A, B and
B - A) as a printed table, compare.csv / compare.json, and one plot (compare_<scheme>.png).
Example, the project's headline question::

    python -m zegformer.evaluate.compare out/coco_pixel out/coco_decoupled --labels pixel decoupled
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ZegFormerError
from .compare import METRICS, write_comparison


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m zegformer.evaluate.compare",
        description="Compare two runs of python -m zegformer.evaluate per size bucket.",
    )
    p.add_argument("run_a", help="run A: its --output dir (or small_target/ or summary.json)")
    p.add_argument("run_b", help="run B")
    p.add_argument("--output", default=None, help="where to write compare.csv/json/png "
                   "(default: RUN_B/compare_vs_<name of RUN_A>)")
    p.add_argument("--labels", nargs=2, metavar=("A", "B"), default=None,
                   help="names of the runs in the table and plot")
    p.add_argument("--metric", default="recall@0.5", choices=METRICS)
    p.add_argument("--scheme", default="abs", choices=("abs", "rel"),
                   help="buckets of the plot: absolute (XS..L) or relative (R0..R3)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = args.output or str(Path(args.run_b) / f"compare_vs_{Path(args.run_a).resolve().name}")
    try:
        text = write_comparison(args.run_a, args.run_b, out,
                                tuple(args.labels) if args.labels else None, args.metric,
                                args.scheme)
    except ZegFormerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(text)
    print(f"written to {out}/ (compare.csv, compare.json, compare_{args.scheme}.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

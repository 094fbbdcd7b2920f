"""Train the small model that scripts/benchmark.py measures the fast path on (a few minutes on CPU).

    python scripts/train_bench_model.py OUT [--clip-weights CLIP.pt] [--iters 400]

Writes a synthetic shapes dataset (tests/synthetic_shapes.py: sky, grass, a cat square, a dog bar;
"dog" unseen) to OUT/data and trains the tiny config on it with `python -m zegformer.train`, but
with 100 queries (as the official models) and, with --clip-weights, the full-size CLIP ViT-B/16
(the text tower during training, the image tower for the CLIP crops afterwards), so that the
crops cost what they cost with real weights. A trained model's "no object" queries behave like a
real one's: most of the 100 queries end up on "no object", which is what the fast path exploits.
Then benchmark it with

    python scripts/benchmark.py --weights OUT/run/model_final.pth --config OUT/run/config.yaml \\
        --clip-weights CLIP.pt --images OUT/data/images/val --classes-file OUT/data/classes.json

The evaluation config turns CLIP classification and ensembling back on (training scores with
the segment classifier alone, as the official training configs do).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from synthetic_shapes import tiny_training_overrides, write_shapes_dataset  # noqa: E402


def overrides(data: Path, out: Path, iters: int, clip: bool, seed: int = 0) -> list[str]:
    """The test suite's tiny training run, longer and with 100 queries (and the full-size CLIP
    of the rule weights when `clip`); `seed` (when not 0) is the run's SEED."""
    extra = {"SOLVER__MAX_ITER": iters, "SOLVER__CHECKPOINT_PERIOD": iters,
             "MODEL__MASK_FORMER__NUM_OBJECT_QUERIES": 100}
    if seed:
        extra["SEED"] = seed
    if clip:
        extra.update({"MODEL__SEM_SEG_HEAD__CLIP_PRETRAINED": "ViT-B/16",
                      "MODEL__SEM_SEG_HEAD__CLIP_EMBED_DIM": "512"})
    return tiny_training_overrides(data, out, **extra)


# What scripts/benchmark.py adds to the run's config.yaml: the official evaluation scoring.
EVAL_OPTS = ["MODEL.SEM_SEG_HEAD.CLIP_CLASSIFICATION", "True",
             "MODEL.MASK_FORMER.ENSEMBLING", "True", "MODEL.MASK_FORMER.GZERO_CALIBRATE", "0.1"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--clip-weights", default=None,
                    help="CLIP ViT-B/16 file (without it: the tiny random CLIP, cheap crops)")
    ap.add_argument("--iters", type=int, default=400)
    ap.add_argument("--n-train", type=int, default=32)
    ap.add_argument("--n-val", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0,
                    help="seed of the dataset and of the training run (another model, other "
                    "images: a held-out check of the benchmark's figures)")
    args = ap.parse_args()
    from zegformer.training import cli

    data = write_shapes_dataset(args.out / "data", n_train=args.n_train, n_val=args.n_val,
                                seed=args.seed)
    flags = ["--config-file", "tiny", "--no-progress", "--log-period", "50"]
    if args.clip_weights:
        flags += ["--clip-weights", args.clip_weights]
    return cli.main(flags + overrides(data, args.out / "run", args.iters,
                                      bool(args.clip_weights), args.seed))


if __name__ == "__main__":
    sys.exit(main())

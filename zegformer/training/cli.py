"""``python -m zegformer.train``: the official `train_net.py` command line, in pure PyTorch.

    python -m zegformer.train --config-file configs/coco-stuff/zegformer_R101_bs32_60k_vit16_coco-stuff.yaml \\
        --num-gpus 8 OUTPUT_DIR out/r101 MODEL.WEIGHTS R-101.pkl
    python -m zegformer.train --config-file ... --resume OUTPUT_DIR out/r101
    python -m zegformer.train --config-file ..._gzss_eval.yaml --eval-only MODEL.WEIGHTS out/r101/model_final.pth

Trailing KEY VALUE pairs override the config (detectron2 style). `--num-gpus N` starts N
processes on this machine; under `torchrun` (any --nnodes) the same command runs one process per
launched rank. NCCL on GPUs, gloo on CPUs.
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Sequence

from ..errors import ZegFormerError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m zegformer.train",
        description="Train (or evaluate) ZegFormer with the official recipe.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="KEY VALUE pairs after the flags override the config, e.g. OUTPUT_DIR out/run1 "
               "SOLVER.MAX_ITER 2000 MODEL.WEIGHTS R-101.pkl")
    p.add_argument("--config-file", required=True, metavar="FILE",
                   help="official-schema YAML config, or a config name")
    p.add_argument("--num-gpus", type=int, default=1, metavar="N",
                   help="processes to start on this machine (one per GPU; on a CPU: gloo)")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUTPUT_DIR/last_checkpoint (model, optimiser, schedule, "
                        "scaler, iteration, data order)")
    p.add_argument("--eval-only", action="store_true",
                   help="evaluate MODEL.WEIGHTS on DATASETS.TEST and stop")
    p.add_argument("--grad-accum", type=int, default=1, metavar="N",
                   help="split each process's share of SOLVER.IMS_PER_BATCH into N micro-batches")
    p.add_argument("--clip-weights", metavar="PATH",
                   help="CLIP ViT-B/16 file (default $ZEGFORMER_CLIP_WEIGHTS)")
    p.add_argument("--device", help="cpu or cuda (default: CUDA when available)")
    p.add_argument("--tta", action="store_true", help="with --eval-only: test-time augmentation")
    p.add_argument("--log-period", type=int, default=20, metavar="N",
                   help="write metrics.json every N iterations (default 20)")
    p.add_argument("--eval-max-images", type=int, metavar="N",
                   help="evaluate on the first N images only (quick checks)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow MODEL.WEIGHTS files that need full unpickling (runs their code)")
    p.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                   help="config overrides")
    return p


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawned(local_rank: int, argv: list[str], world: int, port: int) -> None:
    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    code = run(build_parser().parse_args(argv))
    if code:
        sys.exit(code)


def run(args: argparse.Namespace) -> int:
    """Train or evaluate in this process (one rank when distributed). Returns the exit code."""
    import torch

    from ..evaluation.distributed import finish, init_distributed
    from ..loading.config import load_config
    from .trainer import TrainOptions, Trainer

    use_cuda = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    info = init_distributed(use_cuda)
    logging.basicConfig(level=logging.INFO if info.is_main else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config_file, args.opts)
        if args.eval_only:
            return _eval_only(args, cfg)
        opts = TrainOptions(resume=args.resume, grad_accum=max(args.grad_accum, 1),
                            clip_weights=args.clip_weights, device=args.device,
                            log_period=max(args.log_period, 1),
                            eval_max_images=args.eval_max_images,
                            progress=not args.no_progress, trust_pickle=args.trust_pickle)
        Trainer(cfg, opts, info).train()
        return 0
    except ZegFormerError as e:
        print(f"error{f' (rank {info.rank})' if info.distributed else ''}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: resume with --resume", file=sys.stderr)
        return 130
    finally:
        if info.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        finish(info)


def _eval_only(args: argparse.Namespace, cfg) -> int:
    from ..loading.factory import load_predictor
    from .evaluate import evaluate_predictor

    weights = str(cfg.MODEL.WEIGHTS or "")
    if not weights:
        print("error: --eval-only needs MODEL.WEIGHTS (a trained checkpoint)", file=sys.stderr)
        return 2
    predictor = load_predictor(args.config_file, weights, clip_weights=args.clip_weights,
                               device=args.device, opts=args.opts,
                               trust_pickle=args.trust_pickle)
    evaluate_predictor(predictor, cfg, "eval_only", max_images=args.eval_max_images,
                       progress=not args.no_progress, tta=args.tta)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(args.opts) % 2:
        print(f"error: config overrides need KEY VALUE pairs, got {args.opts}", file=sys.stderr)
        return 2
    if args.num_gpus > 1 and "WORLD_SIZE" not in os.environ:
        import torch.multiprocessing as mp

        try:
            mp.start_processes(_spawned, args=(argv, args.num_gpus, _free_port()),
                               nprocs=args.num_gpus, start_method="spawn")
        except mp.ProcessExitedException as e:
            return int(e.exit_code or 1)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

"""python -m zegformer.hub {convert,push}: see zegformer/hub/__init__.py."""
from __future__ import annotations

import argparse
import sys

from ..loading.config import DEFAULT_CONFIG


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m zegformer.hub",
        description="Convert an official ZegFormer checkpoint to safetensors with a config and a "
                    "model card, and upload the folder to the Hugging Face Hub.")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="CKPT.pth -> OUT_DIR/model.safetensors + configs/ + README.md")
    c.add_argument("checkpoint", metavar="CKPT", help="official .pth (or .safetensors / .pkl)")
    c.add_argument("out_dir", metavar="OUT_DIR")
    c.add_argument("--config-file", default=DEFAULT_CONFIG, metavar="NAME_OR_PATH",
                   help=f"the config the checkpoint was trained with (default {DEFAULT_CONFIG})")
    c.add_argument("--repo-id", default=None, metavar="OWNER/REPO",
                   help="the repository named in the model card (push fills it in otherwise)")
    c.add_argument("--license", default="other",
                   help="licence id for the card (default 'other': the weights' own terms)")
    c.add_argument("--source", default="https://github.com/dingjiansw101/ZegFormer",
                   help="where the original weights come from (named in the card)")
    c.add_argument("--trust-pickle", action="store_true",
                   help="allow a checkpoint with pickled Python objects (runs code from it)")
    c.add_argument("--force", action="store_true", help="overwrite files in OUT_DIR")
    u = sub.add_parser("push", help="upload OUT_DIR to owner/repo (token: HF_TOKEN or hf auth login)")
    u.add_argument("out_dir", metavar="OUT_DIR")
    u.add_argument("repo_id", metavar="OWNER/REPO")
    u.add_argument("--private", action="store_true", help="create the repository as private")
    u.add_argument("--message", default="ZegFormer weights (safetensors), config and model card")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..errors import ZegFormerError

    try:
        if args.command == "convert":
            from .convert import convert_checkpoint

            info = convert_checkpoint(args.checkpoint, args.out_dir, args.config_file,
                                      repo_id=args.repo_id, license=args.license,
                                      source=args.source, trust_pickle=args.trust_pickle,
                                      overwrite=args.force)
            print(f"wrote {info['weights']} ({info['n_tensors']} tensors, "
                  f"{info['n_parameters']:,} values; dropped: "
                  f"{', '.join(info['dropped']) or 'nothing'}), {info['config']} and "
                  f"{info['card']}")
        else:
            from .push import push_folder

            url = push_folder(args.out_dir, args.repo_id, private=args.private,
                              message=args.message)
            print(f"uploaded {args.out_dir} to {url}")
    except ZegFormerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Segment images from the command line, in the manner of the official ZegFormer demo.

    python -m zegformer.demo --config-file zegformer_R101_bs32_60k_vit16_coco-stuff_gzss_eval \\
        --input photo.jpg 'more/*.jpg' --output out/ --classes "cat, sofa, window" \\
        --opts MODEL.WEIGHTS zegformer_R101_coco-stuff.pth

For every input image `<stem>` it writes to the output folder:

    <stem>_overlay.webp  the image with class colours and a legend (WebP, quality 90)
    <stem>_labels.png    class indices (8-bit, 255 = unlabelled; 16-bit, 65535, above 255 classes)
    <stem>.json          classes, colours, confidences, areas, seen/novel, timings (the
                         layout of `zegformer.viz.export`, which writes all three)

With `--mode both` the first two files come once per mode (`<stem>_decoupled_overlay.webp`, ...)
and `<stem>_disagreement.webp` shows where the two modes differ. `--random-weights` runs a tiny
untrained model: its outputs are marked UNTRAINED. User mistakes end with a one-line message and
exit status 2.

`--video-input clip.mp4` writes `clip.mp4` (the overlay and a legend on every frame) and
`clip.json` (per frame: index, time, each class's area share); `--every N` segments every N-th
frame only and writes those at fps / N (see zegformer/faces/video.py). `--webcam` shows a camera
live (zegformer/faces/webcam.py; needs /dev/video* and a display).
"""
from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path
from typing import Any, Sequence

from zegformer.errors import ImageError, WeightsError, ZegFormerError
from zegformer.faces.modes import MODE_CHOICES, expand_modes, run_modes
from zegformer.faces.startup import example_entries
from zegformer.loading.config import split_opt
from zegformer.viz.export import MODE_TITLES, cli_layout, write_results

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
FALLBACK_CLASSES = ("person, animal, vehicle, building, tree, grass, sky, road, water, "
                    "furniture, wall, floor")
EXIT_USAGE = 2


class UsageError(Exception):
    """A mistake in the command line or its inputs: printed as one line, exit status 2."""


def _fraction(text: str) -> float:
    """An argparse type: the flag's value as a number in 0..1 (as the app's sliders allow)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(EXIT_USAGE)


def get_parser() -> argparse.ArgumentParser:
    """The command-line interface (flag names follow the official demo where they exist)."""
    p = _Parser(prog="python -m zegformer.demo",
                description="ZegFormer zero-shot semantic segmentation of images and videos.")
    p.add_argument("--config-file", metavar="FILE", default=None,
                   help="official-schema YAML config, or a config name (default: the COCO-Stuff "
                        "R101 ViT-B/16 model; with --random-weights: the tiny test model)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", metavar="PATH",
                        help="image files, folders, or quoted glob patterns such as 'dir/*.jpg'")
    source.add_argument("--video-input", metavar="FILE",
                        help="a video file: writes <stem>.mp4 with the overlay and <stem>.json")
    source.add_argument("--webcam", action="store_true",
                        help="segment /dev/video* live in a window (Linux, needs a display)")
    p.add_argument("--every", type=int, default=1, metavar="N",
                   help="video: segment every N-th frame; the output has those at fps / N")
    p.add_argument("--output", default="out", metavar="DIR",
                   help="folder for the outputs (created; default: out)")
    p.add_argument("--classes", default=None,
                   help='comma-separated class names, "a | b" for synonyms (default: the '
                        "example's list for images in examples/, else a short generic list)")
    p.add_argument("--mode", choices=[v for _, v in MODE_CHOICES], default="decoupled",
                   help="decoupled = ZegFormer's segment-level scoring; pixel = per-pixel; both")
    p.add_argument("--confidence-threshold", "--threshold", dest="threshold", type=_fraction,
                   default=0.0, metavar="T",
                   help="leave pixels unlabelled when their best normalised score is below T")
    p.add_argument("--alpha", type=_fraction, default=0.5, help="overlay opacity in 0..1")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation as the official TEST.AUG (6 sizes x flip = 12 "
                        "passes, averaged): about 12 times slower")
    p.add_argument("--fast", action="store_true",
                   help="the fast approximation: CLIP crops only for the segments that carry "
                        "most of the score (at most 10; similar masks share one crop), at 192 "
                        "pixels; not the official numbers (outputs say \"fast\": true)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="default: cuda when available")
    p.add_argument("--clip-weights", metavar="PATH", default=None,
                   help="CLIP ViT-B/16 weights (OpenAI layout) or hf:// reference; "
                        "default: $ZEGFORMER_CLIP_WEIGHTS, else open_clip's download")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow weights files that need full unpickling (runs code from the file)")
    p.add_argument("--random-weights", action="store_true",
                   help="use a tiny randomly initialised model (for trying the tool; "
                        "outputs are meaningless and marked UNTRAINED)")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                   help="config overrides as KEY VALUE pairs, e.g. MODEL.WEIGHTS model.pth "
                        "(must come last)")
    return p


def expand_inputs(patterns: Sequence[str]) -> list[Path]:
    """Files named by paths, folders (their images) and glob patterns, in order, no duplicates.

    Raises:
        UsageError: a path that does not exist or a pattern or folder without images.
    """
    found: list[Path] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = [Path(m) for m in sorted(glob.glob(str(Path(pattern).expanduser())))]
            matches = [m for m in matches if m.is_file()]
            if not matches:
                raise UsageError(f"no files match {pattern!r}")
        else:
            path = Path(pattern).expanduser()
            if path.is_dir():
                matches = sorted(f for f in path.iterdir()
                                 if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
                if not matches:
                    raise UsageError(f"folder {str(path)!r} holds no images")
            elif path.is_file():
                matches = [path]
            else:
                raise UsageError(f"input file not found: {pattern}")
        found += [m for m in matches if m not in found]
    return found


def example_classes() -> dict[Path, str]:
    """{example image path (resolved): its class list} from examples/examples.json."""
    return {path.resolve(): classes for path, classes in example_entries()}


def output_stems(paths: Sequence[Path]) -> list[str]:
    """File stems for the outputs, made unique ("a", "a_2") when two inputs share a name."""
    stems: list[str] = []
    for path in paths:
        stem, n = path.stem, 2
        while stem in stems:
            stem, n = f"{path.stem}_{n}", n + 1
        stems.append(stem)
    return stems


def _check_args(args: argparse.Namespace) -> None:
    """The flags' combinations (their values are typed by the parser)."""
    if args.every < 1:
        raise UsageError(f"--every must be at least 1, got {args.every}")
    if args.input is not None and args.every != 1:
        raise UsageError("--every applies to --video-input and --webcam, not to images")
    if args.input is None and args.mode == "both":
        raise UsageError("--mode both is for images; a video takes --mode decoupled or pixel")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda was given but no CUDA GPU is available; "
                             "use --device cpu")


def load_demo_predictor(args: argparse.Namespace) -> Any:
    """The predictor the flags ask for.

    Raises:
        UsageError: missing weights, with what to set.
        ConfigError: a bad config or --opts.
    """
    from zegformer.loading.factory import DEFAULT_CONFIG, load_predictor, load_random_predictor

    weights, opts = split_opt(args.opts, "MODEL.WEIGHTS")
    if args.random_weights:
        if weights:
            print("warning: --random-weights ignores MODEL.WEIGHTS", file=sys.stderr)
        return load_random_predictor(args.config_file or "tiny", device=args.device, opts=opts)
    try:
        return load_predictor(args.config_file or DEFAULT_CONFIG, weights,
                              clip_weights=args.clip_weights, device=args.device, opts=opts,
                              trust_pickle=args.trust_pickle)
    except WeightsError as e:
        raise UsageError(f"{_one_line(e)}; or try --random-weights") from None


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def segment_file(predictor: Any, path: Path, stem: str, classes: str, modes: Sequence[str],
                 out_dir: Path, threshold: float = 0.0, alpha: float = 0.5,
                 tta: bool = False, fast: bool = False) -> dict[str, Any]:
    """Segment one image and write its files (`cli_layout(stem)`); returns the JSON document.

    The path, the class list and the threshold go to the predictor as given.

    Raises:
        ImageError: the file is not a readable image.
        ZegFormerError: e.g. a bad class list.
    """
    rgb, results = run_modes(predictor, path, classes, modes, threshold, tta=tta, fast=fast)
    written = write_results(out_dir, rgb, results, alpha, cli_layout(stem), input_name=str(path))
    return written.document


def _output_dir(args: argparse.Namespace) -> Path:
    out_dir = Path(args.output).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--output {str(out_dir)!r} is a file, not a folder")
    return out_dir


def _announced_predictor(args: argparse.Namespace) -> Any:
    """`load_demo_predictor`, announced on stderr (whether it supports --mode is its own check,
    made by its first prediction)."""
    predictor = load_demo_predictor(args)
    print(f"model: {predictor.describe()}", file=sys.stderr)
    return predictor


def _run_video(args: argparse.Namespace) -> int:
    """--video-input / --webcam: checks that need no model first, then one call into video.py."""
    from zegformer.faces import video, webcam
    from zegformer.text import parse_classes

    classes = parse_classes(args.classes if args.classes is not None else FALLBACK_CLASSES)
    options = {"mode": args.mode, "every": args.every, "threshold": args.threshold,
               "alpha": args.alpha, "title": MODE_TITLES.get(args.mode)}
    if args.webcam:
        cameras = webcam.check_webcam()
        predictor = _announced_predictor(args)
        shown = webcam.run_webcam(predictor, classes, cameras=cameras, **options)
        print(f"showed {shown} frames", file=sys.stderr)
        return 0
    video.probe_video(args.video_input)  # a missing or broken file fails before the model
    out_dir = _output_dir(args)
    predictor = _announced_predictor(args)
    summary = video.segment_video(predictor, args.video_input, classes, out_dir, **options)
    made = summary["output_video"]
    print(f"wrote {out_dir / summary['output']} ({made['frames']} frames, {made['width']}x"
          f"{made['height']}, {made['fps']:g} fps) and its .json", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    """Everything after argument parsing; returns the exit status."""
    from tqdm import tqdm

    _check_args(args)
    if args.input is None:
        return _run_video(args)
    modes = expand_modes(args.mode)
    paths = expand_inputs(args.input)
    defaults = example_classes()
    vocab = {p: args.classes if args.classes is not None
             else defaults.get(p.resolve(), FALLBACK_CLASSES) for p in paths}
    out_dir = _output_dir(args)
    predictor = _announced_predictor(args)
    failed = []
    bar = tqdm(list(zip(paths, output_stems(paths), strict=True)), desc="segmenting", unit="image")
    for path, stem in bar:
        try:
            segment_file(predictor, path, stem, vocab[path], modes, out_dir,
                         args.threshold, args.alpha, tta=args.tta, fast=args.fast)
        except ImageError as e:
            failed.append(path)
            bar.write(f"warning: skipping {path}: {_one_line(e)}", file=sys.stderr)
    done = len(paths) - len(failed)
    print(f"wrote outputs for {done} image{'s' * (done != 1)} to {out_dir}", file=sys.stderr)
    if failed:
        print(f"error: {len(failed)} of {len(paths)} inputs could not be read", file=sys.stderr)
        return EXIT_USAGE
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m zegformer.demo`; returns the exit status."""
    args = get_parser().parse_args(argv)
    try:
        return run(args)
    except (UsageError, ZegFormerError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

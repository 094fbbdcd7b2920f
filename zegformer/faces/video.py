"""Segmenting videos: frames in and an overlay video out through PyAV, plus a per-frame area table.

    python -m zegformer.demo --video-input clip.mp4 --output out/ [--every N]

writes `out/clip.mp4` (H.264) with the class overlay and a legend on every processed frame, and
`out/clip.json` with, per processed frame, its index, its time in seconds and each class's share
of the frame's pixels (plus the unlabelled share; together they sum to 1).

Library: PyAV (`av` on PyPI). Its manylinux wheel bundles FFmpeg (libavcodec, libavformat,
libavdevice, libx264), so `pip install av` is the whole installation, with no system ffmpeg; frames
come from libavcodec as numpy arrays in this process (no pipe to an `ffmpeg` subprocess as with
imageio-ffmpeg), failures arrive as typed exceptions that map onto one-line messages, and the same
build reads V4L2 cameras for `--webcam`. Probing, decoding and the H.264 writer live in
`zegformer.faces.video_io` (re-exported here); this module segments and draws the frames.

Choices:
- Stable frames: the legend lists every requested class in the order given, with its area share
  in that frame, not only the classes present as the image demo does. So the frame size is the
  same for the whole video and a class keeps its row and its colour (`viz.palette.class_colors`, a
  hash of the class name) from the first frame to the last.
- Even sizes: H.264 in yuv420p needs an even width and height. A rendered frame of odd size is
  padded, never cropped, with one white column at the right and/or one white row at the bottom;
  the JSON's "padding" says what was added.
- `--every N` segments frames 0, N, 2N, ... only; the output holds just those frames, at fps / N,
  so it plays as long as the input.
- Bounded memory: frames are decoded, segmented, drawn and encoded one at a time; only the JSON
  table grows, by one row of K numbers per processed frame.
- Frames whose long side exceeds the predictor's `max_side` (2048) are written downscaled to it.
  Rotation metadata (phone videos) is applied in multiples of 90 degrees. Audio is not copied.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from contextlib import closing
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from PIL import Image

from zegformer.faces.video_io import (  # noqa: F401  (re-exported: the public video API)
    ENCODER, CodecError, Frame, VideoError, VideoInfo, VideoWriter, decode_frames, pad_to_even,
    probe_video, read_frames)
from zegformer.inference.result import UNLABELED, SegmentationResult
from zegformer.viz import drawing as visualize


def render_frame(rgb: np.ndarray, result: SegmentationResult, colors: np.ndarray, *,
                 alpha: float = 0.5, title: str | None = None) -> Image.Image:
    """One output frame: the overlay with a legend of ALL classes (their share of this frame).

    The layout depends only on the frame size and the class names, so all frames of a video have
    the same size (unlike `viz.drawing.render`, which lists the classes present).

    Args:
        rgb: H x W x 3 uint8 frame the result was computed on.
        result: its prediction.
        colors: K x 3 uint8, e.g. `visualize.class_colors(result.class_names)`.
        alpha: overlay opacity in 0..1.
        title: legend heading; default "<mode> mode".

    Returns:
        RGB PIL image: frame, legend beside or below it, and the UNTRAINED banner when untrained.
    """
    over = Image.fromarray(visualize.overlay(rgb, result.label_map, colors, alpha))
    size, beside = visualize.legend_layout(*over.size)
    panel = visualize.legend(result.class_names, colors,
                             confidences=[c.area_fraction for c in result.classes],
                             seen=result.seen, width=None if beside else over.width,
                             font_size=size, title=title or f"{result.mode} mode",
                             value_label="area")
    return visualize.attach_legend(over, panel, untrained=result.untrained)


def segment_frames(predictor: Any, frames: Iterable[Frame], classes: list[str], *,
                   mode: str = "decoupled", threshold: float = 0.0, alpha: float = 0.5,
                   title: str | None = None
                   ) -> Iterator[tuple[Frame, SegmentationResult, Image.Image]]:
    """(frame, prediction, rendered output frame) for each frame, one at a time."""
    colors = visualize.class_colors(classes)
    for frame in frames:
        result = predictor.predict(frame.rgb, classes, mode=mode, threshold=threshold)
        yield frame, result, render_frame(frame.rgb, result, colors, alpha=alpha, title=title)


def _frame_row(frame: Frame, result: SegmentationResult) -> dict[str, Any]:
    return {"frame": frame.index, "time": round(frame.time, 6),
            "area_fraction": {c.name: c.area_fraction for c in result.classes},
            "unlabeled_fraction": float((result.label_map == UNLABELED).mean())}


def segment_video(predictor: Any, path: str | os.PathLike, classes: str | list[str],
                  out_dir: str | os.PathLike, *, mode: str = "decoupled", every: int = 1,
                  threshold: float = 0.0, alpha: float = 0.5, title: str | None = None,
                  stem: str | None = None, progress: bool = True,
                  codec: str = ENCODER) -> dict[str, Any]:
    """Segment a video file; write `<out_dir>/<stem>.mp4` and `<out_dir>/<stem>.json`.

    Args:
        predictor: a `Predictor`.
        path: the input video.
        classes: class names (list or comma-separated string, "a | b" = synonyms).
        out_dir: output folder (created).
        mode: "decoupled" or "pixel".
        every: segment every N-th frame; the output video holds those frames at fps / N.
        threshold, alpha: as in `Predictor.predict` and `visualize.overlay`.
        title: legend heading (default "<mode> mode").
        stem: output file name stem (default: the input's stem).
        progress: show a tqdm bar with ETA on stderr.
        codec: FFmpeg encoder for the output.

    Returns:
        The JSON summary that was written: input / output video facts, classes with colours, and
        "frames": [{"frame", "time", "area_fraction": {class: share}, "unlabeled_fraction"}].

    Raises:
        VideoError, CodecError: unreadable input, missing codec, or output that would overwrite
            the input. ZegFormerError: a bad class list.
    """
    from tqdm import tqdm

    from zegformer.text import parse_classes

    names = parse_classes(classes)
    if every < 1:
        raise VideoError(f"--every must be at least 1, got {every}")
    src, info = Path(path).expanduser(), probe_video(path)
    out, stem = Path(out_dir).expanduser(), stem or src.stem
    video_path, json_path = out / f"{stem}.mp4", out / f"{stem}.json"
    if out.exists() and not out.is_dir():
        raise VideoError(f"the output folder {out} is a file")  # else made with the first frame
    if video_path.resolve() == src.resolve():
        raise VideoError(f"the output {video_path} would overwrite the input; choose another "
                         "--output folder")
    t0, rows, last = time.perf_counter(), [], None
    total = math.ceil(info.frame_count / every) if info.frame_count else None
    partial = out / f".{stem}.mp4.part"
    bar = tqdm(total=total, desc=src.name, unit="frame", disable=not progress, file=sys.stderr)
    try:
        with VideoWriter(partial, info.fps / every, codec=codec) as writer, \
                closing(read_frames(src, every)) as frames:
            for frame, last, picture in segment_frames(predictor, frames, names, mode=mode,
                                                       threshold=threshold, alpha=alpha,
                                                       title=title):
                writer.write(picture)
                rows.append(_frame_row(frame, last))
                bar.update()
    finally:
        bar.close()
    if last is None:
        raise VideoError(f"{src.name}: no frame could be decoded")
    os.replace(partial, video_path)
    colors = visualize.class_colors(names)
    (w, h), (right, bottom) = writer.size or (0, 0), writer.padding
    summary: dict[str, Any] = {
        "input": str(src), "output": video_path.name, "mode": mode, "model": last.model,
        "untrained": last.untrained, "device": last.device, "threshold": threshold,
        "classes": [{"index": c.index, "name": c.name, "split": "seen" if c.seen else "novel",
                     "color": visualize.hex_color(colors[c.index])} for c in last.classes],
        "input_video": {**asdict(info), "fps": float(info.fps)},
        "output_video": {"width": w, "height": h, "fps": float(writer.fps),
                         "frames": writer.frames, "codec": codec,
                         "padding": {"right": right, "bottom": bottom}},
        "every": every, "frames": rows,
        "seconds": round(time.perf_counter() - t0, 3),
        "seconds_per_frame": round((time.perf_counter() - t0) / writer.frames, 4),
    }
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1, ensure_ascii=False)
    return summary

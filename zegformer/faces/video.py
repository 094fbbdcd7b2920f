"""Segmenting videos: frames in and an overlay video out through PyAV, plus a per-frame area table.

    python -m zegformer.demo --video-input clip.mp4 --output out/ [--every N]

writes `out/clip.mp4` (H.264) with the class overlay and a legend on every processed frame, and
`out/clip.json` with, per processed frame, its index, its time in seconds and each class's share
of the frame's pixels (plus the unlabelled share; together they sum to 1).

Library: PyAV (`av` on PyPI). Its manylinux wheel bundles FFmpeg (libavcodec, libavformat,
libavdevice, libx264), so `pip install av` is the whole installation, with no system ffmpeg; frames
come from libavcodec as numpy arrays in this process (no pipe to an `ffmpeg` subprocess as with
imageio-ffmpeg), failures arrive as typed exceptions that map onto one-line messages, and the same
build reads V4L2 cameras for `--webcam`.

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
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Generator, Iterable, Iterator

import numpy as np
from PIL import Image

from zegformer.errors import ZegFormerError
from zegformer.inference.result import UNLABELED, SegmentationResult
from zegformer.viz import drawing as visualize

ENCODER = "libx264"  # FFmpeg's H.264 encoder, bundled in PyAV's wheels
PIXEL_FORMAT = "yuv420p"  # what players expect; needs even width and height
PAD_VALUE = 255  # white, the legend's background
_MAGIC = {b"\x1a\x45\xdf\xa3": "Matroska/WebM", b"RIFF": "AVI", b"OggS": "Ogg", b"FLV": "FLV"}


class VideoError(ZegFormerError):
    """A video (or camera) that cannot be opened, read or written."""


class CodecError(VideoError):
    """FFmpeg has no usable decoder or encoder for the video."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container header says about a video's first video stream."""

    width: int  # pixels, as decoded (before rotation)
    height: int
    fps: Fraction  # frames per second (the stream's average rate)
    frame_count: int | None  # from the header, else estimated from the duration; None if unknown
    duration: float | None  # seconds, None when unknown
    codec: str  # FFmpeg decoder name, e.g. "h264"


@dataclass(frozen=True)
class Frame:
    """One decoded frame."""

    index: int  # position in the decoded stream, from 0 (counting skipped frames too)
    time: float  # presentation time in seconds from the stream's start (index / fps if unknown)
    rgb: np.ndarray  # H x W x 3 uint8 RGB, upright


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise VideoError("video input needs PyAV: pip install av") from None
    return av


def _reason(e: BaseException) -> str:
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return text.strip().splitlines()[0]


def _not_a_video(path: Path) -> VideoError:
    with open(path, "rb") as f:
        head = f.read(12)
    if not head:
        return VideoError(f"{path.name}: the file is empty")
    kind = "MP4/MOV" if head[4:8] == b"ftyp" else next(
        (k for magic, k in _MAGIC.items() if head.startswith(magic)), None)
    if kind:
        return VideoError(f"{path.name}: damaged or incomplete {kind} video (FFmpeg cannot "
                          "parse it)")
    return VideoError(f"{path.name}: not a video file (FFmpeg recognises no video format in it)")


def _open_input(path: str | os.PathLike) -> tuple[Any, Any]:
    """(container, first video stream) of a file. Raises VideoError / CodecError."""
    av, path = _av(), Path(path).expanduser()
    if not path.exists():
        raise VideoError(f"video not found: {path}")
    if not path.is_file():
        raise VideoError(f"{path} is not a file")
    try:
        container = av.open(str(path), mode="r")
    except av.error.InvalidDataError:
        raise _not_a_video(path) from None
    except (av.error.FFmpegError, OSError) as e:
        raise VideoError(f"{path.name}: cannot open it ({_reason(e)})") from None
    fmt, streams = container.format.name, container.streams.video
    error: VideoError | None = None
    if fmt.startswith("image2") or fmt.endswith("_pipe"):  # FFmpeg's still-image demuxers
        error = VideoError(f"{path.name} is a still image, not a video; segment it with --input")
    elif not streams:
        error = VideoError(f"{path.name}: holds no video stream")
    elif streams[0].codec_context is None:
        error = CodecError(f"{path.name}: this FFmpeg build has no decoder for its video codec")
    if error:
        container.close()
        raise error
    return container, streams[0]


def _rate(stream: Any, name: str) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0:
        raise VideoError(f"{name}: the video does not say its frame rate")
    return Fraction(rate)


def _info(stream: Any, container: Any, name: str) -> VideoInfo:
    fps = _rate(stream, name)
    duration = (float(stream.duration * stream.time_base) if stream.duration
                else container.duration / 1e6 if container.duration else None)
    frames = stream.frames or (round(duration * fps) if duration else None)
    cc = stream.codec_context
    return VideoInfo(width=cc.width, height=cc.height, fps=fps, frame_count=frames or None,
                     duration=duration, codec=cc.name)


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Size, frame rate and length of a video file, from its header.

    Raises:
        VideoError: missing, empty, damaged or non-video file (still images included).
        CodecError: no decoder for the file's video codec.
    """
    container, stream = _open_input(path)
    with container:
        return _info(stream, container, Path(path).name)


def _upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display-matrix rotation (degrees counter-clockwise, as FFmpeg's
    av_display_rotation_get returns it) in steps of 90 degrees."""
    k = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb


def decode_frames(container: Any, stream: Any, every: int, name: str
                  ) -> Generator[Frame, None, None]:
    """Frames 0, every, 2 * every, ... of an open PyAV `stream` (file or camera), one at a time.

    Raises:
        VideoError: a decoding failure (`name` is used in the message).
    """
    av = _av()
    fps = _rate(stream, name)
    start = stream.start_time or 0
    stream.thread_type = "AUTO"
    index = -1
    try:
        for frame in container.decode(stream):
            index += 1
            if index % every:
                continue
            t = (float((frame.pts - start) * frame.time_base)
                 if frame.pts is not None and frame.time_base else index / float(fps))
            yield Frame(index, t, _upright(frame.to_ndarray(format="rgb24"), frame.rotation))
    except av.error.FFmpegError as e:
        raise VideoError(f"{name}: decoding failed after frame {index} ({_reason(e)})") from None


def read_frames(path: str | os.PathLike, every: int = 1) -> Generator[Frame, None, None]:
    """Decode a video file frame by frame (streamed; the file stays open until the iterator ends
    or is closed).

    Args:
        path: the video file.
        every: yield frames 0, every, 2 * every, ... only (>= 1).

    Yields:
        `Frame(index, time, rgb)` with rgb H x W x 3 uint8.

    Raises:
        VideoError, CodecError: as `probe_video`, or a decoding failure.
    """
    if every < 1:
        raise VideoError(f"every must be at least 1, got {every}")
    container, stream = _open_input(path)
    with container:
        yield from decode_frames(container, stream, every, Path(path).name)


def pad_to_even(rgb: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Pad H x W x 3 with white to an even width and height (what H.264 in yuv420p needs).

    Returns:
        (array of even size, (columns added at the right, rows added at the bottom)), each 0 or 1.
    """
    h, w = rgb.shape[:2]
    right, bottom = w % 2, h % 2
    if right or bottom:
        rgb = np.pad(rgb, ((0, bottom), (0, right), (0, 0)), constant_values=PAD_VALUE)
    return rgb, (right, bottom)


class VideoWriter:
    """Writes RGB frames of one fixed size to an mp4 file (H.264, yuv420p), one at a time.

    Use as a context manager: on an exception inside the block the partial file is removed.

    Args:
        path: the output file (written as mp4 whatever its name).
        fps: frames per second of the output; may be fractional (e.g. Fraction(30000, 1001)).
        codec: FFmpeg encoder name.
        crf: libx264 quality (0 = lossless, 51 = worst).

    Raises:
        CodecError: the encoder is not in this FFmpeg build, or refuses the size.
    """

    def __init__(self, path: str | os.PathLike, fps: float | Fraction, *, codec: str = ENCODER,
                 crf: int = 18) -> None:
        av = _av()
        try:
            av.codec.Codec(codec, "w")
        except (av.codec.codec.UnknownCodecError, ValueError):
            raise CodecError(f"the video encoder {codec!r} is not available in this FFmpeg build "
                             f"(PyAV {av.__version__}); the PyPI wheel of av bundles libx264"
                             ) from None
        self.path, self.codec, self.crf = Path(path), codec, crf
        self.fps = Fraction(fps).limit_denominator(1_000_000)
        self.frames = 0
        self.input_size: tuple[int, int] | None = None  # (W, H) of the frames given to write
        self.padding = (0, 0)  # (right, bottom) pixels added to reach even sizes
        self._container: Any = None
        self._stream: Any = None

    @property
    def size(self) -> tuple[int, int] | None:
        """(W, H) of the encoded frames (even), once the first frame is written."""
        if self.input_size is None:
            return None
        return self.input_size[0] + self.padding[0], self.input_size[1] + self.padding[1]

    def write(self, image: np.ndarray | Image.Image) -> None:
        """Encode one frame: H x W x 3 uint8 RGB (or a PIL image), the same size every time."""
        av = _av()
        rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise VideoError(f"frames must be H x W x 3 uint8, got {rgb.dtype} {rgb.shape}")
        size = (rgb.shape[1], rgb.shape[0])
        if self.input_size is None:
            self._start(size)
        elif size != self.input_size:
            raise VideoError(f"frame {self.frames} is {size[0]}x{size[1]} but the video is "
                             f"{self.input_size[0]}x{self.input_size[1]}")
        frame = av.VideoFrame.from_ndarray(pad_to_even(rgb)[0], format="rgb24")
        self._mux(frame)
        self.frames += 1

    def _start(self, size: tuple[int, int]) -> None:
        av = _av()
        self.input_size = size
        self.padding = (size[0] % 2, size[1] % 2)  # as pad_to_even adds
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._container = av.open(str(self.path), mode="w", format="mp4",
                                      options={"movflags": "+faststart"})
            self._stream = self._container.add_stream(self.codec, rate=self.fps)
        except (av.error.FFmpegError, OSError, ValueError) as e:
            raise VideoError(f"cannot write {self.path}: {_reason(e)}") from None
        self._stream.width, self._stream.height = self.size  # type: ignore[misc]
        self._stream.pix_fmt = PIXEL_FORMAT
        if self.codec == ENCODER:
            self._stream.options = {"crf": str(self.crf)}

    def _mux(self, frame: Any) -> None:
        av = _av()
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except av.error.FFmpegError as e:
            w, h = self.size or (0, 0)
            raise CodecError(f"the {self.codec} encoder failed on {w}x{h} frames at "
                             f"{float(self.fps):g} fps ({_reason(e)})") from None

    def close(self) -> None:
        """Flush the encoder and finish the file (no file exists when no frame was written)."""
        if self._container is not None:
            try:
                self._mux(None)
            finally:
                self._container.close()
                self._container = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
            return
        if self._container is not None:
            self._container.close()
            self._container = None
        self.path.unlink(missing_ok=True)


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

"""Video files and frames through PyAV: probing, decoding frame by frame, and an H.264 writer.

The reading and writing half of `zegformer.faces.video` (which segments videos with these):

- `probe_video(path)` -> `VideoInfo` (size, fps, frame count, duration, codec) from the header;
- `read_frames(path, every)` / `decode_frames(container, stream, every, name)` -> `Frame`s, one
  at a time (file or camera), rotation metadata applied in steps of 90 degrees;
- `VideoWriter(path, fps)`: RGB frames of one fixed size into an mp4 (libx264, yuv420p), odd sizes
  padded with one white column / row (`pad_to_even`); a partial file is removed on an exception.

Every failure is a `VideoError` (or `CodecError` for a missing decoder / encoder) with a
one-line message naming the file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Generator

import numpy as np
from PIL import Image

from zegformer.errors import ZegFormerError

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

"""Live segmentation of a camera, shown in a window: `python -m zegformer.demo --webcam`.

Works only where a camera and a display exist: Linux V4L2 devices (`/dev/video*`), read by PyAV's
bundled libavdevice (OpenCV is not needed), and a display (`$DISPLAY` or `$WAYLAND_DISPLAY`) with an
interactive matplotlib backend such as TkAgg to draw the frames. Nothing is written to disk. Close
the window or press Ctrl-C to stop. Elsewhere `check_webcam` raises a `VideoError` that says what is
missing (the demo prints it and exits with status 2).
"""
from __future__ import annotations

import os
import sys
from contextlib import closing
from pathlib import Path
from typing import Any, Mapping

from zegformer.faces.video import segment_frames
from zegformer.faces.video_io import VideoError, _av, _reason, decode_frames

NON_INTERACTIVE_BACKENDS = {"agg", "cairo", "pdf", "pgf", "ps", "svg", "template"}


def find_cameras(dev: str | os.PathLike = "/dev") -> list[Path]:
    """V4L2 device nodes (`/dev/video0`, ...), sorted by number."""
    nodes = [p for p in Path(dev).glob("video*") if p.name[5:].isdigit()]
    return sorted(nodes, key=lambda p: int(p.name[5:]))


def has_display(env: Mapping[str, str] = os.environ) -> bool:
    """True when an X11 or Wayland display is named in the environment."""
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def check_webcam() -> list[Path]:
    """The camera nodes to try, after checking that a camera and a display exist.

    Raises:
        VideoError: not Linux, no /dev/video* device, or no display; the message says which.
    """
    if not sys.platform.startswith("linux"):
        raise VideoError("--webcam reads V4L2 cameras and works on Linux only; record a clip and "
                         "use --video-input FILE")
    cameras = find_cameras()
    if not cameras:
        raise VideoError("--webcam needs a camera but no /dev/video* device exists; use "
                         "--video-input FILE for a recorded video")
    if not has_display():
        raise VideoError("--webcam needs a display to show the frames ($DISPLAY / "
                         "$WAYLAND_DISPLAY is not set); use --video-input FILE instead")
    return cameras


def _open_camera(cameras: list[Path]) -> tuple[Any, Any, Path]:
    av, errors = _av(), []
    for node in cameras:  # UVC cameras also expose metadata nodes that cannot stream
        try:
            container = av.open(str(node), format="v4l2")
        except (av.error.FFmpegError, OSError) as e:
            errors.append(f"{node}: {_reason(e)}")
            continue
        if container.streams.video:
            return container, container.streams.video[0], node
        container.close()
    raise VideoError("no camera could be opened (" + "; ".join(errors or ["no video stream"]) + ")")


def _window(title: str) -> tuple[Any, Any]:
    import matplotlib
    import matplotlib.pyplot as plt

    backend = str(matplotlib.get_backend()).lower()
    if backend in NON_INTERACTIVE_BACKENDS or backend.startswith("module://"):
        raise VideoError(f"--webcam needs an interactive matplotlib backend, not {backend!r} "
                         "(install python3-tk for TkAgg, or set MPLBACKEND)")
    fig = plt.figure(title)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_axis_off()
    return plt, fig


def run_webcam(predictor: Any, classes: list[str], *, cameras: list[Path] | None = None,
               mode: str = "decoupled", every: int = 1, threshold: float = 0.0,
               alpha: float = 0.5, title: str | None = None) -> int:
    """Segment camera frames live and show them (overlay and legend) until the window closes.

    Args:
        predictor: a `Predictor`.
        classes: class names.
        cameras: device nodes to try in order (default: `check_webcam()`).
        mode, threshold, alpha, title: as in `video.segment_video`.
        every: segment every N-th camera frame (the others are dropped).

    Returns:
        The number of frames shown.

    Raises:
        VideoError: no camera, display or interactive backend, or the camera fails.
    """
    cameras = cameras or check_webcam()
    plt, fig = _window("ZegFormer webcam")
    container, stream, node = _open_camera(cameras)
    shown, image = 0, None
    try:
        with container, closing(decode_frames(container, stream, every, node.name)) as frames:
            for _, _, picture in segment_frames(predictor, frames, classes, mode=mode,
                                                threshold=threshold, alpha=alpha, title=title):
                if not plt.fignum_exists(fig.number):
                    break
                if image is None:
                    image = fig.axes[0].imshow(picture)
                    fig.set_size_inches(picture.width / 100, picture.height / 100)
                else:
                    image.set_data(picture)
                plt.pause(0.001)
                shown += 1
    except KeyboardInterrupt:
        pass
    finally:
        plt.close(fig)
    return shown

"""Tests of the video demo (`--video-input`, `--every`, `--webcam`) and zegformer/faces/video.py.

A synthetic clip (a bright square moving right over a dark background) is written with PyAV
directly, run through `demo.main` in-process on the tiny random model, and the output video is
decoded again with PyAV.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
from test_demo import assert_clean_error

from zegformer.faces import demo, video, webcam
from zegformer.viz import drawing as visualize

W, H, FPS, N = 96, 64, 5, 10
CLASSES = "sky, box, floor"
NAMES = ["sky", "box", "floor"]
THRESHOLD = 0.4  # in pixel mode, leaves about half the pixels unlabelled (random model)


def square_frame(i: int, size: tuple[int, int] = (W, H)) -> np.ndarray:
    """Frame i: a 20 x 24 bright square at x = 4 + 8 i, y = 20, on dark gray."""
    rgb = np.full((size[1], size[0], 3), 40, np.uint8)
    rgb[20:44, 4 + 8 * i:24 + 8 * i] = 250
    return rgb


def write_clip(path: Path, n: int = N) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for i in range(n):
            for packet in stream.encode(av.VideoFrame.from_ndarray(square_frame(i), "rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def decode(path: Path) -> tuple[list[np.ndarray], list[float], float]:
    """(RGB frames, their times in seconds, the stream's average fps)."""
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
        fps = float(c.streams.video[0].average_rate)
    return [f.to_ndarray(format="rgb24") for f in frames], [float(f.time) for f in frames], fps


def run_main(capsys, *args: str) -> tuple[int, str]:
    code = demo.main(["--random-weights", "--device", "cpu", *args])
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4")


@pytest.fixture(scope="module")
def full_run(clip, tmp_path_factory):
    """--video-input on every frame, pixel mode; returns (exit code, output folder)."""
    out = tmp_path_factory.mktemp("out")
    code = demo.main(["--random-weights", "--device", "cpu", "--video-input", str(clip),
                      "--output", str(out), "--classes", CLASSES, "--threshold", str(THRESHOLD),
                      "--mode", "pixel"])
    return code, out


# ---------------------------------------------------------------------------- end to end
def test_video_demo_writes_every_frame_with_overlay_and_legend(full_run):
    code, out = full_run
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["clip.json", "clip.mp4"]
    frames, times, fps = decode(out / "clip.mp4")
    assert len(frames) == N and fps == pytest.approx(FPS)
    np.testing.assert_allclose(times, np.arange(N) / FPS, atol=1e-6)
    data = json.loads((out / "clip.json").read_text())
    h, w = frames[0].shape[:2]
    assert (w, h) == (data["output_video"]["width"], data["output_video"]["height"])
    assert w % 2 == 0 and h % 2 == 0 and w > W and h > H  # legend beside, banner on top
    assert all(f.shape == frames[0].shape for f in frames)
    banner = next(y for y in range(h) if frames[0][y, 2, 0] < 150)  # red UNTRAINED strip ends
    assert 10 < banner < 40 and (frames[0][:banner - 3, :40, 0] > 150).all()
    # where the square was in frame 0 but not in frame 9 (x 4..24), and where it is in 9 only
    a, b = (f[banner:banner + H, :W].astype(int) for f in (frames[0], frames[9]))
    assert np.abs(a - b)[22:42, 6:22].mean() > 40
    assert np.abs(a - b)[22:42, 78:92].mean() > 40
    # the legend lists all classes: its rows do not move between frames (colours are stable)
    legend_swatches = (slice(banner, h), slice(W + 4, W + 30))
    assert np.abs(frames[0][legend_swatches].astype(int)
                  - frames[9][legend_swatches].astype(int)).mean() < 3


def test_video_json_has_area_shares_over_time(full_run, clip, tiny_predictor):
    _, out = full_run
    data = json.loads((out / "clip.json").read_text())
    assert data["untrained"] is True and data["mode"] == "pixel" and data["every"] == 1
    colors = visualize.class_colors(NAMES)
    assert [(c["name"], c["color"]) for c in data["classes"]] == [
        (n, visualize.hex_color(colors[i])) for i, n in enumerate(NAMES)]
    assert data["input_video"]["width"] == W and data["input_video"]["frame_count"] == N
    rows = data["frames"]
    assert [r["frame"] for r in rows] == list(range(N))
    np.testing.assert_allclose([r["time"] for r in rows], np.arange(N) / FPS, atol=1e-6)
    for r in rows:
        shares = list(r["area_fraction"].values())
        assert list(r["area_fraction"]) == NAMES and all(0 <= s <= 1 for s in shares)
        assert sum(shares) <= 1 + 1e-9
        assert sum(shares) + r["unlabeled_fraction"] == pytest.approx(1.0)
    assert all(0.1 < r["unlabeled_fraction"] < 0.9 for r in rows)  # the threshold was applied
    assert all(sum(s > 0 for s in r["area_fraction"].values()) >= 2 for r in rows)
    # the same numbers as predicting the decoded input frames directly (same seed-0 model)
    inputs, _, _ = decode(clip)
    for i in (0, N - 1):
        res = tiny_predictor.predict(inputs[i], CLASSES, mode="pixel", threshold=THRESHOLD)
        assert rows[i]["area_fraction"] == {c.name: c.area_fraction for c in res.classes}


def test_every_2_keeps_5_frames_at_half_the_rate(clip, tmp_path, capsys):
    code, err = run_main(capsys, "--video-input", str(clip), "--output", str(tmp_path),
                         "--classes", CLASSES, "--every", "2")
    assert code == 0, err
    assert "5/5" in err  # tqdm's bar knew the total (so it could show an ETA)
    frames, times, fps = decode(tmp_path / "clip.mp4")
    assert len(frames) == 5 and fps == pytest.approx(FPS / 2)
    np.testing.assert_allclose(times, np.arange(5) * 2 / FPS, atol=1e-6)  # same duration
    data = json.loads((tmp_path / "clip.json").read_text())
    assert [r["frame"] for r in data["frames"]] == [0, 2, 4, 6, 8]
    np.testing.assert_allclose([r["time"] for r in data["frames"]], [0, .4, .8, 1.2, 1.6])
    assert data["output_video"]["fps"] == pytest.approx(2.5) and data["every"] == 2
    assert data["mode"] == "decoupled"


# ------------------------------------------------------------------------------ user errors
@pytest.mark.parametrize("make, args, fragments", [
    (None, [], ["video not found", "missing.mp4"]),
    (lambda p: p.write_text("just some notes\n"), [], ["not a video file", "bad.mp4"]),
    (lambda p: p.write_bytes(b""), [], ["empty"]),
    ("truncated", [], ["damaged or incomplete MP4"]),
    ("image", [], ["still image", "--input"]),
    ("clip", ["--every", "0"], ["--every", "at least 1"]),
    ("clip", ["--mode", "both"], ["--mode both"]),
    ("clip", ["--classes", " , "], ["no class names"]),
])
def test_bad_video_inputs_give_one_line_errors(make, args, fragments, clip, tmp_path, capsys):
    name = "missing.mp4" if make is None else "bad.mp4"
    path = tmp_path / name
    if make == "truncated":
        path.write_bytes(clip.read_bytes()[:300])  # mp4 header without the moov box
    elif make == "image":
        path = tmp_path / "still.png"
        from PIL import Image
        Image.fromarray(square_frame(0)).save(path)
    elif make == "clip":
        path = clip
    elif make is not None:
        make(path)
    out = tmp_path / "out"
    code, err = run_main(capsys, "--video-input", str(path), "--output", str(out), *args)
    assert_clean_error(subprocess.CompletedProcess([], code, "", err), *fragments)
    assert not out.exists()  # failed before loading the model, nothing written


def test_missing_encoder_is_a_clear_error(clip, tmp_path, tiny_predictor):
    with pytest.raises(video.CodecError, match="encoder 'no_such_h264' is not available"):
        video.segment_video(tiny_predictor, clip, CLASSES, tmp_path, codec="no_such_h264")
    assert list(tmp_path.iterdir()) == []


def test_output_may_not_overwrite_the_input(clip, tiny_predictor):
    with pytest.raises(video.VideoError, match="overwrite the input"):
        video.segment_video(tiny_predictor, clip, CLASSES, clip.parent, progress=False)


# ------------------------------------------------------------------ writer: sizes and padding
def test_writer_pads_odd_sizes_with_white_and_refuses_size_changes(tmp_path):
    path = tmp_path / "odd.mp4"
    with video.VideoWriter(path, 5) as writer:
        for i in range(3):
            writer.write(np.full((21, 33, 3), 60 * i, np.uint8))
        assert writer.padding == (1, 1) and writer.size == (34, 22)
        with pytest.raises(video.VideoError, match="33x21"):
            writer.write(np.zeros((22, 34, 3), np.uint8))
    frames, _, _ = decode(path)
    assert len(frames) == 3 and frames[0].shape == (22, 34, 3)
    assert frames[2][2:18, -1].mean() > 200 and frames[2][-1, 2:30].mean() > 200  # white pad
    assert abs(frames[2][2:18, 2:30].mean() - 120) < 6  # content kept, not cropped
    rgb, pad = video.pad_to_even(np.zeros((4, 6, 3), np.uint8))
    assert pad == (0, 0) and rgb.shape == (4, 6, 3)


def test_odd_sized_lossless_input_gives_even_padded_output(tmp_path, tiny_predictor):
    """95 x 63 frames in FFV1 / Matroska (no frame count in the header: estimated)."""
    src = tmp_path / "odd.mkv"
    with av.open(str(src), "w") as out:
        stream = out.add_stream("ffv1", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 95, 63, "bgr0"
        for i in range(3):
            for packet in stream.encode(av.VideoFrame.from_ndarray(square_frame(i, (95, 63)),
                                                                   "rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    assert video.probe_video(src).frame_count == 3
    summary = video.segment_video(tiny_predictor, src, CLASSES, tmp_path / "out", progress=False)
    frames, _, _ = decode(tmp_path / "out" / "odd.mp4")
    made = summary["output_video"]
    assert len(frames) == 3 and frames[0].shape == (made["height"], made["width"], 3)
    assert made["width"] % 2 == 0 and made["height"] % 2 == 0
    pad = made["padding"]
    expected = video.render_frame(square_frame(0, (95, 63)),
                                  tiny_predictor.predict(square_frame(0, (95, 63)), CLASSES),
                                  visualize.class_colors(NAMES))
    assert (pad["right"], pad["bottom"]) == (expected.width % 2, expected.height % 2)
    assert (expected.width + pad["right"], expected.height + pad["bottom"]) == (
        made["width"], made["height"])
    assert summary["input_video"]["width"] == 95 and summary["input_video"]["height"] == 63


def test_failed_write_leaves_no_partial_file(tmp_path):
    path = tmp_path / "broken.mp4"
    with pytest.raises(RuntimeError), video.VideoWriter(path, 5) as writer:
        writer.write(np.zeros((8, 8, 3), np.uint8))
        raise RuntimeError("stop")
    assert not path.exists()


# -------------------------------------------------------------------------------- webcam
def test_webcam_without_camera_says_so(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(webcam, "find_cameras", lambda dev="/dev": [])
    code, err = run_main(capsys, "--webcam", "--output", str(tmp_path / "o"))
    assert_clean_error(subprocess.CompletedProcess([], code, "", err), "no /dev/video*")


def test_webcam_without_display_says_so(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(webcam, "find_cameras", lambda dev="/dev": [Path("/dev/video0")])
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    code, err = run_main(capsys, "--webcam")
    assert_clean_error(subprocess.CompletedProcess([], code, "", err), "display")


def test_find_cameras_lists_numbered_video_nodes(tmp_path):
    for name in ("video10", "video2", "video0", "videoX", "vbi0"):
        (tmp_path / name).touch()
    assert [p.name for p in webcam.find_cameras(tmp_path)] == ["video0", "video2", "video10"]
    assert webcam.has_display({"WAYLAND_DISPLAY": "wayland-0"})
    assert not webcam.has_display({"DISPLAY": ""})


def test_webcam_needs_an_interactive_backend_and_an_openable_camera(tmp_path, tiny_predictor):
    import matplotlib

    matplotlib.use("Agg")  # what a machine without a display gets
    with pytest.raises(video.VideoError, match="interactive matplotlib backend"):
        webcam.run_webcam(tiny_predictor, NAMES, cameras=[tmp_path / "video0"])
    fake = tmp_path / "video0"
    fake.write_bytes(b"not a device")
    with pytest.raises(video.VideoError, match="no camera could be opened.*video0"):
        webcam._open_camera([fake])

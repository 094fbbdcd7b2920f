"""Tests of `python -m zegformer.faces.demo`: outputs of real runs (tiny random model) and user errors."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import torch
from PIL import Image

from zegformer.faces import demo
from zegformer.loading.config import split_opt
from zegformer.viz.export import load_label_map

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
CAT = EXAMPLES / "cat.jpg"


def run_demo(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ZEGFORMER_") or k == "ZEGFORMER_CACHE"}  # the suite's temp cache
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "zegformer.faces.demo", *args], cwd=cwd or ROOT,
                          env=env, capture_output=True, text=True, timeout=600)


def assert_clean_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit status 2, no traceback, and one 'error:' line that mentions every fragment."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], proc.stderr


# ------------------------------------------------------------------ helpers, no model needed
def test_examples_manifest_lists_small_existing_images():
    entries = json.loads((EXAMPLES / "examples.json").read_text())
    assert len(entries) >= 3
    for e in entries:
        assert set(e) >= {"image", "classes", "source", "license"}
        path = EXAMPLES / e["image"]
        assert path.stat().st_size <= 200_000
        with Image.open(path) as im:
            assert max(im.size) <= 640 and im.mode == "RGB"
        assert len([c for c in e["classes"].split(",") if c.strip()]) >= 3
    assert demo.example_classes()[CAT.resolve()] == next(
        e["classes"] for e in entries if e["image"] == "cat.jpg")


def test_expand_inputs_globs_folders_and_errors(tmp_path):
    for name in ("b.jpg", "a.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    got = demo.expand_inputs([str(tmp_path / "*.jpg"), str(tmp_path)])
    assert got == [tmp_path / "b.jpg", tmp_path / "a.png"]  # glob first, folder adds a.png
    with pytest.raises(demo.UsageError, match="no files match"):
        demo.expand_inputs([str(tmp_path / "*.webp")])
    with pytest.raises(demo.UsageError, match="not found"):
        demo.expand_inputs([str(tmp_path / "missing.jpg")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(demo.UsageError, match="no images"):
        demo.expand_inputs([str(tmp_path / "empty")])


def test_output_stems_are_unique():
    paths = [Path("x/a.jpg"), Path("y/a.jpg"), Path("b.png"), Path("z/a.png")]
    assert demo.output_stems(paths) == ["a", "a_2", "b", "a_3"]


def test_weights_are_taken_out_of_opts():
    opts = ["INPUT.MIN_SIZE_TEST", "512", "MODEL.WEIGHTS", "m.pth"]
    weights, rest = split_opt(opts, "MODEL.WEIGHTS")  # what load_demo_predictor does
    assert weights == "m.pth" and rest == ["INPUT.MIN_SIZE_TEST", "512"]


# ---------------------------------------------------------------------- end-to-end runs
@pytest.fixture(scope="module")
def decoupled_run(tmp_path_factory):
    """One run on an example image and a same-named copy elsewhere (default class list)."""
    tmp = tmp_path_factory.mktemp("demo")
    (tmp / "other").mkdir()
    shutil.copy(CAT, tmp / "other" / "cat.jpg")
    out = tmp / "out"
    proc = run_demo("--random-weights", "--input", str(CAT), str(tmp / "other" / "*.jpg"),
                    "--output", str(out), "--device", "cpu")
    return proc, out


def test_demo_writes_three_files_per_image(decoupled_run):
    proc, out = decoupled_run
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{s}{suffix}" for s in ("cat", "cat_2")
        for suffix in ("_overlay.webp", "_labels.png", ".json"))
    with Image.open(CAT) as im:
        w, h = im.size
    with Image.open(out / "cat_overlay.webp") as overlay:
        assert overlay.width > w or overlay.height > h  # legend panel and banner
        assert overlay.width >= w and overlay.height >= h
        top = np.asarray(overlay.convert("RGB"))[3, :40]
    assert (top[:, 0] > 150).all() and (top[:, 1] < 80).all()  # red UNTRAINED banner
    labels = load_label_map(out / "cat_labels.png")
    assert labels.shape == (h, w)
    data = json.loads((out / "cat.json").read_text())
    want = [c.strip() for c in demo.example_classes()[CAT.resolve()].split(",")]
    assert [c["name"] for c in data["classes"]] == want
    assert data["untrained"] is True and data["mode"] == "decoupled"
    assert all(c["color"].startswith("#") and c["split"] in ("seen", "novel")
               for c in data["classes"])
    assert data["timings"]["total"] > 0
    # the label map and the JSON tell the same story
    areas = np.bincount(labels[labels >= 0].ravel(), minlength=len(want)) / labels.size
    np.testing.assert_allclose(areas, [c["area_fraction"] for c in data["classes"]], atol=1e-6)


def test_demo_both_modes_with_explicit_classes(tmp_path):
    out = tmp_path / "out"
    proc = run_demo("--random-weights", "--input", str(EXAMPLES / "coffee.jpg"), "--output",
                    str(out), "--classes", "cup, spoon, tv | television", "--mode", "both",
                    "--confidence-threshold", "0.4", "--alpha", "0.7")
    assert proc.returncode == 0, proc.stderr
    names = {p.name for p in out.iterdir()}
    assert names == {"coffee_decoupled_overlay.webp", "coffee_decoupled_labels.png",
                     "coffee_pixel_overlay.webp", "coffee_pixel_labels.png",
                     "coffee_disagreement.webp", "coffee.json"}
    data = json.loads((out / "coffee.json").read_text())
    assert set(data["results"]) == {"decoupled", "pixel"} and data["untrained"] is True
    for res in data["results"].values():
        assert [c["name"] for c in res["classes"]] == ["cup", "spoon", "tv | television"]
    assert 0.0 <= data["disagreement_fraction"] <= 1.0
    labels = load_label_map(out / "coffee_pixel_labels.png")
    assert labels.min() >= -1 and labels.max() <= 2


def test_unreadable_image_is_skipped_and_reported(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg")
    out = tmp_path / "out"
    proc = run_demo("--random-weights", "--input", str(bad), str(CAT), "--output", str(out))
    assert_clean_error(proc, "1 of 2")
    assert "warning: skipping" in proc.stderr and "broken.jpg" in proc.stderr
    assert (out / "cat_overlay.webp").is_file() and not (out / "broken.json").exists()


@pytest.mark.parametrize("args, fragments", [
    (["--input", "no/such/file.jpg"], ["not found", "no/such/file.jpg"]),
    (["--input", "examples/*.nothing"], ["no files match", "*.nothing"]),
    (["--input", "examples/cat.jpg", "--classes", " , ,"], ["no class names"]),
    (["--input", "examples/cat.jpg", "--classes", "cat, Cat"], ["twice"]),
    (["--input", "examples/cat.jpg", "--threshold", "2"], ["between 0 and 1"]),
    (["--input", "examples/cat.jpg", "--alpha", "-1"], ["--alpha"]),
    (["--input", "examples/cat.jpg", "--opts", "MODEL.WEIGHTS"], ["KEY VALUE"]),
    (["--output", "x"], ["--input"]),
    (["--input", "examples/cat.jpg", "--mode", "fast"], ["--mode"]),
])
def test_user_errors_exit_2_with_one_line(args, fragments, capsys, monkeypatch, tmp_path):
    """In-process (fast): these fail before any model is built."""
    monkeypatch.chdir(ROOT)
    try:
        code = demo.main(["--random-weights", "--output", str(tmp_path / "o"), *args])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert_clean_error(subprocess.CompletedProcess([], code, "", err), *fragments)
    assert not (tmp_path / "o").exists()


def test_cli_error_in_a_subprocess_has_no_traceback():
    assert_clean_error(run_demo("--random-weights", "--input", "examples/nothing-here.jpg"),
                       "not found")


def test_missing_weights_says_what_to_set(tmp_path):
    proc = run_demo("--input", str(CAT), "--output", str(tmp_path))
    assert_clean_error(proc, "MODEL.WEIGHTS", "ZEGFORMER_WEIGHTS")
    proc = run_demo("--input", str(CAT), "--output", str(tmp_path),
                    "--opts", "MODEL.WEIGHTS", str(tmp_path / "nope.pth"))
    assert_clean_error(proc, "not found", "nope.pth")
    assert not list(tmp_path.iterdir())


def test_demo_tta_averages_the_official_passes(tmp_path, tiny_predictor):
    """--tta runs TEST.AUG's 12 passes (6 sizes x flip); the JSON says so and the label map is
    the one `predict(tta=True)` gives."""
    from PIL import Image as PILImage

    small = tmp_path / "small.png"
    PILImage.open(EXAMPLES / "coffee.jpg").convert("RGB").resize((64, 48)).save(small)
    out = tmp_path / "out"
    code = demo.main(["--random-weights", "--input", str(small), "--output", str(out),
                      "--classes", "cup, table", "--tta"])
    assert code == 0
    data = json.loads((out / "small.json").read_text())
    assert data["results"]["decoupled"]["tta_passes"] == 12
    expected = tiny_predictor.predict(small, "cup, table", tta=True)
    assert np.array_equal(load_label_map(out / "small_labels.png"), expected.label_map)

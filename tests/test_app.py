"""The Space's helpers and UI wiring, without launching a server (see test_app_api.py for that)."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(1)

from zegformer.faces import app_support as support  # noqa: E402
from zegformer.errors import ZegFormerError  # noqa: E402
from zegformer.inference.result import SegmentationResult, class_statistics  # noqa: E402
from zegformer.text import MAX_CLASSES, MAX_NAME_LENGTH, parse_classes  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def make_result(names, mode="decoupled", h=24, w=32, seed=0, untrained=True, threshold=0.0):
    """A SegmentationResult from random block-shaped scores (no model needed)."""
    rng = np.random.default_rng(seed)
    probs = np.kron(rng.random((len(names), 4, 4)), np.ones((h // 4, w // 4))).astype(np.float32)
    seen = [i % 2 == 0 for i in range(len(names))]
    label_map, stats = class_statistics(probs, list(names), seen, threshold)
    return SegmentationResult(list(names), probs, label_map, stats, mode,
                              {"text": 0.01, "backbone": 0.02, "total": 0.05},
                              "tiny (random weights)", untrained, "cpu")


# ------------------------------------------------------------------------------ vocabularies
@pytest.mark.parametrize("label,count", [("COCO-Stuff (171)", 171), ("PASCAL VOC (20)", 20),
                                         ("ADE20K (150)", 150), ("ADE20K-Full (847)", 847)])
def test_every_preset_fills_a_box_the_parser_accepts(label, count):
    assert label in support.available_presets()
    text = support.fill_classes("", label, extend=False)
    names = parse_classes(text)
    assert len(names) == count
    assert all(len(n) <= MAX_NAME_LENGTH for n in names)


def test_official_synonyms_become_bar_synonyms():
    assert support.app_class_name("pot, flowerpot") == "pot | flowerpot"
    assert support.app_class_name("wall") == "wall"
    long = ", ".join(["computing machine"] * 10)
    short = support.app_class_name(long)
    assert len(short) <= MAX_NAME_LENGTH and short.startswith("computing machine | ")
    ade = support.preset_classes("ADE20K (150)")
    assert "building | edifice" in ade and not any("," in n for n in ade)


def test_extend_keeps_the_box_and_adds_only_new_classes():
    out = support.fill_classes("Cat, my special thing", "PASCAL VOC (20)", extend=True)
    names = parse_classes(out)
    assert names[:2] == ["Cat", "my special thing"]
    assert len(names) == 2 + 19  # "cat" is in VOC already (case-insensitive)
    assert support.fill_classes("  ", "PASCAL VOC (20)", extend=True).startswith("aeroplane")
    with pytest.raises(ZegFormerError, match="unknown preset"):
        support.fill_classes("", "Cityscapes", extend=False)


def test_describe_classes_shows_the_parsed_list_or_the_problem():
    assert "2 classes" in support.describe_classes("cat,  tv|television")
    assert "`tv | television`" in support.describe_classes("cat,  tv|television")
    assert "at most" in support.describe_classes("")
    assert "Cannot use" in support.describe_classes("cat, CAT")
    many = ", ".join(f"class{i}" for i in range(MAX_CLASSES + 1))
    assert "too many" in support.describe_classes(many)


def test_modes_for():
    both = ("decoupled", "pixel")
    assert support.modes_for("both", both) == ["decoupled", "pixel"]
    assert support.modes_for("pixel", both) == ["pixel"]
    with pytest.raises(ZegFormerError, match="unknown mode"):
        support.modes_for("fast", both)
    with pytest.raises(ZegFormerError, match="supports only"):
        support.modes_for("both", ("pixel",))


# ------------------------------------------------------------------------------ packaging
def test_package_writes_files_json_and_overlays(tmp_path):
    image = np.random.default_rng(1).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    names = ["cat", "tv | television", "sky"]
    results = [make_result(names, "decoupled"), make_result(names, "pixel", seed=5)]
    out = support.package(image, results, 0.4, tmp_path, original_size=(48, 64))
    by_name = {Path(f).name: f for f in out.files}
    assert set(by_name) >= {"decoupled_overlay.png", "decoupled_labels.png", "pixel_figure.png",
                            "disagreement.png", "result.json"}
    for f in out.files:
        assert Path(f).is_file()
    assert Image.open(by_name["decoupled_overlay.png"]).size == (32, 24)
    assert Image.open(by_name["decoupled_labels.png"]).size == (32, 24)
    data = json.loads(Path(by_name["result.json"]).read_text())
    assert data == json.loads(json.dumps(out.data))
    assert [c["name"] for c in data["classes"]] == names
    assert set(data["results"]) == {"decoupled", "pixel"} and data["mode"] == "both"
    assert data["original_size"] == {"height": 48, "width": 64}
    expected = float((results[0].label_map != results[1].label_map).mean())
    assert data["disagreement_fraction"] == pytest.approx(expected, abs=1e-6)
    assert out.confidences == {c.name: c.confidence for c in results[0].classes}
    assert len(out.table) == 2 * len(names) and out.table[0][:3] == [
        results[0].present_classes[0].name, "seen" if results[0].present_classes[0].seen
        else "novel", "decoupled"]
    assert "downscaled from 64 × 48" in out.status and "Untrained" in out.status

    values = support.overlay_values(image, out.data, out.files)
    assert [title for _, title, _ in values] == ["Decoupled (ZegFormer)", "Pixel-level"]
    (base, masks), _, cmap = values[0]
    assert base is image
    present = results[0].present_classes
    assert [label for _, label in masks] == [
        f"{c.name} {round(100 * c.confidence)}%" for c in present]
    assert list(cmap) == [label for _, label in masks]
    assert set(cmap.values()) <= {c["color"] for c in out.data["classes"]}
    np.testing.assert_allclose(masks[0][0], (results[0].label_map == present[0].index) * 0.4)
    assert support.overlay_values(np.zeros((5, 5, 3), np.uint8), out.data, out.files) == []
    assert support.overlay_values(image, out.data, []) == []


def test_package_single_mode_has_no_disagreement_and_checks_opacity(tmp_path):
    image = np.zeros((24, 32, 3), np.uint8)
    out = support.package(image, [make_result(["a", "b"], untrained=False)], 1.0, tmp_path)
    assert out.disagreement is None and "disagreement_fraction" not in out.data
    assert "Untrained" not in out.status and "downscaled" not in out.status
    with pytest.raises(ZegFormerError, match="opacity"):
        support.package(image, [make_result(["a", "b"])], 1.5, tmp_path)


def test_output_dirs_are_fresh_and_old_ones_pruned(tmp_path):
    a = support.new_output_dir(tmp_path, max_age_s=60)
    b = support.new_output_dir(tmp_path, max_age_s=60)
    assert a != b and a.is_dir() and b.is_dir()
    old = time.time() - 120
    os.utime(a, (old, old))
    support.new_output_dir(tmp_path, max_age_s=60)
    assert not a.exists() and b.exists()


def test_run_modes_spreads_progress_over_modes():
    calls = []

    class Recorder:
        def predict(self, image, classes, mode, threshold, progress):
            progress(0.5, "half")
            return make_result(classes, mode)

    results = support.run_modes(Recorder(), None, ["a", "b"], ["decoupled", "pixel"], 0.0,
                                lambda f, d: calls.append((f, d)))
    assert [r.mode for r in results] == ["decoupled", "pixel"]
    assert calls == [(0.25, "Decoupled (ZegFormer): half"), (0.75, "Pixel-level: half")]


# ------------------------------------------------------------------------------ start-up
def test_without_weights_the_app_explains_what_to_set(monkeypatch):
    for var in (support.WEIGHTS_ENV, support.CLIP_WEIGHTS_ENV, support.CONFIG_ENV,
                support.RANDOM_ENV):
        monkeypatch.delenv(var, raising=False)
    message = support.load_app_predictor()
    assert isinstance(message, str)
    assert "ZEGFORMER_WEIGHTS" in message and "--random-weights" in message

    import app

    demo = app.build_demo(message)
    ids = {c["props"].get("elem_id") for c in demo.get_config_file()["components"]}
    assert {"setup-help", "input-image", "classes", "run"} <= ids


def test_random_weights_from_the_environment(monkeypatch):
    monkeypatch.setenv(support.RANDOM_ENV, "1")
    predictor = support.load_app_predictor()
    assert predictor.untrained


def test_blocks_build_with_one_public_endpoint(tiny_demo):
    config = tiny_demo.get_config_file()
    public = [d for d in config["dependencies"] if d.get("api_visibility", "public") == "public"]
    assert [d["api_name"] for d in public] == ["segment"]
    ids = {c["props"].get("elem_id") for c in config["components"]}
    assert {"overlay", "overlay-pixel", "confidences", "class-table", "downloads", "result-json",
            "status", "disagreement", "preset", "mode", "threshold", "opacity", "untrained"} <= ids
    assert tiny_demo._queue.max_size == 32  # a burst waits in a bounded queue


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(tmp_path_factory.mktemp("examples_cache"))
    import app
    from zegformer import load_random_predictor

    return app.build_demo(load_random_predictor())

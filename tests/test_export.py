"""Tests of zegformer.viz.export, the one writer of results used by the app and the demo CLI
(hand-made SegmentationResult objects, no model needed)."""
from __future__ import annotations

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
from PIL import Image

from result_support import block_result, two_modes_scene
from test_visualize import scene  # noqa: F401  (a fixture)
from zegformer.errors import ZegFormerError
from zegformer.viz import drawing as V
from zegformer.viz import export as E


# ------------------------------------------------------------------------------ label files
@pytest.mark.parametrize("k", [3, 255, 256, 1000])
def test_label_map_png_round_trip(tmp_path, k):
    rng = np.random.default_rng(k)
    labels = rng.integers(-1, k, (17, 23)).astype(np.int32)
    labels[0, 0], labels[0, 1] = -1, k - 1
    path = tmp_path / "labels.png"
    E.save_label_map(labels, path, num_classes=k)
    with Image.open(path) as im:
        assert im.mode == ("L" if k <= 255 else "I;16")
        raw = np.asarray(im)
    assert raw[0, 0] == (255 if k <= 255 else 65535)
    back = E.load_label_map(path)
    assert back.dtype == np.int32
    np.testing.assert_array_equal(back, labels)


def test_save_label_map_rejects_out_of_range(tmp_path):
    with pytest.raises(ValueError):
        E.save_label_map(np.array([[5]]), tmp_path / "x.png", num_classes=3)


def test_result_json_has_colours(scene):  # noqa: F811
    _, res = scene
    data = E.result_json(res, V.class_colors(res.class_names))
    assert [c["name"] for c in data["classes"]] == res.class_names
    assert data["classes"][1]["color"] == V.hex_color(V.class_colors(res.class_names)[1])
    assert len({c["color"] for c in data["classes"]}) == 3
    assert data["classes"][2]["split"] == "novel"
    assert data["original_size"] == data["image_size"] == {"height": 40, "width": 60}


# ---------------------------------------------------------------------------------- writing
def test_app_layout_writes_files_and_the_document(tmp_path):
    image, names, results = two_modes_scene()
    out = E.write_results(tmp_path, image, results, 0.4)
    assert [p.name for p in out.files] == [
        "decoupled_overlay.png", "decoupled_figure.png", "decoupled_labels.png",
        "pixel_overlay.png", "pixel_figure.png", "pixel_labels.png", "disagreement.png",
        "result.json"]
    for f in out.files:
        assert f.is_file()
    by_name = {p.name: p for p in out.files}
    assert Image.open(by_name["decoupled_overlay.png"]).size == (32, 24)
    assert Image.open(by_name["decoupled_labels.png"]).size == (32, 24)
    assert Image.open(by_name["pixel_figure.png"]).width > 32  # the legend
    np.testing.assert_array_equal(E.load_label_map(by_name["pixel_labels.png"]),
                                  results[1].label_map)
    data = json.loads(by_name["result.json"].read_text())
    assert data == json.loads(json.dumps(out.document))
    assert [c["name"] for c in data["classes"]] == names
    assert set(data["results"]) == {"decoupled", "pixel"} and data["mode"] == "both"
    assert data["original_size"] == {"height": 48, "width": 64}
    assert data["image_size"] == {"height": 24, "width": 32}
    assert data["opacity"] == 0.4 and data["files"] == [p.name for p in out.files]
    assert "input" not in data
    expected = float((results[0].label_map != results[1].label_map).mean())
    assert data["disagreement_fraction"] == pytest.approx(expected, abs=1e-6)
    assert out.disagreement is not None and out.disagreement.width == 32
    assert out.image is image  # already at the results' size: drawn as it is


def test_cli_layout_names_by_stem_and_writes_labels_at_the_input_size(tmp_path):
    big = np.random.default_rng(2).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    one = [block_result(["cup", "table"], original_size=(48, 64))]
    out = E.write_results(tmp_path / "single", big, one, 0.5, E.cli_layout("coffee"),
                          input_name="photos/coffee.jpg")
    assert [p.name for p in out.files] == ["coffee_overlay.png", "coffee_labels.png",
                                           "coffee.json"]
    assert out.image.shape == (24, 32, 3)  # the input resized once to the results' size
    labels = E.load_label_map(tmp_path / "single" / "coffee_labels.png")
    assert labels.shape == (48, 64)  # nearest-neighbour back to the input's size
    np.testing.assert_array_equal(labels[::2, ::2], one[0].label_map)
    with Image.open(tmp_path / "single" / "coffee_overlay.png") as figure:
        assert figure.width > 32 and figure.height >= 24  # the figure, with its legend
    doc = json.loads((tmp_path / "single" / "coffee.json").read_text())
    assert doc["input"] == "photos/coffee.jpg" and doc["mode"] == "decoupled"

    two = one + [block_result(["cup", "table"], "pixel", seed=3, original_size=(48, 64))]
    out = E.write_results(tmp_path / "both", big, two, 0.5, E.cli_layout("coffee"))
    assert {p.name for p in out.files} == {
        "coffee_decoupled_overlay.png", "coffee_decoupled_labels.png",
        "coffee_pixel_overlay.png", "coffee_pixel_labels.png", "coffee_disagreement.png",
        "coffee.json"}


def test_one_document_layout_for_every_layout(tmp_path):
    image = np.zeros((24, 32, 3), np.uint8)
    results = [block_result(["a", "b"]), block_result(["a", "b"], "pixel", seed=1)]
    app = E.write_results(tmp_path / "app", image, results, 0.5).document
    cli = E.write_results(tmp_path / "cli", image, results, 0.5, E.cli_layout("x")).document
    assert set(app) == set(cli)
    assert {k: v for k, v in app.items() if k != "files"} == \
        {k: v for k, v in cli.items() if k != "files"}
    assert E.result_document(results, 0.5) == {**app, "files": []}
    single = E.result_document(results[:1], 0.5)
    assert single["mode"] == "decoupled" and list(single["results"]) == ["decoupled"]
    assert "disagreement_fraction" not in single


def test_bad_opacity_writes_nothing(tmp_path):
    with pytest.raises(ZegFormerError, match="opacity"):
        E.write_results(tmp_path / "out", np.zeros((24, 32, 3), np.uint8),
                        [block_result(["a", "b"])], 1.5)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="one or two"):
        E.write_results(tmp_path / "out", np.zeros((24, 32, 3), np.uint8), [], 0.5)


def test_mode_titles_are_the_figures_titles(tmp_path, scene):  # noqa: F811
    image, res = scene
    out = E.write_results(tmp_path, image, [res], 0.5)
    drawn = np.asarray(Image.open(tmp_path / "decoupled_figure.png").convert("RGB"))
    again = np.asarray(V.render(image, res, 0.5, title=E.MODE_TITLES["decoupled"]))
    np.testing.assert_array_equal(drawn, again)
    assert out.document["classes"][0]["color"] == V.hex_color(V.class_colors(res.class_names)[0])

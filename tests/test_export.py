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
        "decoupled_overlay.webp", "decoupled_figure.webp", "decoupled_labels.png",
        "pixel_overlay.webp", "pixel_figure.webp", "pixel_labels.png", "disagreement.webp",
        "result.json"]
    for f in out.files:
        assert f.is_file()
    by_name = {p.name: p for p in out.files}
    assert Image.open(by_name["decoupled_overlay.webp"]).size == (32, 24)
    assert Image.open(by_name["decoupled_labels.png"]).size == (32, 24)
    assert Image.open(by_name["pixel_figure.webp"]).width > 32  # the legend
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
    assert [p.name for p in out.files] == ["coffee_overlay.webp", "coffee_labels.png",
                                           "coffee.json"]
    assert out.image.shape == (24, 32, 3)  # the input resized once to the results' size
    labels = E.load_label_map(tmp_path / "single" / "coffee_labels.png")
    assert labels.shape == (48, 64)  # nearest-neighbour back to the input's size
    np.testing.assert_array_equal(labels[::2, ::2], one[0].label_map)
    with Image.open(tmp_path / "single" / "coffee_overlay.webp") as figure:
        assert figure.width > 32 and figure.height >= 24  # the figure, with its legend
    doc = json.loads((tmp_path / "single" / "coffee.json").read_text())
    assert doc["input"] == "photos/coffee.jpg" and doc["mode"] == "decoupled"

    two = one + [block_result(["cup", "table"], "pixel", seed=3, original_size=(48, 64))]
    out = E.write_results(tmp_path / "both", big, two, 0.5, E.cli_layout("coffee"))
    assert {p.name for p in out.files} == {
        "coffee_decoupled_overlay.webp", "coffee_decoupled_labels.png",
        "coffee_pixel_overlay.webp", "coffee_pixel_labels.png", "coffee_disagreement.webp",
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
    out = E.write_results(tmp_path, image, [res], 0.5, E.FileLayout(picture_format="png"))
    drawn = np.asarray(Image.open(tmp_path / "decoupled_figure.png").convert("RGB"))
    again = np.asarray(V.render(image, res, 0.5, title=E.MODE_TITLES["decoupled"]))
    np.testing.assert_array_equal(drawn, again)  # lossless pictures when asked
    assert out.document["classes"][0]["color"] == V.hex_color(V.class_colors(res.class_names)[0])


# ------------------------------------------------------------------------------ file formats
def _smooth_image(h: int, w: int) -> np.ndarray:
    """A photo-like H x W x 3 image: gradients and a soft disc (compresses like a photo)."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    disc = np.exp(-((x - 0.4) ** 2 + (y - 0.3) ** 2) * 20)
    rgb = np.stack([200 * x + 40 * disc, 150 * y + 90 * disc, 120 + 100 * disc * x], axis=-1)
    return rgb.clip(0, 255).astype(np.uint8)


def test_pictures_are_lossy_webp_and_label_maps_lossless_png(tmp_path):
    names = ["cat", "sofa", "sky"]
    image = _smooth_image(240, 320)
    results = [block_result(names, "decoupled", h=240, w=320),
               block_result(names, "pixel", h=240, w=320, seed=3)]
    out = E.write_results(tmp_path / "webp", image, results, 0.5)
    lossless = E.write_results(tmp_path / "png", image, results, 0.5,
                               E.FileLayout(picture_format="png"))
    for webp, png in zip(out.files[:-1], lossless.files[:-1]):
        with Image.open(webp) as a, Image.open(png) as b:
            if webp.name.endswith("_labels.png"):
                assert webp.name == png.name and a.format == "PNG"
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # bit-exact
                continue
            assert webp.suffix == ".webp" and png.suffix == ".png" and a.format == "WEBP"
            assert a.size == b.size
            err = np.abs(np.asarray(a.convert("RGB")).astype(int) - np.asarray(b.convert("RGB")))
            assert err.mean() < 3.0, webp.name  # quality 90: close to the drawing
        assert webp.stat().st_size < png.stat().st_size / 2, webp.name
    drawn = V.overlay(image, results[0].label_map, V.class_colors(names), 0.5)
    with Image.open(tmp_path / "png" / "decoupled_overlay.png") as im:
        np.testing.assert_array_equal(np.asarray(im), drawn)


def test_jpeg_pictures_and_bad_formats(tmp_path):
    one = [block_result(["a", "b"])]
    out = E.write_results(tmp_path, np.zeros((24, 32, 3), np.uint8), one, 0.5,
                          E.FileLayout(stem="x", picture_format="jpeg"))
    assert [p.name for p in out.files] == ["x_decoupled_overlay.jpg", "x_decoupled_figure.jpg",
                                           "x_decoupled_labels.png", "x.json"]
    with Image.open(out.files[0]) as im:
        assert im.format == "JPEG"
    with pytest.raises(ZegFormerError, match="unknown picture format 'gif'"):
        E.FileLayout(picture_format="gif")


def test_pictures_too_large_for_webp_are_refused_before_writing(tmp_path, monkeypatch):
    import io

    Image.new("RGB", (E.WEBP_MAX_SIDE, 1)).save(io.BytesIO(), format="WEBP")
    with pytest.raises((OSError, ValueError)):  # the format's own limit, as the constant says
        Image.new("RGB", (E.WEBP_MAX_SIDE + 1, 1)).save(io.BytesIO(), format="WEBP")
    monkeypatch.setattr(E, "WEBP_MAX_SIDE", 40)  # a 48 x 64 result is then "too large"
    result = [block_result(["a", "b"], h=48, w=64)]
    with pytest.raises(ZegFormerError, match="WebP holds at most 40 a side"):
        E.write_results(tmp_path / "out", np.zeros((48, 64, 3), np.uint8), result, 0.5)
    assert not (tmp_path / "out").exists()
    out = E.write_results(tmp_path / "jpg", np.zeros((48, 64, 3), np.uint8), result, 0.5,
                          E.FileLayout(picture_format="jpeg"))
    assert out.files[0].name == "decoupled_overlay.jpg"

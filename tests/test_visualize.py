"""Tests of zegformer.viz.drawing with hand-made SegmentationResult objects (no model needed)."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
from PIL import Image

from zegformer.viz import drawing as V
from zegformer.inference.result import UNLABELED, SegmentationResult, class_statistics


def make_result(label_map: np.ndarray, names: list[str], seen=None, untrained=False,
                mode="decoupled") -> SegmentationResult:
    """A result whose probabilities put all mass on the given labels (-1 = unlabelled)."""
    k = len(names)
    h, w = label_map.shape
    probs = np.full((k, h, w), 0.01, np.float32)
    for i in range(k):
        probs[i][label_map == i] = 1.0
    lm, stats = class_statistics(probs, names, seen or [True] * k)
    lm[label_map == UNLABELED] = UNLABELED
    return SegmentationResult(names, probs, lm, stats, mode, {"total": 0.01}, "test", untrained)


@pytest.fixture
def scene():
    """A 40 x 60 image and a label map with three classes, one absent, and unlabelled pixels."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    labels = np.zeros((40, 60), np.int32)
    labels[:, 30:] = 1
    labels[30:, :10] = UNLABELED
    names = ["cat", "sofa", "window"]
    return image, make_result(labels, names, seen=[True, True, False])


def test_class_color_is_stable_and_case_insensitive():
    assert V.class_color("Cat") == V.class_color("cat") == V.class_color("  cat ")
    assert V.class_color("cat") == tuple(int(c) for c in V.class_colors(["dog", "cat"])[1])
    assert all(0 <= c <= 255 for c in V.class_color("traffic light"))


def test_palette_avoids_near_white_and_near_black():
    lum = V.PALETTE.astype(float) @ np.array([0.299, 0.587, 0.114])
    assert lum.min() > 40 and lum.max() < 235
    assert len({tuple(c) for c in V.PALETTE.tolist()}) == len(V.PALETTE)


def test_class_colors_unique_and_order_independent():
    names = [f"class {i}" for i in range(250)]  # more classes than palette entries
    colors = V.class_colors(names)
    assert colors.shape == (250, 3) and colors.dtype == np.uint8
    assert len({tuple(c) for c in colors.tolist()}) == 250
    reordered = V.class_colors(names[::-1])[::-1]
    np.testing.assert_array_equal(colors, reordered)


def test_class_colors_resolves_a_collision():
    home = V.class_color("cat")
    other = next(f"x{i}" for i in range(10000) if V.class_color(f"x{i}") == home)
    colors = V.class_colors(["cat", other])
    assert tuple(colors[0]) != tuple(colors[1])
    # the alphabetically first name keeps the shared colour
    first = 0 if "cat" < other else 1
    assert tuple(int(c) for c in colors[first]) == home


def test_colorize_paints_labels_and_leaves_unlabelled_black(scene):
    _, res = scene
    colors = V.class_colors(res.class_names)
    out = V.colorize(res.label_map, colors)
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], colors[0])
    np.testing.assert_array_equal(out[0, 59], colors[1])
    assert (out[res.label_map == UNLABELED] == 0).all()
    with pytest.raises(ValueError, match="label_map values"):
        V.colorize(np.full((2, 2), 3), colors)


def test_overlay_blends_and_keeps_unlabelled_pixels(scene):
    image, res = scene
    colors = V.class_colors(res.class_names)
    out = V.overlay(image, res.label_map, colors, alpha=0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    unl = res.label_map == UNLABELED
    np.testing.assert_array_equal(out[unl], image[unl])
    inside = (5, 5)  # far from any boundary, labelled 0
    want = np.round(0.5 * image[inside].astype(float) + 0.5 * colors[0]).astype(int)
    assert np.abs(out[inside].astype(int) - want).max() <= 1
    # a boundary pixel between class 0 and class 1 is drawn darker in class 1's colour
    np.testing.assert_array_equal(out[5, 30], np.round(0.7 * colors[1]).astype(np.uint8))
    plain = V.overlay(image, res.label_map, colors, alpha=0.0)
    np.testing.assert_array_equal(plain[:28, :29], image[:28, :29])  # labelled, off the boundary
    with pytest.raises(ValueError, match="alpha"):
        V.overlay(image, res.label_map, colors, alpha=1.5)


def test_overlay_accepts_pil_grayscale_and_rescales(scene):
    image, res = scene
    colors = V.class_colors(res.class_names)
    gray = Image.fromarray(image[..., 0])
    assert V.overlay(gray, res.label_map, colors).shape == (40, 60, 3)
    big = Image.fromarray(image).resize((120, 80))
    assert V.overlay(big, res.label_map, colors).shape == (40, 60, 3)
    with pytest.raises(ValueError, match="does not match"):
        V.overlay(image[:, :20], res.label_map, colors)


def test_legend_draws_rows_and_fits_width():
    names = ["cat", "a very long class name that will not fit in a narrow panel"]
    colors = V.class_colors(names)
    img = V.legend(names, colors, confidences=[0.87, 0.1], seen=[True, False])
    assert img.mode == "RGB" and img.height > 40
    arr = np.asarray(img)
    # both swatches appear with their colours
    for c in colors:
        assert (arr == c).all(axis=2).sum() > 20
    narrow = V.legend(names, colors, confidences=[0.87, 0.1], seen=[True, False], width=200)
    assert narrow.width == 200
    assert V.legend([], np.zeros((0, 3), np.uint8)).width > 0
    with pytest.raises(ValueError, match="names"):
        V.legend(["a"], V.class_colors(["a", "b"]))


def test_render_adds_legend_and_banner(scene):
    image, res = scene
    out = V.render(image, res)
    assert out.width > 60 and out.height >= 40
    res.untrained = True
    flagged = np.asarray(V.render(image, res))
    top = flagged[2, : flagged.shape[1] // 4]
    assert (top[:, 0] > 150).all() and (top[:, 1] < 80).all()  # red banner row
    assert flagged.shape[0] > np.asarray(out).shape[0]


def test_render_wide_image_puts_legend_below():
    labels = np.zeros((20, 200), np.int32)
    labels[:, 100:] = 1
    res = make_result(labels, ["sky", "sea"])
    out = V.render(np.zeros((20, 200, 3), np.uint8), res)
    assert out.width == 200 and out.height > 20


def test_disagreement_by_name(scene):
    image, a = scene
    b_labels = a.label_map.copy()
    b_labels[:10, :10] = 1
    b = make_result(b_labels, a.class_names, mode="pixel")
    diff = V.disagreement(a, b)
    assert diff.dtype == bool and diff.sum() == 100 and diff[:10, :10].all()
    # the same labels in another vocabulary order agree everywhere
    perm = make_result(np.where(a.label_map >= 0, 1 - a.label_map, -1).astype(np.int32),
                       ["sofa", "cat"])
    assert not V.disagreement(a, perm).any()
    pic = V.render_disagreement(image, a, b)
    assert pic.width == 60 and pic.height > 40
    with pytest.raises(ValueError, match="sizes"):
        V.disagreement(a, make_result(np.zeros((5, 5), np.int32), ["cat"]))


def test_render_lists_only_the_largest_of_many_classes():
    labels = (np.arange(300)[None, :].repeat(200, 0) * 80 // 300).astype(np.int32)
    labels[:, :40] = 0  # class 0 is the largest
    res = make_result(labels, [f"class {i}" for i in range(80)])
    out = V.render(np.full((200, 300, 3), 128, np.uint8), res)
    assert out.height == 200  # the legend is cut to the image's height, not 80 rows tall
    arr = np.asarray(out)[:, 300:]
    colors = V.class_colors(res.class_names)
    assert (arr == colors[0]).all(axis=2).sum() > 20  # the largest class is listed

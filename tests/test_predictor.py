"""Predictor contract on the tiny random-weights model: shapes, dtypes, statistics, input
formats, bad inputs, thresholds, JSON output, progress and the text cache."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from zegformer import ClassStat, ImageError, SegmentationResult, VocabularyError, \
    ZegFormerError
from zegformer.inference.image import load_image

IMAGE = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
NAMES = ["cat", "dog | puppy", "grass"]  # COCO-Stuff: cat and dog seen, grass unseen (novel)
MODES = ("decoupled", "pixel")


@pytest.fixture(scope="module")
def results(tiny_predictor):
    """One prediction per mode on IMAGE, shared by the structural checks."""
    return {mode: tiny_predictor.predict(IMAGE, ", ".join(NAMES), mode=mode) for mode in MODES}


def _same(a: SegmentationResult, b: SegmentationResult) -> None:
    assert a.class_names == b.class_names
    np.testing.assert_array_equal(a.probs, b.probs)
    np.testing.assert_array_equal(a.label_map, b.label_map)
    assert a.classes == b.classes


# ---------------------------------------------------------------- output structure


@pytest.mark.parametrize("mode", MODES)
def test_result_structure(results, mode):
    r = results[mode]
    k, (h, w) = len(NAMES), IMAGE.shape[:2]
    assert r.mode == mode and r.class_names == NAMES
    assert r.probs.shape == (k, h, w) and r.probs.dtype == np.float32
    assert np.isfinite(r.probs).all()
    assert r.label_map.shape == (h, w) and r.label_map.dtype == np.int32
    assert r.label_map.min() >= -1 and r.label_map.max() < k
    assert r.original_size == (h, w)
    assert r.untrained is True and r.device == "cpu"
    # With threshold 0 every pixel gets its argmax class.
    np.testing.assert_array_equal(r.label_map, r.probs.argmax(0))
    assert len(r.classes) == k and all(isinstance(c, ClassStat) for c in r.classes)
    assert [c.index for c in r.classes] == list(range(k))
    assert [c.name for c in r.classes] == NAMES
    assert [c.seen for c in r.classes] == [True, True, False]
    for c in r.classes:
        assert 0.0 <= c.confidence <= 1.0
        assert c.area_fraction == pytest.approx((r.label_map == c.index).mean())
        assert c.present == (c.area_fraction > 0)
    assert sum(c.area_fraction for c in r.classes) == pytest.approx(1.0)
    assert {"text", "total"} <= set(r.timings)


def test_pixel_mode_gives_probabilities(results):
    # Pixel mode is a softmax over the classes (no seen-class calibration in the dense CLIP path).
    probs = results["pixel"].probs
    assert probs.min() >= 0
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_areas_sum_to_the_labelled_fraction(tiny_predictor, mode):
    r = tiny_predictor.predict(IMAGE, NAMES, mode=mode, threshold=0.4)
    unlabelled = (r.label_map == -1).mean()
    assert sum(c.area_fraction for c in r.classes) == pytest.approx(1.0 - unlabelled)
    assert r.to_json()["unlabeled_fraction"] == pytest.approx(unlabelled)
    labelled = r.label_map >= 0
    np.testing.assert_array_equal(r.label_map[labelled], r.probs.argmax(0)[labelled])


# ---------------------------------------------------------------- equivalent inputs


@pytest.mark.parametrize("mode", MODES)
def test_string_and_list_vocabularies_agree(tiny_predictor, results, mode):
    _same(results[mode], tiny_predictor.predict(IMAGE, NAMES, mode=mode))
    _same(results[mode], tiny_predictor.predict(IMAGE, "cat\ndog|puppy\n grass ", mode=mode))


@pytest.mark.parametrize("mode", MODES)
def test_array_and_pil_agree(tiny_predictor, results, mode):
    _same(results[mode], tiny_predictor.predict(Image.fromarray(IMAGE), NAMES, mode=mode))


def test_image_file_path(tiny_predictor, results, tmp_path):
    path = tmp_path / "image.png"
    Image.fromarray(IMAGE).save(path)
    _same(results["decoupled"], tiny_predictor.predict(path, NAMES))
    _same(results["decoupled"], tiny_predictor.predict(str(path), NAMES))


GRAY = IMAGE[..., 1]
GRAY_RGB = np.repeat(GRAY[..., None], 3, axis=2)


@pytest.mark.parametrize("image, same_as", [
    (GRAY, GRAY_RGB),  # gray is repeated to three channels
    (GRAY[..., None], GRAY_RGB),  # H x W x 1
    (IMAGE.astype(np.uint16) * 257, IMAGE),  # 16 bit: v * 257 * 255 // 65535 = v
    (IMAGE / 255.0, IMAGE),  # float in [0, 1]: round(x * 255)
    (IMAGE.astype(np.float32) / 255, IMAGE),
    (np.dstack([IMAGE, np.full(IMAGE.shape[:2], 255, np.uint8)]), IMAGE),  # opaque alpha
    (np.dstack([IMAGE, np.zeros(IMAGE.shape[:2], np.uint8)]),
     np.full_like(IMAGE, 255)),  # transparent: white
], ids=["gray", "gray-1ch", "uint16", "float64", "float32", "rgba-opaque", "rgba-clear"])
def test_other_array_formats(tiny_predictor, image, same_as):
    _same(tiny_predictor.predict(same_as, NAMES), tiny_predictor.predict(image, NAMES))


def test_pil_16_bit_and_rgba(tiny_predictor):
    pil16 = Image.fromarray(GRAY.astype(np.uint16) * 257)
    assert pil16.mode == "I;16"
    _same(tiny_predictor.predict(GRAY_RGB, NAMES), tiny_predictor.predict(pil16, NAMES))
    rgba = Image.fromarray(np.dstack([IMAGE, np.full(IMAGE.shape[:2], 255, np.uint8)]), "RGBA")
    _same(tiny_predictor.predict(IMAGE, NAMES), tiny_predictor.predict(rgba, NAMES))


def test_documented_conversions():
    # Alpha composited on white: out = v * a/255 + 255 * (1 - a/255), rounded.
    # v = 0, a = 128: 255 * 127/255 = 127; v = 200, a = 128: 100.39 + 127 = 227.39 -> 227.
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 3] = 128
    rgba[1, 1, :3] = 200
    out = load_image(rgba)
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert out[0, 0].tolist() == [127, 127, 127] and out[1, 1].tolist() == [227, 227, 227]
    # 16 bit scaled by 255 / 65535 (floor): 65535 -> 255, 32768 -> 127 (127.5), 256 -> 0 (0.996).
    assert load_image(np.array([[65535, 32768], [256, 0]], np.uint16))[..., 0].tolist() == \
        [[255, 127], [0, 0]]
    # Float: 0.5 * 255 = 127.5 -> 128 (round half to even), 1.0 -> 255.
    assert load_image(np.array([[0.5, 1.0], [0.0, 0.2]]))[..., 0].tolist() == [[128, 255], [0, 51]]


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("classes", ["", [], " , ,", "cat, dog, Cat", ["sky", "sky"]])
def test_bad_vocabularies(tiny_predictor, classes):
    with pytest.raises(VocabularyError):
        tiny_predictor.predict(IMAGE, classes)


@pytest.mark.parametrize("image, message", [
    (np.zeros((32, 32), bool), "boolean"),
    (np.zeros((32, 32, 5), np.uint8), "shape"),
    (np.zeros((32, 32, 2), np.uint8), "shape"),
    (np.zeros((2, 32, 32, 3), np.uint8), "shape"),
    (np.zeros((1, 1, 3), np.uint8), "too small"),
    (np.zeros((1, 100, 3), np.uint8), "too small"),
    (np.zeros((2, 100, 3), np.uint8), "too elongated"),
    (np.zeros((32, 32, 3), np.int8), "unsupported image dtype"),
    (np.full((32, 32, 3), 1.5), r"\[0, 1\]"),
    (np.full((32, 32, 3), np.nan), r"\[0, 1\]"),
    ([[0, 1], [2, 3]], "expected an image"),
], ids=["bool", "5ch", "2ch", "4d", "1x1", "1x100", "2x100", "int8", "float>1", "nan", "list"])
def test_bad_images(tiny_predictor, image, message):
    with pytest.raises(ImageError, match=message):
        tiny_predictor.predict(image, NAMES)


def test_bad_image_files(tiny_predictor, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ImageError, match="not a readable image"):
        tiny_predictor.predict(text, NAMES)
    with pytest.raises(ImageError, match="not found"):
        tiny_predictor.predict(tmp_path / "missing.jpg", NAMES)
    with pytest.raises(ImageError, match="not found"):
        tiny_predictor.predict(tmp_path, NAMES)  # a folder


def test_huge_image_is_downscaled_to_max_side(tiny_predictor):
    # np.zeros is allocated lazily: cheap until PIL resizes it. 36 MP: under MAX_IMAGE_PIXELS.
    big = np.zeros((6000, 6000, 3), np.uint8)
    r = tiny_predictor.predict(big, "cat, dog")
    assert max(r.label_map.shape) == tiny_predictor.max_side == 2048
    assert r.label_map.shape == r.probs.shape[1:] == (2048, 2048)
    assert r.original_size == (6000, 6000)
    assert r.to_json()["original_size"] == [6000, 6000]


def test_wide_image_keeps_its_aspect_when_downscaled(tiny_predictor):
    r = tiny_predictor.predict(np.zeros((1000, 4000, 3), np.uint8), "cat")
    assert r.label_map.shape == (512, 2048)  # 1000 * 2048 / 4000 = 512


# ---------------------------------------------------------------- options


def test_threshold_one_leaves_everything_unlabelled(tiny_predictor):
    # Two novel classes (no calibration): each pixel's best normalised score is below 1.
    r = tiny_predictor.predict(IMAGE, "grass, tree", threshold=1.0)
    assert (r.label_map == -1).mean() >= 0.99
    assert sum(c.area_fraction for c in r.classes) == pytest.approx(
        1.0 - (r.label_map == -1).mean())


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan")])
def test_threshold_out_of_range(tiny_predictor, threshold):
    with pytest.raises(ZegFormerError, match="threshold"):
        tiny_predictor.predict(IMAGE, NAMES, threshold=threshold)


def test_unknown_mode(tiny_predictor):
    with pytest.raises(ZegFormerError, match="mode must be one of"):
        tiny_predictor.predict(IMAGE, NAMES, mode="bogus")


@pytest.mark.parametrize("mode", MODES)
def test_to_json_is_strict_json(results, mode):
    r = results[mode]
    data = json.loads(json.dumps(r.to_json(), allow_nan=False))
    assert data["mode"] == mode and data["untrained"] is True
    assert data["image_size"] == {"height": 48, "width": 64}
    assert [c["name"] for c in data["classes"]] == NAMES
    assert [c["split"] for c in data["classes"]] == ["seen", "seen", "novel"]
    assert data["unlabeled_fraction"] == 0.0


@pytest.mark.parametrize("mode", MODES)
def test_progress_is_reported_in_order(tiny_predictor, mode):
    calls: list[tuple[float, str]] = []
    tiny_predictor.predict(IMAGE, NAMES, mode=mode, progress=lambda f, d: calls.append((f, d)))
    fractions = [f for f, _ in calls]
    assert len(fractions) >= 3
    assert all(b > a for a, b in zip(fractions, fractions[1:]))
    assert 0 < fractions[0] and fractions[-1] == 1.0
    assert all(isinstance(d, str) and d for _, d in calls)


def test_text_embeddings_are_cached_per_vocabulary(tiny_predictor):
    text = tiny_predictor.text
    tiny_predictor.predict(IMAGE, "zebra, giraffe")
    hits, misses = text.hits, text.misses
    tiny_predictor.predict(IMAGE, "zebra, giraffe")
    assert text.misses == misses  # nothing encoded again
    assert text.hits > hits


# ---------------------------------------------------------------- per-pixel baseline (tiny)
def test_tiny_baseline_pixel_mode(tiny_baseline):
    assert tiny_baseline.kind == "per_pixel_baseline" and tiny_baseline.modes == ("pixel",)
    r = tiny_baseline.predict(IMAGE, NAMES, mode="pixel")
    assert r.probs.shape == (3, 48, 64) and r.probs.dtype == np.float32
    # softmax over classes, then 0.1 subtracted from the two seen classes: sums are 1 - 0.2.
    np.testing.assert_allclose(r.probs.sum(0), 0.8, atol=1e-5)
    with pytest.raises(ZegFormerError, match="only mode='pixel'"):
        tiny_baseline.predict(IMAGE, NAMES, mode="decoupled")

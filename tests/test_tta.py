"""Test-time augmentation (TEST.AUG) on the tiny random model: the official
`SemanticSegmentorWithTTA` average, the pass order, the resize chain, the config switch, the
pass count, memory, and the evaluation CLI's --tta."""
from __future__ import annotations

import copy
import json
import weakref
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from zegformer import ConfigError, ZegFormerError, load_config, load_random_predictor
from zegformer.evaluation import synthetic
from zegformer.evaluation.cli import main as evaluate_main
from zegformer.evaluation.runner import load_prediction
from zegformer.inference import modes, tta
from zegformer.inference.image import load_image
from zegformer.loading.settings import TTASettings, settings_from_config

NAMES = ["cat", "dog | puppy", "grass"]  # cat, dog seen (calibrated), grass novel
SPEC = TTASettings(min_sizes=(80, 240), max_size=1120, flip=True)  # 4 passes, small and quick
RNG = np.random.default_rng(3)


def _image(h: int, w: int) -> np.ndarray:
    """A smooth random image (so resizing it is not dominated by pixel noise)."""
    small = RNG.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return np.array(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))


def _pil_resize(rgb: np.ndarray, h: int, w: int) -> np.ndarray:
    return np.array(Image.fromarray(rgb).resize((w, h), Image.Resampling.BILINEAR))


def _short_edge(h: int, w: int, short: int, cap: int) -> tuple[int, int]:
    """ResizeShortestEdge written out again (detectron2's int(x + 0.5) rounding)."""
    s = short / min(h, w)
    nh, nw = (short, s * w) if h < w else (s * h, short)
    if max(nh, nw) > cap:
        nh, nw = nh * cap / max(nh, nw), nw * cap / max(nh, nw)
    return int(nh + 0.5), int(nw + 0.5)


# ---------------------------------------------------------------- passes and config


def test_passes_in_official_order():
    spec = TTASettings(min_sizes=(320, 480, 640), max_size=4480, flip=True)
    passes = tta.tta_passes(spec)
    assert [(p.min_size, p.flip) for p in passes] == [
        (320, False), (320, True), (480, False), (480, True), (640, False), (640, True)]
    assert all(p.max_size == 4480 for p in passes) and spec.n_passes == 6
    no_flip = replace(spec, flip=False)
    assert [(p.min_size, p.flip) for p in tta.tta_passes(no_flip)] == [
        (320, False), (480, False), (640, False)]
    assert no_flip.n_passes == 3


@pytest.mark.parametrize("config, sizes, max_size", [
    ("zegformer_R101_bs32_60k_vit16_coco-stuff_gzss_eval", (320, 480, 640, 800, 960, 1120), 4480),
    ("zegformer_R101_bs32_10k_vit16_voc_gzss_eval", (256, 384, 512, 640, 768, 896), 3584),
    # no TEST.AUG block in the ADE20K-Full base: detectron2's defaults
    ("zegformer_R50_bs32_60k_vit16_ade20k-full-847-freq_gzss_eval",
     (400, 500, 600, 700, 800, 900, 1000, 1100, 1200), 4000),
])
def test_config_blocks(config, sizes, max_size):
    aug = settings_from_config(load_config(config)).tta
    assert aug == TTASettings(enabled=False, min_sizes=sizes, max_size=max_size, flip=True)
    on = settings_from_config(load_config(config, ["TEST.AUG.ENABLED", "True",
                                                   "TEST.AUG.FLIP", "False"])).tta
    assert on.enabled and not on.flip and on.n_passes == len(sizes)


@pytest.mark.parametrize("opts, message", [
    (["TEST.AUG.MIN_SIZES", "[]"], "MIN_SIZES must be a non-empty list"),
    (["TEST.AUG.MIN_SIZES", "[320, -1]"], "MIN_SIZES must be a non-empty list"),
    (["TEST.AUG.MAX_SIZE", "0"], "MAX_SIZE must be a positive integer"),
    (["TEST.AUG.ENABLED", "yes"], "TEST.AUG.ENABLED expects True or False"),
])
def test_bad_config_values(opts, message):
    with pytest.raises(ConfigError, match=message):
        settings_from_config(load_config("tiny", opts))


def test_bad_tta_argument(tiny_predictor):
    with pytest.raises(ZegFormerError, match="tta must be True, False, None or a TTASettings"):
        tiny_predictor.predict(_image(32, 40), NAMES, tta="yes")


# ---------------------------------------------------------------- the average, exactly


def _reference_decoupled_like(predictor, rgb, mode, spec):
    """Mean of plain single-pass predictions, one per size (MIN_SIZE_TEST set to that size) and
    per flip (the flipped image predicted, its scores flipped back). `rgb` is already at the
    model's MIN_SIZE_TEST, so the test loader's resize before the augmentations is the identity.
    """
    total = 0.0
    for size in spec.min_sizes:
        single = copy.copy(predictor)
        single.settings = replace(predictor.settings, min_size_test=size,
                                  max_size_test=spec.max_size)
        total = total + single.scores(rgb, NAMES, mode, tta=False)
        if spec.flip:
            flipped = np.ascontiguousarray(rgb[:, ::-1])
            total = total + single.scores(flipped, NAMES, mode, tta=False)[:, :, ::-1]
    return total / spec.n_passes


def _check_flip_commutes_with_resize(rgb, sizes):
    """Premise of the references: PIL's bilinear resize of a flipped image is the flipped resize
    (the official resizes first, then flips; the references flip, then let the model resize)."""
    h, w = rgb.shape[:2]
    for s in sizes:
        nh, nw = _short_edge(h, w, s, 10**6)
        np.testing.assert_array_equal(_pil_resize(rgb, nh, nw)[:, ::-1],
                                      _pil_resize(np.ascontiguousarray(rgb[:, ::-1]), nh, nw))


@pytest.mark.parametrize("which", ["decoupled", "baseline"])
def test_tta_is_the_mean_of_single_passes(tiny_predictor, tiny_baseline, which):
    predictor, mode = (tiny_predictor, "decoupled") if which == "decoupled" else \
        (tiny_baseline, "pixel")
    assert predictor.settings.min_size_test == 160
    rgb = _image(160, 200)
    _check_flip_commutes_with_resize(rgb, SPEC.min_sizes)
    got = predictor.scores(rgb, NAMES, mode, tta=SPEC)
    want = _reference_decoupled_like(predictor, rgb, mode, SPEC)
    assert got.shape == (3, 160, 200) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    # the passes really differ (otherwise the mean would prove nothing) ...
    plain = predictor.scores(rgb, NAMES, mode, tta=False)
    assert np.abs(got - plain).max() > 1e-3
    # ... and the seen-class calibration is inside each pass, so it survives the mean: the
    # baseline's softmax sums to 1 per pixel, minus 0.1 for each of the two seen classes
    if which == "baseline":
        np.testing.assert_allclose(got.sum(0), 0.8, atol=1e-5)


def test_tta_dense_clip_is_the_mean_of_single_passes(tiny_predictor, monkeypatch):
    """Pixel mode with a ZegFormer model (dense CLIP, normally short side 448): the TTA sizes
    scaled by 448 / MIN_SIZE_TEST, here 80 -> 224 and 240 -> 672 (cap 1120 -> 3136)."""
    rgb = _image(448, 560)
    scale = modes.DENSE_CLIP_SHORT_SIDE / tiny_predictor.settings.min_size_test  # 2.8
    sizes = [int(s * scale + 0.5) for s in SPEC.min_sizes]
    assert sizes == [224, 672]
    _check_flip_commutes_with_resize(rgb, sizes)
    got = tiny_predictor.scores(rgb, NAMES, "pixel", tta=SPEC)
    total = 0.0
    for size in sizes:
        monkeypatch.setattr(modes, "DENSE_CLIP_SHORT_SIDE", size)
        monkeypatch.setattr(modes, "DENSE_CLIP_MAX_SIDE", int(SPEC.max_size * scale + 0.5))
        total = total + tiny_predictor.scores(rgb, NAMES, "pixel", tta=False)
        flipped = np.ascontiguousarray(rgb[:, ::-1])
        total = total + tiny_predictor.scores(flipped, NAMES, "pixel", tta=False)[:, :, ::-1]
    monkeypatch.undo()
    np.testing.assert_allclose(got, total / 4, rtol=0, atol=1e-5)
    np.testing.assert_allclose(got.sum(0), 1.0, atol=1e-5)  # a mean of softmaxes
    assert np.abs(got - tiny_predictor.scores(rgb, NAMES, "pixel")).max() > 1e-3


# ---------------------------------------------------------------- what the network sees


def test_augmented_images_start_from_the_test_resized_image(tiny_predictor):
    """As detectron2's DatasetMapperTTA: each size resizes the image the test loader already
    resized to MIN_SIZE_TEST (not the original), then flips; passes in order s0, s0 flipped, ..."""
    rgb = _image(100, 130)  # not at MIN_SIZE_TEST (160): the loader's resize matters
    s = tiny_predictor.settings
    seen: list[torch.Tensor] = []
    hook = tiny_predictor.model.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].detach().clone()))
    try:
        tiny_predictor.scores(rgb, NAMES, "decoupled", tta=SPEC)
    finally:
        hook.remove()
    base = _pil_resize(rgb, *_short_edge(100, 130, s.min_size_test, s.max_size_test))  # 160x208
    mean = torch.tensor(s.pixel_mean).view(3, 1, 1)
    std = torch.tensor(s.pixel_std).view(3, 1, 1)
    want = []
    for size in SPEC.min_sizes:
        img = _pil_resize(base, *_short_edge(*base.shape[:2], size, SPEC.max_size))
        for flip in (False, True):
            x = np.ascontiguousarray(img[:, ::-1]) if flip else img
            x = (torch.from_numpy(x).permute(2, 0, 1).float() - mean) / std
            h, w = x.shape[-2:]
            want.append(torch.nn.functional.pad(x, (0, -w % 32, 0, -h % 32))[None])
    assert [tuple(t.shape) for t in seen] == [tuple(t.shape) for t in want]
    for a, b in zip(seen, want):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    # resizing the original directly would have given the network another image
    direct = _pil_resize(rgb, *_short_edge(100, 130, 240, SPEC.max_size))
    assert direct.shape == img.shape and not np.array_equal(direct, img)


# ---------------------------------------------------------------- API, switch, count, memory


@pytest.mark.parametrize("mode", ["decoupled", "pixel"])
def test_tta_false_is_the_plain_prediction(tiny_predictor, mode):
    rgb = _image(48, 64)
    plain = tiny_predictor.predict(rgb, NAMES, mode)
    off = tiny_predictor.predict(rgb, NAMES, mode, tta=False)
    np.testing.assert_array_equal(plain.probs, off.probs)
    np.testing.assert_array_equal(plain.label_map, off.label_map)
    assert plain.tta_passes == off.tta_passes == 1
    assert plain.to_json()["tta_passes"] == 1
    np.testing.assert_array_equal(tiny_predictor.scores(rgb, NAMES, mode, tta=False), plain.probs)


def test_config_switch_turns_tta_on_and_counts_passes(tiny_predictor):
    on = load_random_predictor(device="cpu", opts=[
        "TEST.AUG.ENABLED", "True", "TEST.AUG.MIN_SIZES", "[80, 160]"])
    assert on.settings.tta.enabled and on.test_augmentation().n_passes == 4
    rgb = _image(48, 64)
    steps: list[tuple[float, str]] = []
    default = on.predict(rgb, NAMES, progress=lambda f, d: steps.append((f, d)))
    assert default.tta_passes == 4 and default.to_json()["tta_passes"] == 4
    explicit = tiny_predictor.predict(rgb, NAMES, tta=on.settings.tta)  # same seed: same weights
    np.testing.assert_array_equal(default.probs, explicit.probs)
    assert explicit.tta_passes == 4
    fractions = [f for f, _ in steps]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("TTA pass 4/4 (160, flipped)" in d for _, d in steps)
    off = on.predict(rgb, NAMES, tta=False)  # an explicit False wins over the config
    np.testing.assert_array_equal(off.probs, tiny_predictor.predict(rgb, NAMES).probs)
    assert off.tta_passes == 1
    assert tiny_predictor.test_augmentation(True).n_passes == 12  # tiny.yaml: 6 sizes x 2
    assert tiny_predictor.test_augmentation(None) is None  # TEST.AUG.ENABLED False


def test_passes_are_summed_not_stored(tiny_predictor, monkeypatch):
    """When a pass runs, the maps of every earlier pass are already freed (running sum)."""
    real = modes.SCORING_MODES["decoupled"]
    returned: list[weakref.ref] = []
    alive_at_call: list[int] = []

    def spy(inputs):  # CPython frees a tensor as soon as its last reference goes
        alive_at_call.append(sum(r() is not None for r in returned))
        out = real.fn(inputs)
        returned.append(weakref.ref(out))
        return out

    monkeypatch.setitem(modes.SCORING_MODES, "decoupled", replace(real, fn=spy))
    tiny_predictor.scores(_image(48, 64), NAMES, "decoupled", tta=SPEC)
    assert len(alive_at_call) == SPEC.n_passes
    assert alive_at_call == [0] * SPEC.n_passes


# ---------------------------------------------------------------- evaluation CLI


def test_eval_cli_tta(tmp_path, tiny_predictor):
    imgs = synthetic.write_dataset(tmp_path / "data", "folder", 1)
    out = tmp_path / "run"
    args = ["--dataset", "folder", "--root", str(tmp_path / "data"), "--output", str(out),
            "--random-weights", "--no-progress", "--no-plots"]
    assert evaluate_main(args + ["--tta"]) == 0
    summary = json.loads((out / "small_target/summary.json").read_text())
    assert summary["meta"]["tta_passes"] == 12
    assert json.loads((out / "predictions/_run.json").read_text())["tta"] is True
    names, _ = synthetic.layout_classes("folder")
    stem = imgs[0].image_id
    rgb = load_image(next((tmp_path / "data/images").glob(f"{stem}.*")))
    want = tiny_predictor.scores(rgb, list(names), "decoupled", tta=True).argmax(0)
    np.testing.assert_array_equal(load_prediction(out / f"predictions/{stem}.png", len(names)),
                                  want)
    assert evaluate_main(args) == 1  # a TTA predictions folder is not resumed without --tta


def test_evaluation_follows_the_config_only_when_asked(tmp_path):
    """EvalOptions.tta: None lets TEST.AUG.ENABLED decide (the CLI without --tta); the default
    False is one pass (the training loop's periodic evaluation, as the official one)."""
    from zegformer.evaluation.runner import EvalOptions, run_evaluation

    synthetic.write_dataset(tmp_path / "data", "folder", 1)
    on = load_random_predictor(device="cpu", opts=[
        "TEST.AUG.ENABLED", "True", "TEST.AUG.MIN_SIZES", "[80]"])
    common = dict(dataset="folder", root=str(tmp_path / "data"), progress=False, plots=False)
    by_config = run_evaluation(EvalOptions(output=str(tmp_path / "a"), tta=None, **common), on)
    plain = run_evaluation(EvalOptions(output=str(tmp_path / "b"), **common), on)
    assert by_config["meta"]["tta_passes"] == 2 and "tta_passes" not in plain["meta"]


def test_custom_settings_are_checked():
    with pytest.raises(ConfigError, match="positive sizes"):
        TTASettings(min_sizes=())
    with pytest.raises(ConfigError, match="positive sizes"):
        TTASettings(min_sizes=(320,), max_size=0)

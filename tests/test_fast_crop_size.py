"""The fast path's smaller CLIP crops (`FastSettings.crop_size`): the resized image tower, its
position embedding, the settings' checks, and that predict makes and encodes crops of that size."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zegformer import load_random_predictor
from zegformer.errors import ZegFormerError
from zegformer.inference import fast as F
from zegformer.inference import scoring

NAMES = ["sky", "grass", "cat", "dog", "tree"]


@pytest.fixture(scope="module")
def predictor():
    return load_random_predictor(device="cpu", seed=2)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (96, 128, 3), dtype=np.uint8)


def crops(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_resized_tower_at_the_native_size_is_the_tower(predictor):
    visual = predictor.clip.clip.visual
    native = predictor.clip.image_size
    x = crops(3, native)
    with torch.inference_mode():
        ref = predictor.clip.encode_image(x).float()
        got = F.resized_image_tower(visual, native)(x).float()
        via_towers = F.FastImageTowers(predictor.clip.clip).encoder(native, False)(x).float()
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(via_towers, ref, atol=1e-6, rtol=0)


def test_position_embedding_keeps_the_class_token_and_resizes_the_grid():
    g = torch.Generator().manual_seed(0)
    n, c = 14, 8
    ramp = torch.linspace(-1, 1, n)
    grid = (ramp[:, None, None] + 2 * ramp[None, :, None]).expand(n, n, c)  # linear in y and x
    pe = torch.cat([torch.randn(1, c, generator=g), grid.reshape(n * n, c)])
    small = F.resized_position_embedding(pe, 7)
    assert small.shape == (1 + 49, c)
    assert torch.equal(small[0], pe[0])
    # bicubic (align_corners False) of a linear ramp stays a ramp between the same ends, up to
    # the border overshoot; the middle of the grid is near the middle of the original one
    rows = small[1:].reshape(7, 7, c)
    assert torch.isfinite(rows).all()
    assert abs(float(rows[3, 3, 0])) < 0.05
    assert float(rows[6, 6, 0]) > float(rows[0, 0, 0]) + 2.0
    assert F.resized_position_embedding(pe, n) is pe
    with pytest.raises(ZegFormerError, match="square grid"):
        F.resized_position_embedding(pe[:-1], 7)


@pytest.mark.parametrize("size", [160, 112, 48])
@pytest.mark.parametrize("quantize", [True, False])
def test_smaller_towers_give_finite_features_of_the_same_width(predictor, size, quantize):
    towers = F.FastImageTowers(predictor.clip.clip)
    with torch.inference_mode():
        out = towers.encoder(size, quantize)(crops(2, size, seed=size))
        ref = predictor.clip.encode_image(crops(2, predictor.clip.image_size)).float()
    assert out.shape == (2, ref.shape[1])
    assert torch.isfinite(out).all()
    assert towers.tower(size, quantize) is towers.tower(size, quantize)  # built once


def test_crop_size_must_fit_the_patch_grid(predictor):
    with pytest.raises(ZegFormerError, match="multiple of CLIP's patch size 16"):
        F.resized_image_tower(predictor.clip.clip.visual, 100)
    with pytest.raises(ZegFormerError, match="multiple of CLIP's patch size"):
        F.resized_image_tower(predictor.clip.clip.visual, 8)


@pytest.mark.parametrize("bad", [0, -16, 1.5, True, "112"])
def test_fast_settings_refuse_bad_crop_sizes(bad):
    with pytest.raises(ZegFormerError, match="crop_size"):
        F.FastSettings(crop_size=bad)


def test_fast_settings_accept_sizes_and_none():
    assert F.FastSettings(crop_size=None).crop_size is None
    assert F.FastSettings(crop_size=112).crop_size == 112
    assert F.fast_crop_size(F.FastSettings(crop_size=None), 224) == 224
    assert F.fast_crop_size(F.FastSettings(crop_size=160), 224) == 160


def test_predict_makes_and_encodes_crops_of_the_fast_size(predictor, image, monkeypatch):
    sizes: list[int] = []
    shapes: list[tuple] = []
    original = scoring.clip_segment_logits

    def spy(img, masks, encode, *a, **kw):
        sizes.append(kw["size"])

        def recording(x):
            shapes.append(tuple(x.shape[-2:]))
            return encode(x)
        return original(img, masks, recording, *a, **kw)

    monkeypatch.setattr(scoring, "clip_segment_logits", spy)
    settings = F.FastSettings(max_crops=3, crop_size=112)
    res = predictor.predict(image, NAMES, fast=settings)
    assert res.fast is True and np.isfinite(res.probs).all()
    assert sizes == [112] and shapes and set(shapes) == {(112, 112)}
    assert 0 < predictor.crop_stats["encoded"] <= 3
    exact = predictor.predict(image, NAMES)
    assert sizes[-1] == predictor.clip.image_size and exact.fast is False


def test_int8_and_fp32_features_of_the_same_crops_do_not_mix(predictor, image):
    """Both towers at 112 see byte-identical crops; each keeps its own features."""
    predictor.fast_crop_features.clear()
    a = predictor.predict(image, NAMES, fast=F.FastSettings(crop_size=112, quantize=True))
    b = predictor.predict(image, NAMES, fast=F.FastSettings(crop_size=112, quantize=False))
    assert predictor.crop_stats["cached"] == 0  # the int8 features were not reused
    predictor.fast_crop_features.clear()
    b2 = predictor.predict(image, NAMES, fast=F.FastSettings(crop_size=112, quantize=False))
    np.testing.assert_allclose(b.probs, b2.probs, atol=1e-6, rtol=0)
    assert not np.array_equal(a.probs, b.probs)


def test_crop_size_224_without_other_approximations_is_the_exact_path(predictor, image):
    """crop_size 224 given explicitly goes through the same tower: the exact numbers (1e-5)."""
    exact = predictor.predict(image, NAMES)
    predictor.crop_features.clear()
    full = predictor.predict(image, NAMES, fast=F.FastSettings(
        max_crops=1000, mass_fraction=1.0, quantize=False, crop_size=224, share_iou=None))
    np.testing.assert_allclose(full.probs, exact.probs, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(full.label_map, exact.label_map)


def test_default_fast_settings_use_smaller_crops():
    assert F.DEFAULT_FAST.crop_size == 192 and F.DEFAULT_FAST.quantize is False
    assert F.DEFAULT_FAST.share_iou == 0.9

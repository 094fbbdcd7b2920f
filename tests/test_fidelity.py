"""Fidelity: with the reference's rule-made weights, our model reproduces the official output.

Golden: the official ZegFormer (COCO-Stuff R101 training config, CLIP in fp32) on a 480x640
image with classes person, dog, grass, sky, car (tests/data/golden_*.npz, trimmed: sem_seg at
every 4th row and column, the argmax in full).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fake_weights import KEYS_DIR, save_clip_file, save_zegformer_checkpoint

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden_coco-stuff_R101_train_salt-pub.npz"
CONFIG = "zegformer_R101_bs32_60k_vit16_coco-stuff"


@pytest.fixture(autouse=True)
def reference_threads():
    """Run these tests with 2 threads, as the reference run did.

    The golden is float32 and carries float32 rounding (a float64 run differs from it by ~9e-4,
    with values up to 50). Matching it to 1e-4 therefore means taking the same conv kernels:
    with 2 or 4 threads we match to 6e-5 (pred_masks bit for bit); with 1 thread oneDNN takes its
    single-thread path and rounds differently (3.7e-4). Measured on this project's CI machine.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def golden():
    meta = json.loads((DATA / "golden_coco-stuff_R101_train_salt-pub.json").read_text())
    return dict(np.load(GOLDEN)), meta


@pytest.fixture(scope="module")
def official_predictor(tmp_path_factory, golden):
    from zegformer import load_predictor

    _, meta = golden
    tmp = tmp_path_factory.mktemp("weights")
    ckpt = save_zegformer_checkpoint(KEYS_DIR / meta["keys"], tmp / "zegformer.pth", meta["salt"])
    clip = save_clip_file(tmp / "clip_vit_b16.pt", meta["salt"])
    return load_predictor(CONFIG, ckpt, clip_weights=clip, device="cpu")


def test_text_features_match_official(official_predictor, golden):
    g, _ = golden
    names = [str(n) for n in g["class_names"]]
    ours = official_predictor.text(names, official_predictor.settings.prompt_ensemble_type)
    np.testing.assert_allclose(ours.numpy(), g["text_features_test"], atol=1e-5)


def test_decoupled_scores_match_official_sem_seg(official_predictor, golden):
    g, meta = golden
    names = [str(n) for n in g["class_names"]]
    assert names == meta["classes"]
    result = official_predictor.predict(g["image_rgb"], names, mode="decoupled")
    k, h, w = g["sem_seg_shape"]
    assert result.probs.shape == (k, h, w) and result.probs.dtype == np.float32
    diff = np.abs(result.probs[:, ::4, ::4] - g["sem_seg_every4"]).max()
    assert diff < 1e-4, f"sem_seg differs from the official output by {diff}"
    assert np.array_equal(result.probs.argmax(0), g["argmax"])
    assert np.array_equal(result.label_map, g["argmax"])
    # person, dog, car are seen COCO-Stuff classes; grass is one of the 15 unseen; sky is not a
    # COCO-Stuff name ("sky-other"), hence novel.
    assert [c.seen for c in result.classes] == [True, True, False, False, True]


def test_segment_logits_match_official(official_predictor, golden):
    """The segment classifier's logits for the golden text features (before any scoring)."""
    from zegformer.inference.preprocess import preprocess

    g, _ = golden
    p = official_predictor
    s = p.settings
    x = preprocess(g["image_rgb"], short=640, max_size=2560, mean=s.pixel_mean, std=s.pixel_std,
                   divisor=32).image
    with torch.inference_mode():
        logits = p.model(x, torch.from_numpy(g["text_features_test"])).pred_logits[0]
    np.testing.assert_allclose(logits.numpy(), g["pred_logits"], atol=1e-4)

"""The fast path (`predict(fast=True)`): flagged everywhere, exact where it provably must be, its
selection and fallback, the CLI flags and the evaluation run file; and the background warming
of the preset vocabularies (`faces.startup.warm_presets`)."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from zegformer import load_random_predictor
from zegformer.errors import ZegFormerError
from zegformer.evaluation import synthetic
from zegformer.evaluation.cli import main as evaluate_main
from zegformer.evaluation.runner import RUN_FILE
from zegformer.faces import demo, startup
from zegformer.inference import fast as F
from zegformer.inference import scoring
from zegformer.viz.export import load_label_map

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["sky", "grass", "cat", "dog", "tree"]
NOT_QUANTISED_ALL = F.FastSettings(max_crops=1000, mass_fraction=1.0, quantize=False,
                                   crop_size=None, share_iou=None)


@pytest.fixture(scope="module")
def predictor():
    """A tiny random predictor of its own (this file clears its crop caches)."""
    return load_random_predictor(device="cpu", seed=1)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)


def test_fast_result_is_flagged_and_shaped_like_the_exact_one(predictor, image):
    exact = predictor.predict(image, NAMES)
    quick = predictor.predict(image, NAMES, fast=True)
    assert quick.fast is True and exact.fast is False
    assert quick.to_json()["fast"] is True and exact.to_json()["fast"] is False
    assert quick.class_names == exact.class_names
    assert quick.probs.shape == exact.probs.shape
    assert quick.label_map.shape == exact.label_map.shape
    assert [c.name for c in quick.classes] == NAMES
    assert predictor.crop_stats["encoded"] <= F.DEFAULT_FAST.max_crops


def test_pixel_mode_is_exact_and_not_flagged(predictor, image):
    """The pixel mode has no crops: fast changes nothing there, and the result says so."""
    a = predictor.predict(image, NAMES, mode="pixel")
    b = predictor.predict(image, NAMES, mode="pixel", fast=True)
    assert b.fast is False
    np.testing.assert_array_equal(a.probs, b.probs)


def test_covering_every_segment_equals_the_exact_path(predictor, image):
    """max_crops >= Q, mass_fraction 1 and no quantisation: exactly the exact path (1e-5)."""
    exact = predictor.predict(image, NAMES)
    predictor.crop_features.clear()
    full = predictor.predict(image, NAMES, fast=NOT_QUANTISED_ALL)
    assert full.fast is True
    np.testing.assert_allclose(full.probs, exact.probs, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(full.label_map, exact.label_map)


def test_no_crop_at_all_uses_the_segment_logits_for_clip(predictor, image, monkeypatch):
    """max_crops 0: no crop encoded; every segment that is not provably negligible gets its own
    segment logits as CLIP logits (CLIP agrees with the segment classifier)."""
    seen: dict = {}
    original = scoring.decoupled_segment_probs

    def spy(seg_logits, seen_mask, **kw):
        seen.update(seg=seg_logits.clone(), clip=kw["clip_logits"].clone())
        return original(seg_logits, seen_mask, **kw)

    monkeypatch.setattr(scoring, "decoupled_segment_probs", spy)
    predictor.scores(image, NAMES, fast=F.FastSettings(max_crops=0, quantize=False,
                                                        crop_size=None))
    stats = predictor.crop_stats
    assert stats["encoded"] == 0 and stats["fallback"] + stats["negligible"] == 10
    rows = torch.isfinite(seen["clip"]).all(dim=1)
    assert int(rows.sum()) == stats["fallback"] > 0
    torch.testing.assert_close(seen["clip"][rows], seen["seg"][rows, :-1])


def test_fallback_logits_give_the_segment_classifier_probabilities():
    g = torch.Generator().manual_seed(0)
    seg = torch.randn(6, 5, generator=g) * 3  # Q = 6, K = 4 + no object
    clip = torch.full((6, 4), float("-inf"))
    clip[0] = torch.randn(4, generator=g)
    encoded = torch.tensor([True, False, False, False, False, False])
    negligible = torch.tensor([False, False, False, False, False, True])
    out = F.fallback_clip_logits(clip, seg, encoded, negligible)
    assert torch.equal(out[0], clip[0]) and torch.isinf(out[5]).all()
    with_bg = torch.cat([out, seg[:, -1:]], dim=1)
    torch.testing.assert_close(scoring.segment_class_probs(with_bg)[1:5],
                               scoring.segment_class_probs(seg)[1:5])


def test_selection_by_mass_fraction_groups_and_cap():
    mass = torch.tensor([5.0, 1.0, 3.0, 0.5, 0.5, 0.0], dtype=torch.float64)
    every = torch.ones(6, dtype=torch.bool)
    pick = F.select_segments(mass, every, F.FastSettings(max_crops=10, mass_fraction=0.8))
    assert pick.tolist() == [True, False, True, False, False, False]  # 8 of 10 = 0.8
    pick = F.select_segments(mass, every, F.FastSettings(max_crops=1, mass_fraction=0.99))
    assert pick.tolist() == [True, False, False, False, False, False]
    pick = F.select_segments(mass, every, F.FastSettings(max_crops=10, mass_fraction=1.0))
    assert pick.all()
    not_all = torch.tensor([False, True, True, True, True, True])
    pick = F.select_segments(mass, not_all, F.FastSettings(max_crops=1, mass_fraction=0.5))
    assert pick.tolist() == [False, False, True, False, False, False]
    # 3 and 4 share a crop: together (1.0) they weigh as much as segment 1, one crop for both
    groups = torch.tensor([0, 1, 2, 3, 3, 4])
    pick = F.select_segments(mass, every, F.FastSettings(max_crops=3, mass_fraction=0.99),
                             groups)
    assert pick.tolist() == [True, True, True, False, False, False] or \
        pick.tolist() == [True, False, True, True, True, False]
    assert int(pick.sum()) in (3, 4)


def test_mask_groups_put_equal_binary_masks_together():
    m = torch.full((4, 8, 8), -5.0)
    m[1, 2:4, 2:4] = 5.0
    m[2, 2:4, 2:4] = 1.0  # another soft mask, the same binary one
    m[3, 0, 0] = 5.0
    ids = F.mask_groups(m).tolist()
    assert ids[1] == ids[2] and len({ids[0], ids[1], ids[3]}) == 3


def test_bad_fast_options_are_one_line_errors(predictor, image):
    with pytest.raises(ZegFormerError, match="exclude each other"):
        predictor.predict(image, NAMES, plain=True, fast=True)
    with pytest.raises(ZegFormerError, match="fast must be"):
        predictor.predict(image, NAMES, fast="yes")
    with pytest.raises(ZegFormerError, match="mass_fraction"):
        F.FastSettings(mass_fraction=1.5)


def test_quantised_tower_stays_close_to_fp32(predictor):
    crops = torch.randn(3, 3, predictor.clip.image_size, predictor.clip.image_size,
                        generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = predictor.clip.encode_image(crops).float()
        got = predictor.fast_towers(crops)
    assert got.shape == ref.shape
    cos = torch.nn.functional.cosine_similarity(ref, got)
    assert (cos > 0.98).all(), cos


# ----------------------------------------------------------------------------- the CLIs
def test_demo_fast_flag_writes_fast_json(tmp_path, predictor):
    from PIL import Image

    small = tmp_path / "small.png"
    Image.open(ROOT / "examples" / "coffee.jpg").convert("RGB").resize((64, 48)).save(small)
    out = tmp_path / "out"
    assert demo.main(["--random-weights", "--input", str(small), "--output", str(out),
                      "--classes", "cup, table", "--fast"]) == 0
    data = json.loads((out / "small.json").read_text())
    assert data["fast"] is True and data["results"]["decoupled"]["fast"] is True
    reference = load_random_predictor(device="cpu").predict(small, "cup, table", fast=True)
    np.testing.assert_array_equal(load_label_map(out / "small_labels.png"), reference.label_map)
    assert demo.main(["--random-weights", "--input", str(small), "--output", str(tmp_path / "e"),
                      "--classes", "cup, table"]) == 0
    assert json.loads((tmp_path / "e" / "small.json").read_text())["fast"] is False


@pytest.fixture
def eval_args(tmp_path):
    synthetic.write_dataset(tmp_path / "data", "folder", 1)
    return tmp_path, ["--dataset", "folder", "--root", str(tmp_path / "data"), "--output",
                      str(tmp_path / "run"), "--random-weights", "--no-progress", "--no-plots"]


def test_eval_run_file_records_fast_and_refuses_exact(eval_args, capsys):
    tmp, args = eval_args
    assert evaluate_main(args + ["--fast"]) == 0
    saved = json.loads((tmp / "run" / "predictions" / RUN_FILE).read_text())
    assert saved["fast"] is True
    summary = json.loads((tmp / "run" / "small_target" / "summary.json").read_text())
    assert "fast" in json.dumps(summary)
    capsys.readouterr()
    assert evaluate_main(args) == 1  # exact over fast predictions
    err = capsys.readouterr().err
    assert "fast is None here but True in the saved predictions" in err
    assert err.count("\n") == 1
    assert evaluate_main(args + ["--fast"]) == 0  # the same run resumes


def test_eval_refuses_fast_over_exact_predictions(eval_args, capsys):
    tmp, args = eval_args
    assert evaluate_main(args) == 0
    assert "fast" not in json.loads((tmp / "run" / "predictions" / RUN_FILE).read_text())
    capsys.readouterr()
    assert evaluate_main(args + ["--fast"]) == 1
    assert "fast is True here but None in the saved predictions" in capsys.readouterr().err


# ----------------------------------------------------------------------------- warming
class CountingTower:
    """encode_text that counts the prompts it encodes (and can be slowed down)."""

    def __init__(self, encode, delay: float = 0.0):
        self.encode, self.delay, self.prompts = encode, delay, 0

    def __call__(self, tokens):
        self.prompts += len(tokens)
        if self.delay:
            time.sleep(self.delay)
        return self.encode(tokens)


@pytest.fixture
def warm_predictor(tmp_path, monkeypatch):
    monkeypatch.setenv("ZEGFORMER_CACHE", str(tmp_path / "cache"))
    p = load_random_predictor(device="cpu", seed=2)
    p.text.encode_text = CountingTower(p.text.encode_text)
    return p


def test_after_warming_a_preset_request_encodes_nothing(warm_predictor, image):
    p = warm_predictor
    label = "PASCAL VOC (20)"
    thread = startup.warm_presets(p, [label])
    thread.join(timeout=120)
    assert not thread.is_alive()
    tower = p.text.encode_text
    assert tower.prompts > 0
    before = tower.prompts
    box = ", ".join(startup.preset_classes(label))  # what the class box holds for that preset
    res = p.predict(image, box)
    res_pixel = p.predict(image, box, mode="pixel")
    assert tower.prompts == before, "the request ran the text tower"
    assert len(res.class_names) == 20 and len(res_pixel.class_names) == 20
    # the disk cache has them too: a new predictor (a restart) encodes nothing either
    q = load_random_predictor(device="cpu", seed=2)
    q.text.encode_text = CountingTower(q.text.encode_text)
    q.predict(image, box)
    assert q.text.encode_text.prompts == 0


def test_a_request_during_warming_succeeds(warm_predictor, image):
    p = warm_predictor
    p.text.encode_text.delay = 0.02  # slow the text tower, so warming is still going on
    thread = startup.warm_presets(p, ["COCO-Stuff (171)"], chunk=4)
    time.sleep(0.2)
    assert thread.is_alive()
    res = p.predict(image, NAMES)
    assert res.class_names == NAMES and res.label_map.shape == image.shape[:2]
    assert thread.is_alive(), "warming finished before the request: the test proves nothing"
    p.text.encode_text.delay = 0.0
    thread.join(timeout=120)
    assert not thread.is_alive()


def test_warming_takes_the_predictor_lock(warm_predictor):
    """While a request holds the lock, warming encodes nothing."""
    p = warm_predictor
    tower = p.text.encode_text
    with p.lock:
        thread = startup.warm_presets(p, ["PASCAL VOC (20)"])
        time.sleep(0.3)
        assert tower.prompts == 0 and thread.is_alive()
    thread.join(timeout=120)
    assert tower.prompts > 0


def test_warming_a_broken_predictor_only_logs(caplog):
    class Broken:
        lock = threading.Lock()
        kind = "zegformer"

        class settings:  # noqa: N801
            prompt_ensemble_type = "imagenet_select"

        def text(self, names, templates):
            raise RuntimeError("text tower exploded")

    thread = startup.warm_presets(Broken(), ["PASCAL VOC (20)"])
    thread.join(timeout=10)
    assert "text tower exploded" in caplog.text


def test_run_modes_passes_fast_through(predictor, image):
    from zegformer.faces.modes import run_modes

    _, results = run_modes(predictor, image, "cup, table", ["decoupled", "pixel"], fast=True)
    assert [r.fast for r in results] == [True, False]  # the pixel mode is exact anyway
    _, results = run_modes(predictor, image, "cup, table", ["decoupled"])
    assert results[0].fast is False

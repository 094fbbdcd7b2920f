"""The red UNTRAINED WEIGHTS strip: on the disagreement map and on the evaluation plots of an
untrained model, and nowhere else (each picture compared with its render without the strip)."""
from __future__ import annotations

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
from PIL import Image

from result_support import block_result
from zegformer.evaluation import plots, synthetic
from zegformer.evaluation.cli import main as evaluate
from zegformer.evaluation.report import write_report
from zegformer.viz import drawing as V
from zegformer.viz import export as E

RED = np.array(V.UNTRAINED_RED)


def _rgb(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB")).astype(int)


def assert_banner_on_top(marked: np.ndarray, plain: np.ndarray, tol: float = 0.0) -> None:
    """`marked` = a strip of mostly red rows above exactly `plain` (within `tol` on average)."""
    extra = marked.shape[0] - plain.shape[0]
    assert extra >= 20 and marked.shape[1:] == plain.shape[1:]
    strip = marked[:extra]
    red = (np.abs(strip - RED).max(axis=-1) <= 12).mean()
    assert red > 0.6, f"only {red:.0%} of the strip is red"
    assert (np.abs(strip - 255).max(axis=-1) <= 12).any()  # white text on it
    assert np.abs(marked[extra:] - plain).mean() <= tol  # the picture itself is untouched
    assert (np.abs(plain[:extra] - RED).max(axis=-1) <= 12).mean() < 0.1  # no strip there


def _pair(untrained: bool):
    names = ["cat", "sofa", "sky"]
    return [block_result(names, "decoupled", h=48, w=64, untrained=untrained),
            block_result(names, "pixel", h=48, w=64, seed=4, untrained=untrained)]


def test_disagreement_map_of_untrained_results_carries_the_banner():
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    marked = _rgb(V.render_disagreement(image, *_pair(True)))
    plain = _rgb(V.render_disagreement(image, *_pair(False)))
    assert_banner_on_top(marked, plain)
    a, b = _pair(False)
    a.untrained = True  # one untrained result is enough
    assert _rgb(V.render_disagreement(image, a, b)).shape == marked.shape


def test_written_disagreement_file_carries_the_banner(tmp_path):
    image = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    E.write_results(tmp_path / "u", image, _pair(True), 0.5)
    E.write_results(tmp_path / "t", image, _pair(False), 0.5)
    with Image.open(tmp_path / "u" / "disagreement.webp") as u, \
            Image.open(tmp_path / "t" / "disagreement.webp") as t:
        assert u.format == t.format == "WEBP"
        assert_banner_on_top(_rgb(u), _rgb(t), tol=4.0)  # lossy WebP: close, not equal


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    """summary.json of a small evaluation run on saved predictions (a trained-looking run)."""
    tmp = tmp_path_factory.mktemp("eval")
    imgs = synthetic.write_dataset(tmp / "d", "folder", 2)
    preds = synthetic.write_predictions(tmp / "p", imgs, "perfect", "folder")
    assert evaluate(["--dataset", "folder", "--root", str(tmp / "d"), "--output", str(tmp / "o"),
                     "--from-predictions", str(preds), "--no-progress", "--no-plots"]) == 0
    data = json.loads((tmp / "o" / "small_target" / "summary.json").read_text())
    assert data["meta"]["untrained"] is False
    return data


def _untrained(summary: dict) -> dict:
    return {**summary, "meta": {**summary["meta"], "untrained": True}}


def test_size_curves_of_an_untrained_run_carry_the_banner(summary, tmp_path):
    write_report(tmp_path / "u", _untrained(summary), {})
    write_report(tmp_path / "t", summary, {})
    for scheme in ("abs", "rel"):
        with Image.open(tmp_path / "u" / "small_target" / f"size_curve_{scheme}.png") as u, \
                Image.open(tmp_path / "t" / "small_target" / f"size_curve_{scheme}.png") as t:
            assert u.format == "PNG" and t.size == (840, 576)
            assert_banner_on_top(_rgb(u), _rgb(t))


def test_comparison_plot_carries_the_banner_when_either_run_is_untrained(summary, tmp_path):
    labels = ("a", "b")
    plain = _rgb(Image.open(plots.compare_curve(summary, summary, labels, "abs",
                                                tmp_path / "t.png")))
    for a, b in ((_untrained(summary), summary), (summary, _untrained(summary))):
        marked = _rgb(Image.open(plots.compare_curve(a, b, labels, "abs", tmp_path / "u.png")))
        assert_banner_on_top(marked, plain)


def test_evaluating_random_weights_writes_marked_plots(tmp_path):
    synthetic.write_dataset(tmp_path / "d", "folder", 1)
    assert evaluate(["--dataset", "folder", "--root", str(tmp_path / "d"), "--output",
                     str(tmp_path / "o"), "--random-weights", "--no-progress"]) == 0
    with Image.open(tmp_path / "o" / "small_target" / "size_curve_abs.png") as im:
        assert im.size[0] == 840 and im.size[1] > 576
        top = _rgb(im)[: im.size[1] - 576]
    assert (np.abs(top - RED).max(axis=-1) <= 12).mean() > 0.6

"""How the app shows results (issue 12): short names, legends that give areas, the confidence
panel, the top-N class table with its filter and the full CSV, and the live controls that
redraw a kept result without running the model. Without a server (test_browser.py has one)."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import csv
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

from result_support import block_result, two_modes_scene  # noqa: E402

from zegformer.errors import ZegFormerError  # noqa: E402
from zegformer.faces import class_table, live, startup, tables, views  # noqa: E402
from zegformer.inference.rethreshold import with_threshold  # noqa: E402
from zegformer.inference.result import UNLABELED  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CAT = ROOT / "examples" / "cat.jpg"
ADE_FULL = startup.preset_classes("ADE20K-Full (847)")


def test_short_names_count_synonyms_and_stay_unique():
    assert views.short_name("wall | partition | divider") == "wall +2 synonyms"
    assert views.short_name("tv | television") == "tv +1 synonym"
    assert views.short_name("cat") == "cat"
    long = "x" * 60 + " | y"
    assert views.short_name(long) == "x" * 39 + "… +1 synonym"
    # two names whose short forms coincide keep their full names
    assert views.short_names(["wall | partition", "wall | barrier", "cat"]) == [
        "wall | partition", "wall | barrier", "cat"]
    shorts = views.short_names(ADE_FULL)
    assert len(set(s.casefold() for s in shorts)) == 847
    assert max(len(s) for s in shorts) <= 60 < max(len(n) for n in ADE_FULL)


def test_numbers_have_one_format_each():
    assert [views.area_text(a) for a in (0, 0.0004, 0.025, 0.34, 1)] == [
        "0%", "<0.1%", "2.5%", "34%", "100%"]
    assert [views.score_text(s) for s in (0.8432, 0.1, 0.0456, 0.0004, 0)] == [
        "0.84", "0.10", "0.046", "<0.001", "0.00"]


def test_legend_gives_area_and_groups_small_classes():
    names = [f"class{i}" for i in range(40)]
    result = block_result(names)
    image = np.zeros((24, 32, 3), np.uint8)
    (base, masks), title, colors = views.overlay_view(image, result, 0.5, top=3)
    present = result.present_classes
    assert len(present) > 3 and title == "Decoupled (ZegFormer)"
    assert [label for _, label in masks[:3]] == [
        f"{c.name} — {views.area_text(c.area_fraction)} of image" for c in present[:3]]
    rest = masks[3][1]
    assert re.fullmatch(rf"{len(present) - 3} smaller classes — .+ of image", rest)
    assert colors[rest] == views.OTHER_COLOR and list(colors) == [label for _, label in masks]
    total = sum(m for m, _ in masks)
    np.testing.assert_allclose(total, 0.5)  # every pixel in exactly one mask, at the opacity


def test_panel_lists_found_classes_with_their_mean_score_and_the_rest_as_not_found():
    image, names, results = two_modes_scene()
    one = views.confidence_panel(results[:1], 0.0)
    assert "mean normalised score over the pixels it labels" in one
    found = results[0].present_classes
    rows = [line for line in one.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| class | decoupled: confidence | decoupled: area")
    assert [r.split(" | ")[0][2:] for r in rows[1:]] == [
        startup.markdown_text(views.short_name(c.name)) for c in found]
    top = found[0]
    cells = f"| {views.score_text(top.confidence)} | {views.area_text(top.area_fraction)}"
    assert cells in rows[1]
    assert "unlabelled: none (threshold 0.00)" in one

    both = views.confidence_panel(results, 0.0)
    head = "| class | decoupled: confidence | decoupled: area | pixel: confidence | pixel: area |"
    assert head in both
    assert "**Decoupled (ZegFormer):**" in both and "**Pixel-level:**" in both


def test_everything_unlabelled_shows_no_class_and_the_unlabelled_share():
    result = with_threshold(block_result(["a", "b", "c"]), 1.0)
    assert (result.label_map == UNLABELED).all()
    panel = views.confidence_panel([result], 1.0)
    assert "0 of 3 classes found" in panel and "No class found" in panel
    assert "| class |" not in panel  # no class is headlined with a confidence
    assert "unlabelled: 100% of pixels (best score below the threshold 1.00)" in panel
    assert "not found (3): a, b, c" in panel
    table = class_table.page_table([result])
    assert [row[2:] for row in table.rows] == [["0%", "not found"]] * 3


def ade_full_scene():
    names = ADE_FULL
    return [block_result(names, "decoupled", h=64, w=64),
            block_result(names, "pixel", h=64, w=64, seed=3)]


def test_ade20k_full_table_shows_the_top_classes_and_the_filter_finds_any(tmp_path):
    results = ade_full_scene()
    table = class_table.page_table(results)
    assert len(table.rows) == class_table.TOP_ROWS == 20
    assert "top 20 of 847 by area" in table.label and "classes.csv" in table.label
    order = class_table.row_order(results)
    areas = [max(r.classes[i].area_fraction for r in results) for i in order[:20]]
    assert areas == sorted(areas, reverse=True)
    assert max(len(row[0]) for row in table.rows) <= 60  # short names, not synonym lists
    # the filter reaches every class, by any synonym, case-insensitively
    hit = class_table.page_table(results, "  TELEVISION ")
    full = [n for n in ADE_FULL if "television" in n.casefold()]
    assert full and len(hit.rows) == len(full)
    shorts = dict(zip(ADE_FULL, views.short_names(ADE_FULL)))
    assert sorted(r[0] for r in hit.rows) == sorted(shorts[n] for n in full)
    assert "matching “TELEVISION”" in hit.label
    none = class_table.page_table(results, "no such class")
    assert none.rows == [] and "no class matches" in none.label

    out = tables.respond(np.zeros((64, 64, 3), np.uint8), results, 0.5, tmp_path)
    with open(tmp_path / "classes.csv", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == class_table.CSV_HEADERS and len(rows) == 1 + 2 * 847
    assert [r[2] for r in rows[1:848]] == ADE_FULL  # full names, every synonym
    for r in rows[1:]:
        assert (r[4] == "yes") == (r[6] != "") == (r[7] == "")  # mean if found, else peak
    assert [c["name"] for c in out.data["classes"]] == ADE_FULL  # the JSON, complete
    assert len(out.page_table.rows) == 20 and len(out.table) == 2 * 847  # page vs API


def test_with_threshold_equals_a_run_at_that_threshold(tiny_predictor):
    names = "cat, wall | partition, blanket, floor, sky"
    for mode in ("decoupled", "pixel"):
        first = tiny_predictor.predict(CAT, names, mode=mode, threshold=0.3)
        assert first.score_maps is not None
        for t in (0.0, 0.22, 0.5):
            direct = tiny_predictor.predict(CAT, names, mode=mode, threshold=t)
            again = with_threshold(first, t)
            np.testing.assert_array_equal(again.label_map, direct.label_map)
            assert [(c.name, c.present, c.area_fraction) for c in again.classes] == [
                (c.name, c.present, c.area_fraction) for c in direct.classes]
            np.testing.assert_allclose([c.confidence for c in again.classes],
                                       [c.confidence for c in direct.classes], atol=1e-6)
            assert "rethreshold" in again.timings
        # a pickled result (ZeroGPU hands results back pickled) re-thresholds from `probs`
        copy = pickle.loads(pickle.dumps(first))
        assert copy.score_maps is None
        direct = tiny_predictor.predict(CAT, names, mode=mode, threshold=0.22)
        np.testing.assert_array_equal(with_threshold(copy, 0.22).label_map, direct.label_map)
    with pytest.raises(ZegFormerError, match="threshold must be between 0 and 1"):
        with_threshold(first, 1.5)


def test_kept_pixel_best_gives_every_threshold_of_class_statistics():
    """From `probs` (no score maps), `apply_threshold` is `class_statistics` exactly."""
    from zegformer.inference.rethreshold import apply_threshold, pixel_best
    from zegformer.inference.result import class_statistics

    result = block_result([f"c{i}" for i in range(70)], h=32, w=48, seed=4)  # 3 chunks
    result.probs[:, :8, :8] = -1.0  # a corner where every score is <= 0: 1/K everywhere
    result.probs[5, 20:, 30:] = -0.5  # and negative scores elsewhere
    best = pixel_best(result)
    for t in (0.0, 0.013, 0.02, 0.05, 1.0):
        label, stats = class_statistics(result.probs, result.class_names, result.seen, t)
        again = apply_threshold(result, best, t)
        np.testing.assert_array_equal(again.label_map, label)
        assert again.classes == stats, t
    assert best.peaks.shape == (70,) and best.label.shape == (32, 48)


def test_redraw_uses_the_kept_result_and_never_the_model(tiny_predictor, tmp_path):
    from zegformer.faces.modes import run_modes

    calls = []

    class Counting:
        def predict(self, *args, **kwargs):
            calls.append(kwargs.get("mode"))
            return tiny_predictor.predict(*args, **kwargs)

    names = "cat, wall, blanket, floor"
    rgb, results = run_modes(Counting(), CAT, names, ["decoupled", "pixel"], 0.0)
    response = tables.respond(rgb, results, 0.5, tmp_path / "a")
    kept = live.keep(response, rgb, results, 0.0, 0.5)
    assert calls == ["decoupled", "pixel"]
    shown, kept2 = live.redraw(kept, 0.25, 0.8, tmp_path / "b", query="wa")
    assert calls == ["decoupled", "pixel"]  # the model did not run
    assert live.REDRAWN in shown.status and "threshold 0.25, opacity 0.80" in shown.status
    direct = tiny_predictor.predict(CAT, names, mode="pixel", threshold=0.25)
    np.testing.assert_array_equal(kept2.results[1].label_map, direct.label_map)
    assert shown.data["opacity"] == 0.8 and kept2.threshold == 0.25
    assert [r[0] for r in shown.page_table.rows] == ["wall"]  # the filter is kept
    masks = shown.overlays[1][0][1]
    assert all(float(m.max()) == pytest.approx(0.8) for m, _ in masks)
    assert (tmp_path / "b" / "classes.csv").is_file()
    # the opacity alone redraws without taking the statistics again
    shown, kept3 = live.redraw(kept2, 0.25, 0.2, tmp_path / "c")
    assert kept3.results[0] is kept2.results[0] and shown.data["opacity"] == 0.2
    with pytest.raises(ZegFormerError, match="threshold"):
        live.redraw(kept2, -0.1, 0.2, tmp_path / "d")


def test_the_csv_never_hands_a_spreadsheet_a_formula(tmp_path):
    names = ["=HYPERLINK(\"http://x\")", "+cmd", "@sum", "cat"]
    class_table.write_csv(tmp_path / "classes.csv", [block_result(names)])
    with open(tmp_path / "classes.csv", encoding="utf-8") as f:
        cells = [cell for row in list(csv.reader(f))[1:] for cell in row]
    assert not any(cell.startswith(class_table.FORMULA_START) for cell in cells)
    assert "'=HYPERLINK(\"http://x\")" in cells and "cat" in cells
    assert class_table.inert_cell(-0.5) == -0.5  # numbers stay numbers


def test_pixel_best_from_score_maps_equals_the_numpy_pass(tiny_predictor, monkeypatch):
    """From the kept score maps (resized chunk by chunk, the peaks by bounds) and from `probs`
    (the full maps): the same label and normalised best bit for bit, the same peaks to float
    rounding, over several chunks and both modes."""
    from zegformer.inference import rethreshold

    bounded = []
    finder = rethreshold.PeakFinder
    monkeypatch.setattr(rethreshold, "PeakFinder", lambda *a: bounded.append(1) or finder(*a))
    names = ", ".join(f"thing {i}" for i in range(70))
    for mode in ("decoupled", "pixel"):
        result = tiny_predictor.predict(CAT, names, mode=mode)
        from_maps = rethreshold.pixel_best(result)
        assert len(bounded) == 1 + (mode == "pixel")  # the peaks came from the bounds
        from_probs = rethreshold._pixel_best(result.replace(score_maps=None))
        np.testing.assert_array_equal(from_maps.label, from_probs.label)
        np.testing.assert_array_equal(from_maps.best, from_probs.best)
        np.testing.assert_allclose(from_maps.peaks, from_probs.peaks, rtol=1e-6, atol=1e-7)
        assert len(np.unique(from_probs.peaks)) > 10  # real, distinct peaks

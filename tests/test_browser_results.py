"""How the page shows results, in a real headless Chromium against a real server on 127.0.0.1
(issue 12): examples keep the visitor's settings, the threshold and opacity sliders redraw the
kept result without running the model (and a run's result is redrawn at the values they were
moved to while it ran), the ADE20K-Full table stays readable and filterable, and
"both" mode shows both modes' areas and confidences only once its result arrives.

Every check waits with `expect(...)`. Screenshots go to /tmp/view-shots/ (looked at by hand).
Needs `bash scripts/setup.sh --browser`, like test_browser.py.
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import json
import re
import threading
from pathlib import Path

import pytest
import torch

from browser_support import browser_page, served

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_MS = 180_000  # a busy 2-core machine; 847 classes in two modes take a while
SHOTS = Path("/tmp/view-shots")
CLASSES = "cat, wall | partition, blanket, floor"
EXAMPLES = json.loads((ROOT / "examples" / "examples.json").read_text())


class CountingPredictor:
    """The tiny predictor, counting its `predict` calls (what the live controls must not make).
    A test can hold runs back: clear `gate`, and `entered` is set once a run waits on it."""

    def __init__(self, predictor):
        self._predictor, self.calls = predictor, 0
        self.gate, self.entered = threading.Event(), threading.Event()
        self.gate.set()

    def predict(self, *args, **kwargs):
        self.calls += 1
        self.entered.set()
        if not self.gate.wait(timeout=TIMEOUT_MS / 1000):
            raise RuntimeError("the test never opened the gate")
        return self._predictor.predict(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._predictor, name)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(tmp_path_factory.mktemp("examples_cache"))
    from zegformer import load_random_predictor

    predictor = CountingPredictor(load_random_predictor())
    SHOTS.mkdir(parents=True, exist_ok=True)
    with served(predictor) as url:
        yield url, predictor


@pytest.fixture()
def page(server):
    with browser_page(server[0], ready="#input-image input[type=file]",
                      timeout_ms=TIMEOUT_MS) as page:
        yield page


def set_slider(page, elem_id, value):
    """Type a value into a slider's number box and leave it (the slider's "release")."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Tab")


def segment(page, mode_label, modes):
    """Pick a mode, press Segment, wait until the status names exactly `modes`."""
    from playwright.sync_api import expect

    page.get_by_label(mode_label, exact=True).check()
    page.click("#run")
    status = page.locator("#status")
    for m in modes:
        expect(status).to_contain_text(f"{m}:")
    for m in {"decoupled", "pixel"} - set(modes):
        expect(status).not_to_contain_text(f"{m}:")
    expect(status).not_to_contain_text("Redrawn")
    expect(page.locator("#overlay img").first).to_be_visible()


def mask_sources(page, elem_id="overlay"):
    return page.locator(f"#{elem_id} img").evaluate_all("els => els.map(e => e.src)")


def test_examples_keep_mode_threshold_and_opacity(page, server):
    from playwright.sync_api import expect

    page.get_by_label("Both side by side", exact=True).check()
    set_slider(page, "threshold", 0.15)
    set_slider(page, "opacity", 0.8)
    page.locator("#examples tbody tr").nth(1).click()
    expect(page.locator("#classes textarea")).to_have_value(EXAMPLES[1]["classes"])
    status = page.locator("#status")
    expect(status).to_contain_text("decoupled:")
    expect(status).to_contain_text("pixel:")  # the example ran in the visitor's mode
    expect(page.locator("#overlay-pixel img").first).to_be_visible()
    expect(page.get_by_label("Both side by side", exact=True)).to_be_checked()
    expect(page.locator("#threshold input[type=number]")).to_have_value("0.15")
    expect(page.locator("#opacity input[type=number]")).to_have_value("0.8")
    expect(page.locator("#confidences")).to_contain_text("threshold 0.15")
    page.screenshot(path=str(SHOTS / "example_kept_settings.png"), full_page=True)


def test_threshold_and_opacity_redraw_without_the_model(page, server):
    from playwright.sync_api import expect

    predictor = server[1]
    page.set_input_files("#input-image input[type=file]", str(ROOT / "examples" / "cat.jpg"))
    page.fill("#classes textarea", CLASSES)
    segment(page, "Pixel-level", ["pixel"])
    expect(page.locator("#overlay .legend-item").first).to_be_visible()
    legend = page.locator("#overlay .legend-item").all_inner_texts()
    assert legend and all(re.fullmatch(r".+ — <?[\d.]+% of image", t.strip()) for t in legend)
    expect(page.locator("#confidences")).to_contain_text("unlabelled: none (threshold 0.00)")
    runs, before = predictor.calls, mask_sources(page)
    page.screenshot(path=str(SHOTS / "live_before.png"), full_page=True)

    set_slider(page, "threshold", 1)  # nothing reaches a normalised score of 1
    status = page.locator("#status")
    expect(status).to_contain_text("Redrawn from the kept result at threshold 1.00")
    expect(status).to_contain_text("model did not run")
    panel = page.locator("#confidences")
    expect(panel).to_contain_text("unlabelled: 100% of pixels (best score below the threshold")
    expect(panel).to_contain_text("No class found")
    expect(page.locator("#overlay .legend-item")).to_have_count(0)
    page.screenshot(path=str(SHOTS / "live_threshold_1.png"), full_page=True)

    set_slider(page, "threshold", 0)
    expect(status).to_contain_text("at threshold 0.00")
    expect(page.locator("#overlay .legend-item")).to_have_count(len(legend))
    track = page.locator("#opacity input[type=range]").bounding_box()  # drag the opacity slider
    page.mouse.click(track["x"] + 0.9 * track["width"], track["y"] + track["height"] / 2)
    expect(status).to_contain_text(re.compile(r"opacity 0\.(8|9)\d"))
    expect(page.locator("#overlay .legend-item")).to_have_count(len(legend))
    after = mask_sources(page)
    assert after[0] == before[0]  # the same picture underneath (Gradio names files by content)
    assert len(after) > 1 and set(after[1:]).isdisjoint(before[1:])  # new, stronger masks
    assert predictor.calls == runs  # three redraws, no model run
    page.screenshot(path=str(SHOTS / "live_opacity.png"), full_page=True)


def test_sliders_moved_while_the_model_runs_apply_to_its_result(page, server):
    from playwright.sync_api import expect

    predictor = server[1]
    page.set_input_files("#input-image input[type=file]", str(ROOT / "examples" / "cat.jpg"))
    page.fill("#classes textarea", CLASSES)
    segment(page, "Pixel-level", ["pixel"])  # a kept result with the first classes
    page.fill("#classes textarea", "cat, grass, sky")
    predictor.entered.clear()
    predictor.gate.clear()  # the next run waits until the slider has moved
    try:
        page.click("#run")
        assert predictor.entered.wait(TIMEOUT_MS / 1000), "the run never reached the model"
        set_slider(page, "threshold", 0.4)
        status = page.locator("#status")
        expect(status).to_contain_text("Redrawn from the kept result at threshold 0.40")
        expect(page.locator("#confidences")).to_contain_text("blanket")  # the old result, redrawn
    finally:
        predictor.gate.set()
    panel = page.locator("#confidences")
    expect(panel).not_to_contain_text("blanket")  # the new run's result ...
    expect(panel).to_contain_text("grass")
    expect(panel).to_contain_text("threshold 0.40")  # ... at the slider's threshold, not 0.00
    expect(status).to_contain_text("Redrawn from the kept result at threshold 0.40")
    expect(page.locator("#threshold input[type=number]")).to_have_value("0.4")
    page.screenshot(path=str(SHOTS / "slider_during_run.png"), full_page=True)


def test_ade20k_full_table_is_short_and_filterable_in_both_modes(page, server):
    from playwright.sync_api import expect

    page.set_input_files("#input-image input[type=file]", str(ROOT / "examples" / "coffee.jpg"))
    page.locator("#preset input").click()
    page.get_by_role("option", name="ADE20K-Full (847)").click()
    page.click("#preset-replace")
    expect(page.locator("#parsed-classes")).to_contain_text("847 classes")
    page.get_by_label("Both side by side", exact=True).check()
    page.wait_for_timeout(1000)  # a mode chosen before a run shows no empty areas
    expect(page.locator("#overlay-pixel")).to_be_hidden()
    expect(page.locator("#disagreement")).to_be_hidden()
    segment(page, "Both side by side", ["decoupled", "pixel"])
    expect(page.locator("#overlay-pixel img").first).to_be_visible()
    expect(page.locator("#disagreement img")).to_be_visible()

    table = page.locator("#class-table")
    expect(table).to_contain_text("top 20 of 847 by area")
    grid = table.locator("[role=grid]")  # Gradio's virtual table: rows are div[role=row]
    expect(grid).to_have_attribute("aria-rowcount", "21")  # a header row and 20 classes
    for header in ("decoupled: area", "decoupled: confidence", "pixel: area", "pixel: confidence"):
        expect(table).to_contain_text(header)
    first_cell = table.locator("[data-testid=cell-0-0]")
    assert first_cell.bounding_box()["width"] < 400  # short names, not a 718 px column
    panel = page.locator("#confidences")
    expect(panel).to_contain_text("decoupled: confidence")
    expect(panel).to_contain_text("pixel: confidence")
    expect(panel).to_contain_text("mean normalised score over the pixels it labels")
    expect(page.locator("#downloads a[href$='/classes.csv']")).to_have_count(1)
    page.screenshot(path=str(SHOTS / "ade20k_full_both.png"), full_page=True)

    page.fill("#class-filter textarea", "television")
    expect(table).to_contain_text("matching “television”")
    expect(grid).to_have_attribute("aria-rowcount", "4")  # the 3 classes naming television
    for row in range(3):
        expect(table.locator(f"[data-testid=cell-{row}-0]")).to_contain_text("television")
    page.locator("#class-table").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "ade20k_full_filter.png"), full_page=True)

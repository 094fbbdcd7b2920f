"""The Space in a real headless Chromium (Debian's /usr/bin/chromium driven by playwright; never
`playwright install`): upload, type classes, pick each scoring mode, segment, and check what a
visitor sees. Needs `bash scripts/setup.sh --browser` (CI does that in .ci/run).

The screenshot is saved under pytest's tmp_path; with ZEGFORMER_UPDATE_SCREENSHOTS=1 it also
replaces assets/figures/app_random_weights.png, the README's picture of the app.
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from browser_support import TIMEOUT_MS, browser_page, screenshot, served

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "assets" / "figures" / "app_random_weights.png"
CLASSES = ["cat", "wall | partition", "blanket", "floor"]
SHOWN = ["cat", "wall +1 synonym", "blanket", "floor"]  # the page's short names


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(tmp_path_factory.mktemp("examples_cache"))
    from zegformer import load_random_predictor

    with served(load_random_predictor()) as url:
        yield url


@pytest.fixture()
def page(app_url):
    with browser_page(app_url, ready="#input-image input[type=file]") as page:
        yield page


def run_and_wait(page, mode_label, expect_modes):
    """Pick a mode, press Segment and wait until the status names exactly `expect_modes`."""
    from playwright.sync_api import expect

    page.get_by_label(mode_label, exact=True).check()
    page.click("#run")
    status = page.locator("#status")
    for m in expect_modes:
        expect(status).to_contain_text(f"{m}:", timeout=TIMEOUT_MS)
    for m in {"decoupled", "pixel"} - set(expect_modes):
        expect(status).not_to_contain_text(f"{m}:")
    title = "Pixel-level" if expect_modes == ["pixel"] else "Decoupled (ZegFormer)"
    expect(page.locator("#overlay")).to_contain_text(title)  # the overlays follow the status


def check_legend_and_confidences(page, overlay_id="#overlay"):
    from playwright.sync_api import expect

    items = page.locator(f"{overlay_id} .legend-item")
    expect(items.first).to_be_visible()
    # "name — 34% of image" for every class found: its area (the legend comes in one answer:
    # all of it is drawn once its first item is)
    item_text = re.compile(r"^\s*(" + "|".join(map(re.escape, SHOWN)) +
                           r") — (<0\.1|\d{1,3}(\.\d)?)% of image\s*$")
    for item in items.all():
        expect(item).to_have_text(item_text)
    panel = page.locator("#confidences")  # says what its numbers are; every class appears
    expect(panel).to_contain_text("mean normalised score over the pixels it labels")
    for name in SHOWN:
        expect(panel).to_contain_text(name)
    expect(page.locator(f"{overlay_id} img").first).to_be_visible()


def test_visitor_segments_an_image_in_every_mode(page, tmp_path):
    from playwright.sync_api import expect

    page.set_input_files("#input-image input[type=file]", str(ROOT / "examples" / "cat.jpg"))
    page.fill("#classes textarea", ", ".join(CLASSES))
    expect(page.locator("#parsed-classes")).to_contain_text("4 classes")

    run_and_wait(page, "Decoupled (ZegFormer)", ["decoupled"])
    check_legend_and_confidences(page)
    expect(page.locator("#status")).to_contain_text("weights: untrained")
    banner = page.locator("#untrained")  # once, red, white text
    expect(banner).to_have_count(1)
    expect(banner).to_contain_text("Untrained weights")
    expect(banner).to_have_css("background-color", "rgb(185, 28, 28)")
    expect(banner.locator("strong")).to_have_css("color", "rgb(255, 255, 255)")
    expect(page.locator("#overlay-pixel")).to_be_hidden()

    page.check("#fast input")  # the fast approximation: said on the status line, then off again
    run_and_wait(page, "Decoupled (ZegFormer)", ["decoupled"])
    expect(page.locator("#status")).to_contain_text("fast approximation")
    page.uncheck("#fast input")

    run_and_wait(page, "Pixel-level", ["pixel"])
    check_legend_and_confidences(page)

    run_and_wait(page, "Both side by side", ["decoupled", "pixel"])
    check_legend_and_confidences(page)
    check_legend_and_confidences(page, "#overlay-pixel")
    expect(page.locator("#disagreement img")).to_be_visible()
    table = page.locator("#class-table")
    for text in SHOWN + ["decoupled: area", "pixel: confidence", "novel"]:
        expect(table).to_contain_text(text)
    for name in ("result.json", "decoupled_labels.png", "pixel_overlay.webp", "classes.csv"):
        expect(page.locator(f"#downloads a[href$='/{name}']")).to_have_count(1)

    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, tmp_path, "app.png")  # also to $ZEGFORMER_SCREENSHOT_DIR when set
    screenshot(page, tmp_path, "app_full.png", full_page=True)
    if os.environ.get("ZEGFORMER_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "app.png", SCREENSHOT)


def test_bad_classes_show_an_error_and_the_next_request_works(page):
    from playwright.sync_api import expect

    page.set_input_files("#input-image input[type=file]", str(ROOT / "examples" / "coffee.jpg"))
    page.fill("#classes textarea", "cup, CUP")
    expect(page.locator("#parsed-classes")).to_contain_text("listed twice")
    page.click("#run")
    expect(page.locator(".toast-body").first).to_contain_text("listed twice")
    page.fill("#classes textarea", "cup, table")
    page.click("#run")
    expect(page.locator("#status")).to_contain_text("decoupled:")
    expect(page.locator("#overlay .legend-item").first).to_be_visible()


def test_example_and_preset_work_on_click(page):
    from playwright.sync_api import expect

    first = json.loads((ROOT / "examples" / "examples.json").read_text())[0]
    page.locator("#examples tbody tr").first.click()
    expect(page.locator("#classes textarea")).to_have_value(first["classes"])
    expect(page.locator("#overlay .legend-item").first).to_be_visible()
    expect(page.locator("#confidences")).to_contain_text(first["classes"].split(",")[0])

    page.locator("#preset input").click()
    page.get_by_role("option", name="PASCAL VOC (20)").click()
    page.click("#preset-replace")
    expect(page.locator("#classes textarea")).to_have_value(re.compile(r"^aeroplane, bicycle"))
    expect(page.locator("#parsed-classes")).to_contain_text("20 classes")


def test_class_names_with_markup_are_shown_as_text(page):
    """Issue 11: a class name with backticks and HTML stays text in the class list, the toast
    and the table (no element is made from it, no handler runs)."""
    from playwright.sync_api import expect

    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    markup = "x`<img src=x onerror=alert(1)>`y"
    page.set_input_files("#input-image input[type=file]", str(ROOT / "examples" / "coffee.jpg"))
    page.fill("#classes textarea", f"{markup}, {markup.upper()}")
    shown_markup = re.compile(re.escape("<img src=x onerror=alert(1)>"), re.IGNORECASE)
    expect(page.locator("#parsed-classes")).to_contain_text("listed twice")
    expect(page.locator("#parsed-classes")).to_contain_text(shown_markup)
    page.click("#run")
    toast = page.locator(".toast-body").first
    expect(toast).to_contain_text("listed twice")
    expect(toast).to_contain_text(shown_markup)
    page.fill("#classes textarea", f"{markup}, cup")
    expect(page.locator("#parsed-classes")).to_contain_text("2 classes")
    page.click("#run")
    expect(page.locator("#status")).to_contain_text("decoupled:")
    expect(page.locator("#class-table")).to_contain_text("<img src=x onerror=alert(1)>")
    for where in ("#parsed-classes", ".toast-body", "#class-table", "#confidences"):
        expect(page.locator(f"{where} img")).to_have_count(0)
    assert dialogs == []

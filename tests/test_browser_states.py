"""The page's states in a real headless Chromium (issue 12): a Space without weights (every
control off, the owner told which variables to set), one with a wrong weights file (the message
fits the file), and errors (one toast; the outputs keep what they showed, no "Error" pills).
Needs `bash scripts/setup.sh --browser` (CI does that in .ci/run).
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from browser_support import TIMEOUT_MS, browser_page, screenshot, served

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
SETUP_VARS = ("ZEGFORMER_WEIGHTS", "ZEGFORMER_CLIP_WEIGHTS", "ZEGFORMER_CONFIG",
              "ZEGFORMER_RANDOM_WEIGHTS")
# Every control a visitor could use to start a request; all off without a model.
CONTROLS = ["#classes textarea", "#mode input", "#threshold input", "#opacity input",
            "#tta input", "#fast input", "#preset input", "#preset-replace", "#preset-add", "#run"]
STATUS_PILLS = "span.error:not([class*=toast])"  # Gradio's red "Error" on a failed output
LIBRARY_ADVICE = ["weights=PATH", "--opts", "trust_pickle", "--trust-pickle", "--clip-weights",
                  "*Variables*", "**", "|---"]


@pytest.fixture(scope="module", autouse=True)
def examples_cache(tmp_path_factory):
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(tmp_path_factory.mktemp("examples_cache"))


def _no_model_page(monkeypatch, weights: Path | None = None):
    from zegformer.faces import startup

    for var in SETUP_VARS:
        monkeypatch.delenv(var, raising=False)
    if weights is not None:
        monkeypatch.setenv("ZEGFORMER_WEIGHTS", str(weights))
    message = startup.load_app_predictor()
    assert isinstance(message, str), "a model was loaded"
    return message


def _check_help_is_rendered_markdown(page):
    from playwright.sync_api import expect

    helper = page.locator("#setup-help")
    expect(helper.locator("h2")).to_have_text("No model is loaded")
    table = helper.locator("table")
    expect(table).to_be_visible()
    for name in ("ZEGFORMER_WEIGHTS", "ZEGFORMER_CLIP_WEIGHTS", "ZEGFORMER_CONFIG", "HF_TOKEN"):
        expect(table.locator("td code", has_text=name)).to_be_visible()
    expect(table).to_contain_text("hf://owner/repo/model.safetensors")
    expect(table).to_contain_text(".safetensors")
    expect(helper).to_contain_text("Variables and secrets")
    expect(helper).to_contain_text("ZEGFORMER_RANDOM_WEIGHTS")
    for text in LIBRARY_ADVICE:  # said as Markdown source or library advice: not on the page
        expect(helper).not_to_contain_text(text)


def test_without_weights_every_control_is_off_and_the_owner_is_told_what_to_set(
        monkeypatch, tmp_path):
    from playwright.sync_api import expect

    with served(_no_model_page(monkeypatch)) as url, browser_page(url) as page:
        _check_help_is_rendered_markdown(page)
        expect(page.locator("#setup-help")).to_contain_text(
            "ZEGFORMER_WEIGHTS is not set, so there is no ZegFormer checkpoint to load")
        for selector in CONTROLS:
            controls = page.locator(selector)
            expect(controls.first).to_be_attached()
            for control in controls.all():
                expect(control).to_be_disabled()
        expect(page.locator("#input-image input[type=file]")).to_have_count(0)  # no upload
        examples = page.locator("#examples")
        expect(examples).to_contain_text("available once the Space has weights")
        expect(examples).to_have_css("pointer-events", "none")
        first = examples.locator("tbody tr, button").first
        expect(first).to_be_attached()
        before = page.locator("#classes textarea").input_value()
        first.dispatch_event("click")  # past the CSS: the row itself has no event behind it
        page.wait_for_timeout(1500)
        expect(page.locator("#classes textarea")).to_have_value(before)
        expect(page.locator(".toast-body")).to_have_count(0)
        page.evaluate("window.scrollTo(0, 0)")
        screenshot(page, tmp_path, "no_weights.png")
        screenshot(page, tmp_path, "no_weights_full.png", full_page=True)


def test_a_wrong_weights_file_gets_a_message_that_fits_it(monkeypatch, tmp_path):
    from playwright.sync_api import expect

    garbage = tmp_path / "zegformer_R101_coco-stuff.pth"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with served(_no_model_page(monkeypatch, garbage)) as url, browser_page(url) as page:
        _check_help_is_rendered_markdown(page)
        helper = page.locator("#setup-help")
        expect(helper).to_contain_text(f"{garbage} is not a PyTorch checkpoint")
        expect(helper).to_contain_text("it cannot be read")
        expect(helper).to_contain_text(f"Now: ZEGFORMER_WEIGHTS = {garbage}")
        expect(page.locator("#run")).to_be_disabled()
        page.evaluate("window.scrollTo(0, 0)")
        screenshot(page, tmp_path, "wrong_weights.png")


# ----------------------------------------------------------------------------- errors
@pytest.fixture(scope="module")
def model_url():
    from zegformer import load_random_predictor

    with served(load_random_predictor()) as url:
        yield url


def _segment_and_wait(page, classes: str):
    from playwright.sync_api import expect

    page.fill("#classes textarea", classes)
    page.click("#run")
    expect(page.locator("#status")).to_contain_text("decoupled:", timeout=TIMEOUT_MS)
    expect(page.locator("#overlay img").first).to_be_visible()
    expect(page.locator("#class-table")).to_contain_text(classes.split(",")[0])


def _check_error_shown_once_and_outputs_kept(page, message: str, overlay_src: str):
    from playwright.sync_api import expect

    toast = page.locator(".toast-body")
    expect(toast).to_have_count(1)
    expect(toast).to_contain_text(message)
    page.wait_for_timeout(1000)  # Gradio draws its pills with the same answer as the toast
    expect(page.locator(STATUS_PILLS)).to_have_count(0)
    expect(page.locator("#overlay img").first).to_have_attribute("src", overlay_src)
    expect(page.locator("#status")).to_contain_text("decoupled:")
    expect(page.locator("#class-table")).to_contain_text("cup")
    expect(page.locator("#confidences")).to_contain_text("cup")


def test_an_error_is_one_toast_and_the_outputs_keep_their_content(model_url, tmp_path):
    from playwright.sync_api import expect

    from zegformer.faces.guarded_blocks import TOAST_S

    with browser_page(model_url, ready="#input-image input[type=file]") as page:
        page.set_input_files("#input-image input[type=file]",
                             str(ROOT / "examples" / "coffee.jpg"))
        _segment_and_wait(page, "cup, table")
        overlay_src = page.locator("#overlay img").first.get_attribute("src")
        assert overlay_src

        # A mistake the callback finds: the class list.
        page.fill("#classes textarea", "cup, CUP")
        page.click("#run")
        _check_error_shown_once_and_outputs_kept(page, "listed twice", overlay_src)
        screenshot(page, tmp_path, "error_toast.png")
        # The toast goes by itself: toasts do not pile up.
        expect(page.locator(".toast-body")).to_have_count(0, timeout=(TOAST_S + 10) * 1000)

        # A mistake Gradio's preprocessing finds: an upload that is not an image.
        fake = tmp_path / "notes.png"
        fake.write_text("this is text, not pixels")
        page.fill("#classes textarea", "cup, table")
        page.set_input_files("#input-image input[type=file]", str(fake))
        page.click("#run")
        _check_error_shown_once_and_outputs_kept(page, "not an image", overlay_src)
        screenshot(page, tmp_path, "error_not_an_image.png")
        page.locator("[data-testid=toast-close]").first.click()
        expect(page.locator(".toast-body")).to_have_count(0)

        # A page helper's mistake: a preset button with no preset chosen.
        page.click("#preset-replace")
        _check_error_shown_once_and_outputs_kept(page, "Choose a preset vocabulary first",
                                                 overlay_src)
        expect(page.locator("#classes textarea")).to_have_value("cup, table")

        # The page still works afterwards, and a good answer replaces the overlay.
        page.set_input_files("#input-image input[type=file]",
                             str(ROOT / "examples" / "cat.jpg"))
        _segment_and_wait(page, "cup, wall")
        expect(page.locator("#overlay img").first).not_to_have_attribute(
            "src", re.compile(re.escape(overlay_src) + "$"))
        expect(page.locator(STATUS_PILLS)).to_have_count(0)

"""Helpers for the browser tests: the app served on 127.0.0.1, a headless Chromium page on it
(Debian's /usr/bin/chromium driven by playwright; never `playwright install`), and screenshots.

Every check on the page goes through Playwright's `expect(...)`, which retries until its
timeout: an instant sample (`is_visible()`, `inner_text()`) can run before the page caught up.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
from pathlib import Path
from typing import Any, Iterator

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]
TIMEOUT_MS = 120_000  # generous: a busy 2-core machine, first request encodes the class names
SHOTS_ENV = "ZEGFORMER_SCREENSHOT_DIR"  # also copy the screenshots there (to look at them)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served(model: Any) -> Iterator[str]:
    """app.build_demo(model) served on 127.0.0.1; yields its URL, closes it afterwards."""
    import app

    demo = app.build_demo(model)
    port = free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
               quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@contextlib.contextmanager
def browser_page(url: str, ready: str = "#run", timeout_ms: int = TIMEOUT_MS) -> Iterator[Any]:
    """A fresh Chromium page on `url`, once the element `ready` is on it; `expect(...)` and the
    page's actions wait up to `timeout_ms`."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=timeout_ms)
    assert Path(CHROMIUM).is_file(), "Chromium missing: run `bash scripts/setup.sh --browser`"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1250})
            page.set_default_timeout(timeout_ms)
            page.goto(url)
            expect(page.locator(ready)).to_be_attached()
            yield page
        finally:
            browser.close()


def screenshot(page: Any, folder: Path, name: str, full_page: bool = False) -> Path:
    """Save a screenshot under `folder` (and under $ZEGFORMER_SCREENSHOT_DIR when set)."""
    path = Path(folder) / name
    page.screenshot(path=str(path), full_page=full_page)
    assert path.stat().st_size > 10_000, f"{name}: an empty screenshot"
    extra = os.environ.get(SHOTS_ENV)
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(extra) / name)
    return path

"""How the app calls the model: one request at a time, options passed through, examples kept.

`serve` binds `run_modes` to one predictor behind a lock (on ZeroGPU the call is wrapped by
`spaces.GPU`, which the app passes in as `wrap`); `remembered` keeps the last answers so a second
click on an example is shown at once. Options are the page's checkboxes (`tta`, `fast`): only
the ones switched on are passed, so stand-ins in tests need not know them.
"""
from __future__ import annotations

import functools
import threading
from typing import Any, Callable

from zegformer.faces.modes import run_modes

# (image, classes, modes, threshold, progress=None, **options) -> (rgb, results)
Infer = Callable[..., tuple[Any, list[Any]]]
OPTIONS = ("tta", "fast")  # the page's boxes, in this order after the inputs


def chosen(**boxes: Any) -> dict[str, bool]:
    """The options switched on, e.g. `chosen(tta=False, fast=True) == {"fast": True}`."""
    unknown = set(boxes) - set(OPTIONS)
    if unknown:
        raise TypeError(f"unknown options {sorted(unknown)}")
    return {name: True for name, on in boxes.items() if on}


def serve(predictor: Any, wrap: Callable[[Callable], Callable] = lambda fn: fn) -> Infer:
    """`run_modes` bound to `predictor`: one call at a time, from any event; the predictor stays
    out of the arguments `wrap` sees (on ZeroGPU they are sent to a GPU worker)."""
    # Its own lock, not `predictor.lock`: it spans every mode of one request, and on ZeroGPU the
    # call runs in a forked worker, which must not inherit a lock the parent holds.
    lock = threading.Lock()

    @wrap
    def on_device(image, classes, modes, threshold, progress=None, **options):
        return run_modes(predictor, image, classes, modes, threshold, progress, **options)

    def infer(image, classes, modes, threshold, progress=None, **options):
        with lock:
            return on_device(image, classes, modes, threshold, progress, **options)

    return infer


def remembered(infer: Infer, size: int) -> Infer:
    """`infer` keeping its last `size` answers (one per example row), so that a second click on
    an example shows it again at once, without running the model; the options are part of the
    key (a fast answer is never shown for an exact request)."""

    @functools.lru_cache(maxsize=max(1, size))
    def answer(image, classes, modes, threshold, options):
        return infer(image, classes, modes, threshold, **dict(options))

    def run(image, classes, modes, threshold, progress=None, **options):
        return answer(image, classes, tuple(modes), threshold, tuple(sorted(options.items())))

    return run

"""`GuardedBlocks`: gr.Blocks that checks what an API caller sends before Gradio acts on it.

Gradio itself would, for an image input: download an `http(s)://` path (a server-side fetch),
and answer a plain path, a server file's path (which it refuses), a string or a list with a
generic "error" (no message). For a number input it answers 'abc' or null the same way, and it
turns a JSON list sent to a text box into the text "['cat', 'dog']".
Here each of these gets one clear line, before anything is fetched, copied or parsed; the value
checks (ranges, class names, pixels) stay with the components and the library.

A queued event also checks how long its request waited (`max_wait_s`): a request that could
not start in time is told so instead of running late.

Errors of page events (api_visibility "private", queued) become one toast, and the outputs keep
what they showed: Gradio would mark every output of a failed event with a red "Error" pill.
API callers (public endpoints) still get the error itself.
"""
from __future__ import annotations

import html
import inspect
import logging
import math
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.exceptions import InvalidPathError
from gradio.utils import get_upload_folder

from .web_guard import waited_s

log = logging.getLogger(__name__)
_URL_PREFIXES = ("http://", "https://", "ftp://", "file:", "s3://", "gs://", "//")
UPLOAD_HINT = "upload the file (with gradio_client: handle_file('path/to/image.png'))"
TOAST_S = 8.0  # seconds an error toast of a page event stays (a new error adds a new toast)


def user_text(message: str) -> str:
    """A message that quotes user input, made safe for Gradio's toasts, which render HTML."""
    return html.escape(message, quote=False)


def refuse(message: str) -> gr.Error:
    return gr.Error(user_text(message), print_exception=False)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_url(text: str) -> bool:
    return text.strip().lower().startswith(_URL_PREFIXES)


def check_image_payload(raw: Any, name: str) -> None:
    """An image input must be a file uploaded to this server (or nothing)."""
    if raw is None:
        return
    if isinstance(raw, str):
        if _is_url(raw):
            raise refuse(f"{name}: {_shown(raw)} is a URL; this app never fetches URLs, "
                         f"{UPLOAD_HINT}")
        raise refuse(f"{name} must be an uploaded file, not the text {_shown(raw)}; {UPLOAD_HINT}")
    if not isinstance(raw, dict):
        raise refuse(f"{name} must be an uploaded file, got a {type(raw).__name__}; {UPLOAD_HINT}")
    path, url = raw.get("path"), raw.get("url")
    if isinstance(url, str) and _is_url(url) and not path:
        path = url
    if not isinstance(path, str) or not path:
        raise refuse(f"{name} must be an uploaded file (no file path given); {UPLOAD_HINT}")
    if _is_url(path):
        raise refuse(f"{name}: {_shown(path)} is a URL; this app never fetches URLs, "
                     f"{UPLOAD_HINT}")
    cache = Path(get_upload_folder()).resolve()
    try:
        inside = Path(path).resolve().is_relative_to(cache)
    except (OSError, ValueError):
        inside = False
    if not inside:
        raise refuse(f"{name}: {_shown(path)} was not uploaded to this app; {UPLOAD_HINT}")


def check_number_payload(raw: Any, name: str, block: Any) -> None:
    """A slider or number input must be a finite number (its range is the component's check)."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
        low, high = getattr(block, "minimum", None), getattr(block, "maximum", None)
        span = f" between {low:g} and {high:g}" if low is not None and high is not None else ""
        raise refuse(f"{name} must be a number{span}, got {_shown(raw)}")


def check_text_payload(raw: Any, name: str, block: Any) -> None:
    """A text input must be one string (a JSON list is not turned into text)."""
    if raw is not None and not isinstance(raw, str):
        hint = getattr(block, "payload_hint", "a string")
        raise refuse(f"{name} must be {hint}, got a {type(raw).__name__}")


def answers_as_toast(fn: Any) -> bool:
    """True for the page's own queued events (not in the API): their errors become a toast."""
    return getattr(fn, "api_visibility", "public") == "private" and bool(getattr(fn, "queue", 0))


def _input_names(block_fn: Any, n: int) -> list[str]:
    """The API parameter names of an event's inputs (its function's first parameters)."""
    try:
        params = [p.name for p in inspect.signature(block_fn.fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return (params + [f"input {i}" for i in range(len(params), n)])[:n]


class GuardedBlocks(gr.Blocks):
    """gr.Blocks whose events check the raw API payload of each input first (see module doc),
    and whose queued events refuse to start after waiting more than `max_wait_s` seconds.

    Args:
        max_wait_s: the wait limit of queued events (None: no limit). Needs the arrival stamp
            of `zegformer.faces.web_guard.GuardMiddleware` (without it there is no limit).
        **kwargs: gr.Blocks' own.
    """

    def __init__(self, *args: Any, max_wait_s: float | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.max_wait_s = max_wait_s

    async def process_api(self, block_fn: Any, inputs: list[Any], state: Any = None,
                          request: Any = None, *args: Any, **kwargs: Any) -> dict[str, Any]:
        fn = self.fns[block_fn] if isinstance(block_fn, int) else block_fn
        try:
            self._check_wait(fn, request)
            return await super().process_api(fn, inputs, state, request, *args, **kwargs)
        except Exception as e:  # noqa: BLE001 - answered as a toast on the page, else re-raised
            event_id = kwargs.get("event_id", args[2] if len(args) > 2 else None)
            if not answers_as_toast(fn) or event_id is None or self._queue is None:
                raise
            return await self._toast_instead(fn, e, event_id, state)

    def _check_wait(self, fn: Any, request: Any) -> None:
        first = request[0] if isinstance(request, list) and request else request
        waited = waited_s(first) if self.max_wait_s is not None and fn.queue else None
        if waited is not None and waited > self.max_wait_s:
            raise gr.Error(f"The server is busy: this request waited {waited:.0f} s for its "
                           f"turn (at most {self.max_wait_s:g} s) and was not run. Try again "
                           "in a minute.", title="Busy", print_exception=False)

    async def _toast_instead(self, fn: Any, error: Exception, event_id: str,
                             state: Any) -> dict[str, Any]:
        """One error toast for the page, and every output left as it was (gr.skip())."""
        if isinstance(error, gr.Error):
            message, title = error.message, error.title or "Error"
        else:  # not a message for visitors: the details go to the server log
            log.exception("page event %s failed", getattr(fn, "name", "?"), exc_info=error)
            message, title = (f"Something went wrong on the server ({type(error).__name__}); "
                              "try again, or with another image."), "Error"
        self._queue.log_message(event_id=event_id, log=message, title=title,
                                level="error", duration=TOAST_S, visible=True)  # type: ignore
        # one skip() for all outputs (Gradio spreads it; a list would be one output's value)
        data = await self.postprocess_data(fn, gr.skip() if fn.outputs else [], state)
        return {"data": data, "is_generating": False, "iterator": None, "duration": 0.0,
                "average_duration": None, "render_config": None, "changed_state_ids": [],
                "used_cache": None}

    async def preprocess_data(self, block_fn: Any, inputs: list[Any], state: Any,
                              explicit_call: bool = False) -> Any:
        names = _input_names(block_fn, len(block_fn.inputs))
        for i, (block, raw) in enumerate(zip(block_fn.inputs, inputs)):
            if i in getattr(block_fn, "component_prop_inputs", ()):
                continue
            if isinstance(block, (gr.Image, gr.File)):
                check_image_payload(raw, names[i])
            elif isinstance(block, (gr.Slider, gr.Number)):
                check_number_payload(raw, names[i], block)
            elif isinstance(block, gr.Textbox):
                check_text_payload(raw, names[i], block)
        try:
            return await super().preprocess_data(block_fn, inputs, state, explicit_call)
        except InvalidPathError:  # a path this check let through, which Gradio refuses
            raise refuse(f"a file in this request was not uploaded to this app; {UPLOAD_HINT}"
                         ) from None

"""What the Space does at the HTTP level and on disk to stay safe in public (no Gradio import).

- `GuardMiddleware`, a plain ASGI middleware around the app Gradio builds:
  * refuses `/gradio_api/file=<URL>` and `/proxy=` routes (Gradio would fetch the URL itself);
  * caps one upload request at `max_upload_files` files and `max_upload_bytes` bytes, before
    Gradio writes them to disk (Content-Length first, then counting as the body streams in),
    and any other request body at `max_body_bytes`;
  * adds `X-Content-Type-Options: nosniff` and `Content-Security-Policy: frame-ancestors ...`
    to every answer (Spaces show the app in an iframe on huggingface.co, so that is allowed);
  * stamps each request with its arrival time, which `waited_s` turns into the time a queued
    request waited before its callback started.
- `OutputStore`: one fresh folder per request under a root inside Gradio's cache, and a sweep
  that deletes folders older than `max_age_s` without following symbolic links.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import time
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

RECEIVED_AT = "zegformer_received_at"  # key in the ASGI scope's "state": time.monotonic()
DEFAULT_FRAME_ANCESTORS = "'self' https://huggingface.co https://*.hf.space"
# `file=` followed by a URL scheme (also percent-encoded: Gradio decodes the path first), or
# Gradio's proxy route for apps loaded from elsewhere: both make the server fetch.
_FETCH_ROUTE = re.compile(r"/file=\s*[a-z][a-z0-9+.\-]*:|/proxy=", re.IGNORECASE)


class UploadRefused(Exception):
    """An upload went over a cap while its body was streaming in."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class GuardMiddleware:
    """ASGI middleware: fetch routes refused, uploads capped, security headers, arrival time.

    Args:
        app: the ASGI app (Gradio's FastAPI app; given by Starlette's `Middleware`).
        max_upload_files: files accepted in one upload request.
        max_upload_bytes: bytes accepted in one upload request (all files and form overhead).
        max_body_bytes: bytes accepted in the body of any other request (None: no cap).
        frame_ancestors: the CSP `frame-ancestors` sources that may show the app in a frame.
        upload_error: builds the exception raised into the upload handler when a cap is passed
            mid-stream (the app passes Gradio's own multipart error, so that Gradio deletes the
            partial files and answers with the message); default `UploadRefused`, answered here.
    """

    def __init__(self, app: ASGIApp, *, max_upload_files: int, max_upload_bytes: int,
                 max_body_bytes: int | None = None,
                 frame_ancestors: str = DEFAULT_FRAME_ANCESTORS,
                 upload_error: Callable[[int, str], Exception] = UploadRefused):
        self.app = app
        self.upload_error = upload_error
        self.max_files, self.max_bytes = int(max_upload_files), int(max_upload_bytes)
        self.max_body = None if max_body_bytes is None else int(max_body_bytes)
        self.headers = [(b"x-content-type-options", b"nosniff"),
                        (b"content-security-policy",
                         f"frame-ancestors {frame_ancestors}".encode("latin-1"))]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})[RECEIVED_AT] = time.monotonic()
        path = scope.get("path", "")
        if _FETCH_ROUTE.search(path) or _FETCH_ROUTE.search(_raw_path(scope)):
            await self._refuse(send, 403, "This app does not fetch outside URLs.")
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.headers if k not in names]
                message = dict(message, headers=list(message.get("headers", [])) + extra)
            await send(message)

        if scope.get("method") == "POST" and path.rstrip("/").endswith("/upload"):
            refusal = self._check_length(scope, self.max_bytes, "Upload")
            if refusal:
                await self._refuse(send, 413, refusal)
                return
            receive = self._counting(scope, receive)
        elif self.max_body is not None and scope.get("method") in ("POST", "PUT", "PATCH"):
            refusal = self._check_length(scope, self.max_body, "Request")
            if refusal:
                await self._refuse(send, 413, refusal)
                return
            receive = self._capped(receive, self.max_body)
        try:
            await self.app(scope, receive, send_with_headers)
        except UploadRefused as e:
            if started:
                raise
            await self._refuse(send, e.status, e.message)

    @staticmethod
    def _check_length(scope: Scope, cap: int, what: str) -> str | None:
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > cap:
            return f"{what} too large ({_mb(int(length))} in one request; at most {_mb(cap)})."
        return None

    @staticmethod
    def _capped(receive: Receive, cap: int) -> Receive:
        """`receive` that stops a body (without Content-Length) growing past `cap` bytes."""
        seen = [0]

        async def capped() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > cap:
                    raise UploadRefused(413, f"Request too large (over {_mb(cap)}).")
            return message

        return capped

    def _counting(self, scope: Scope, receive: Receive) -> Receive:
        """`receive` that counts bytes and multipart parts, and stops over a cap."""
        kind = _header(scope, b"content-type") or ""
        match = re.search(r'boundary="?([^";]+)"?', kind)
        marker = b"--" + match.group(1).encode("latin-1") if match else None
        seen = {"bytes": 0, "parts": 0, "tail": b""}

        async def counted() -> Message:
            message = await receive()
            if message["type"] != "http.request":
                return message
            body = message.get("body", b"")
            seen["bytes"] += len(body)
            if seen["bytes"] > self.max_bytes:
                raise self.upload_error(413, "Upload too large: over the maximum allowed size "
                                        f"of {_mb(self.max_bytes)} in one request.")
            if marker:
                window = seen["tail"] + body
                seen["parts"] += window.count(marker) - seen["tail"].count(marker)
                seen["tail"] = window[-(len(marker) - 1):] if len(marker) > 1 else b""
                if seen["parts"] - 1 > self.max_files:  # the last marker closes the form
                    raise self.upload_error(413, "Too many files in one upload: over the "
                                            f"maximum allowed size of {self.max_files} files.")
            return message

        return counted

    async def _refuse(self, send: Send, status: int, message: str) -> None:
        body = message.encode("utf-8")
        headers = [(b"content-type", b"text/plain; charset=utf-8"),
                   (b"content-length", str(len(body)).encode())] + self.headers
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _mb(n: int) -> str:
    return f"{n / 1e6:.3g} MB"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _raw_path(scope: Scope) -> str:
    raw = scope.get("raw_path") or b""
    from urllib.parse import unquote

    return unquote(raw.decode("latin-1")) if raw else ""


def waited_s(request: Any) -> float | None:
    """Seconds since the HTTP request behind a Gradio callback reached the server (its arrival
    time stamped by GuardMiddleware), or None when it was not stamped (no middleware)."""
    inner = getattr(request, "request", None)
    scope = getattr(inner, "scope", None)
    if not isinstance(scope, dict):
        return None
    received = scope.get("state", {}).get(RECEIVED_AT)
    return None if received is None else time.monotonic() - received


class OutputStore:
    """Per-request output folders under `root`, each removed `max_age_s` after it was made.

    The root is made private (0700) and must be a real folder, not a symbolic link; the sweep
    looks at the root's own entries only: folders and files older than `max_age_s` are deleted
    (`shutil.rmtree` does not follow links inside them), links are unlinked, never followed.
    A folder's age counts from the time in its name (`<unix seconds>-<random hex>`), as
    deleting files inside it (Gradio's own cache clean-up) changes its modification time.
    """

    def __init__(self, root: Path, max_age_s: float):
        self.root = Path(root)
        self.max_age_s = float(max_age_s)

    def _ensure_root(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(self.root)
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
            raise OSError(f"output folder {self.root} is a link or not a folder; refusing it")

    def new_dir(self) -> Path:
        """A fresh, empty folder for one request (old ones are swept first)."""
        self._ensure_root()
        self.sweep()
        out = self.root / f"{time.time():.0f}-{uuid.uuid4().hex}"
        out.mkdir(mode=0o700)
        return out

    @staticmethod
    def _made_at(entry: os.DirEntry) -> float:
        stamp = entry.name.split("-", 1)[0]
        if stamp.isdigit() and not entry.is_symlink():
            return float(stamp)
        return entry.stat(follow_symlinks=False).st_mtime

    def sweep(self, now: float | None = None) -> int:
        """Delete entries of the root older than max_age_s; returns how many were deleted."""
        try:
            info = os.lstat(self.root)
        except FileNotFoundError:
            return 0
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
            return 0  # never walk into a link put in place of the root
        now = time.time() if now is None else now
        removed = 0
        with os.scandir(self.root) as entries:
            for entry in entries:
                try:
                    age = now - self._made_at(entry)
                    if age <= self.max_age_s:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path)
                    else:  # a file or a link: unlink it, do not follow it
                        os.unlink(entry.path)
                    removed += 1
                except OSError:  # removed by a concurrent sweep, or unreadable
                    continue
        return removed

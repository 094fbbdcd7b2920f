"""Hardening against hostile input (issue 11): bombs, URLs, odd image modes, YAML aliases.

Library-level cases first (no server); the Space's own cases follow further down.
"""
from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from image_bombs import grey_png_bomb, write_grey_png_bomb
from zegformer.errors import ConfigError, ImageError
from zegformer.inference.image import MAX_IMAGE_PIXELS, load_image
from zegformer.loading.config import MAX_CONFIG_DEPTH, load_config

ROOT = Path(__file__).resolve().parent.parent
BOMB_SECONDS = 2.0  # a bomb is refused within this time ...
BOMB_EXTRA_RSS_MB = 50  # ... raising the process's peak RSS by less (decoding needs 361 MB)


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    """19000 x 19000 8-bit grey PNG: 361 MP in about 351 KB."""
    path = write_grey_png_bomb(tmp_path_factory.mktemp("bomb") / "bomb.png")
    assert 300_000 < path.stat().st_size < 400_000
    return path


class NetworkGuard:
    """Records every name lookup and connection this process tries to a non-loopback address
    (and refuses them), so a test can prove nothing outside was contacted."""

    def __init__(self, monkeypatch):
        self.outside: list[str] = []
        real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

        def getaddrinfo(host, *args, **kwargs):
            if not _loopback(host):
                self.outside.append(f"getaddrinfo {host}")
                raise socket.gaierror(f"test network guard: {host} is not loopback")
            return real_getaddrinfo(host, *args, **kwargs)

        def connect(sock, address):
            host = address[0] if isinstance(address, tuple) else address
            if sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(host):
                self.outside.append(f"connect {address}")
                raise OSError(f"test network guard: {address} is not loopback")
            return real_connect(sock, address)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        monkeypatch.setattr(socket.socket, "connect", connect)


def _loopback(host) -> bool:
    host = host.decode() if isinstance(host, bytes) else str(host)
    return host in ("localhost", "127.0.0.1", "::1") or host.startswith("127.")


# ----------------------------------------------------------------------------- YAML
def _billion_laughs(path: Path) -> Path:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_yaml_alias_bomb_is_refused_fast(tmp_path):
    path = _billion_laughs(tmp_path / "laughs.yaml")
    assert path.stat().st_size < 1024  # 9**9 = 387 million strings once expanded
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"anchors and aliases .* not allowed"):
        load_config(path)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("text, message", [
    ("MODEL: &m {WEIGHTS: x}\n", "anchors and aliases"),  # an anchor alone is refused too
    ("MODEL:\n  WEIGHTS: *undefined\n", "anchors and aliases"),
    ("a: " + "[" * (MAX_CONFIG_DEPTH + 5) + "]" * (MAX_CONFIG_DEPTH + 5) + "\n", "nested deeper"),
    ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper"),  # not a RecursionError
    ("MODEL: [unclosed\n", "not valid YAML"),
])
def test_hostile_yaml_gets_a_one_line_config_error(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as err:
        load_config(path)
    assert "\n" not in str(err.value) or message == "not valid YAML"
    assert str(path) in str(err.value)


def test_huge_config_file_is_refused_before_parsing(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("# " + "x" * 1_100_000 + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="too large"):
        load_config(path)


def test_inherited_config_without_aliases_still_loads():
    cfg = load_config("zegformer_R101_bs32_60k_vit16_coco-stuff_gzss_eval")
    assert cfg.MODEL.RESNETS.DEPTH == 101  # through the _BASE_ chain


# ----------------------------------------------------------------------------- image bombs
def test_bomb_is_refused_from_its_header_in_every_form(bomb):
    forms = {
        "path": bomb, "str": str(bomb), "bytes": bomb.read_bytes(),
        "file object": open(bomb, "rb"), "bytesio": io.BytesIO(bomb.read_bytes()),
    }
    try:
        for name, source in forms.items():
            start = time.perf_counter()
            with pytest.raises(ImageError, match=r"too large") as err:
                load_image(source)
            assert time.perf_counter() - start < BOMB_SECONDS, name
            assert "\n" not in str(err.value)
    finally:
        forms["file object"].close()


def test_lazily_opened_pil_image_is_checked_before_decoding():
    big = Image.new("L", (8000, 6000))  # 48 MP: over the cap, under Pillow's own limit
    buffer = io.BytesIO()
    big.save(buffer, format="PNG")
    lazy = Image.open(io.BytesIO(buffer.getvalue()))
    with pytest.raises(ImageError, match=r"8000 x 6000 pixels \(48 MP\) is too large; at most 40"):
        load_image(lazy)
    assert lazy.tile  # the decoder's work list is still there: nothing was decoded


_MEASURE = """
import re, sys, time
from zegformer.errors import ImageError
from zegformer.inference.image import load_image

def peak_mb():  # VmHWM: this process's own peak RSS (ru_maxrss would count the parent's)
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) / 1024

before = peak_mb()
start = time.perf_counter()
try:
    load_image(sys.argv[1], **({"max_pixels": None} if sys.argv[2] == "none" else {}))
    refused = 0
except ImageError:
    refused = 1
print(refused, time.perf_counter() - start, peak_mb() - before)
"""


def _load_in_fresh_process(path: Path, max_pixels: str = "default") -> tuple[bool, float, float]:
    """(refused, seconds, peak RSS growth in MB) of load_image(path) in a new interpreter."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(path), max_pixels], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    refused, seconds, grown = out.stdout.split()
    return refused == "1", float(seconds), float(grown)


@pytest.mark.parametrize("side", [19000, 9400])  # Pillow's own check refuses the first only
def test_bomb_refusal_keeps_the_process_small(tmp_path, side):
    refused, seconds, grown_mb = _load_in_fresh_process(
        write_grey_png_bomb(tmp_path / "bomb.png", side))
    assert refused and seconds < BOMB_SECONDS
    assert grown_mb < BOMB_EXTRA_RSS_MB


def test_the_rss_measurement_sees_a_decoded_bomb(tmp_path):
    """Control: without the cap a 49 MP bomb is decoded, and the peak grows by far more."""
    refused, _, grown_mb = _load_in_fresh_process(
        write_grey_png_bomb(tmp_path / "bomb.png", 7000), max_pixels="none")
    assert not refused and grown_mb > 3 * BOMB_EXTRA_RSS_MB


def test_arrays_over_the_cap_are_refused_and_the_cap_is_adjustable():
    big = np.zeros((7000, 7000, 3), np.uint8)  # 49 MP; np.zeros is lazily allocated
    with pytest.raises(ImageError, match=r"49 MP\) is too large"):
        load_image(big)
    assert load_image(big, max_pixels=None).shape == (7000, 7000, 3)
    with pytest.raises(ImageError, match="at most 0.01 MP"):
        load_image(np.zeros((200, 200, 3), np.uint8), max_pixels=10_000)
    side = int(MAX_IMAGE_PIXELS ** 0.5)
    assert load_image(np.zeros((side, side), np.uint8)).shape == (side, side, 3)


def test_formats_outside_the_list_are_refused_unopened(tmp_path):
    eps = tmp_path / "drawing.eps"  # Pillow's EPS plugin would hand this to Ghostscript
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with pytest.raises(ImageError, match="not a readable image .accepted formats: PNG, JPEG"):
        load_image(eps)


# ----------------------------------------------------------------------------- no fetches
@pytest.mark.parametrize("url", [
    "http://example.com/cat.png", "https://203.0.113.7/cat.png", " HTTPS://example.com/x",
    "ftp://example.com/cat.png", "file:///etc/passwd", "data:image/png;base64,iVBORw0KGgo=",
    "s3://bucket/key.png",
])
def test_urls_are_refused_never_fetched(monkeypatch, url):
    guard = NetworkGuard(monkeypatch)
    with pytest.raises(ImageError, match="is a URL; images are only read from local files"):
        load_image(url)
    assert guard.outside == []


def test_the_guard_would_see_an_outside_lookup(monkeypatch):
    guard = NetworkGuard(monkeypatch)
    with pytest.raises(OSError):
        socket.getaddrinfo("example.com", 80)
    assert guard.outside == ["getaddrinfo example.com"]


# ----------------------------------------------------------------------------- odd modes
def _png_bytes(im: Image.Image, **save) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, format="PNG", **save)
    return buffer.getvalue()


def test_16_bit_png_keeps_its_grey_levels():
    grey = np.array([[0, 32768], [65535, 257 * 100]], np.uint16).repeat(4, 0).repeat(4, 1)
    data = _png_bytes(Image.fromarray(grey))
    assert Image.open(io.BytesIO(data)).mode in ("I;16", "I")
    out = load_image(data)
    assert out.shape == (8, 8, 3)
    assert out[0, 0].tolist() == [0] * 3 and out[0, 4].tolist() == [127] * 3  # not white
    assert out[4, 0].tolist() == [255] * 3 and out[4, 4].tolist() == [100] * 3


def test_palette_with_transparency_becomes_white_where_transparent():
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.paste(1, (0, 0, 4, 8))
    data = _png_bytes(pal, transparency=0)  # palette entry 0 (red) is transparent
    assert Image.open(io.BytesIO(data)).info.get("transparency") == 0
    out = load_image(data)
    assert out[0, 0].tolist() == [0, 0, 255]  # opaque blue stays
    assert out[0, 7].tolist() == [255, 255, 255]  # transparent red -> white, not black or red


def test_rgba_png_is_composited_on_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :2, 3] = 255
    rgba[:, 2:, 3] = 128
    out = load_image(_png_bytes(Image.fromarray(rgba, "RGBA")))
    assert out[0, 0].tolist() == [200, 0, 0]
    # 200 * 128/255 + 255 * 127/255 = 227.4 -> 227; 0 -> 127.
    assert out[0, 3].tolist() == [227, 127, 127]


def test_image_errors_are_one_line(tmp_path):
    cases = [tmp_path / "missing.png", b"not an image at all", io.BytesIO(b"\x89PNG\r\n\x1a\n")]
    for source in cases:
        with pytest.raises(ImageError) as err:
            load_image(source)
        assert "\n" not in str(err.value) and "Traceback" not in str(err.value)
    json.dumps(str(err.value))  # plain text


# ----------------------------------------------------------------------------- class text
@pytest.mark.parametrize("classes, message", [
    ("a, " * 1_700_000, "too long .5100000 characters; at most 50000"),  # 5 MB
    ("x" * 5_000_000, "too long .5000000 characters"),
    (["cat"] * 2_000_000, "too many classes .2000000."),
    (", ".join(f"c{i}" for i in range(6000)), r"too many classes \(6000\); at most 1000"),
])
def test_huge_class_lists_are_refused_before_parsing(classes, message):
    from zegformer.errors import VocabularyError
    from zegformer.text import parse_classes

    start = time.perf_counter()
    with pytest.raises(VocabularyError, match=message):
        parse_classes(classes)
    assert time.perf_counter() - start < 0.5  # the whole 5 MB string parsed took 51 s


def test_the_largest_preset_fits_the_text_cap():
    from zegformer.text import MAX_VOCABULARY_TEXT, parse_classes

    names = [f"class number {i} | synonym {i}" for i in range(1000)]
    text = ", ".join(names)
    assert len(text) < MAX_VOCABULARY_TEXT and parse_classes(text) == names


# ----------------------------------------------------------------------------- HTTP guard
def _asgi_call(guard_kwargs: dict, method: str, path: str, headers: list, chunks: list[bytes]):
    """Drive GuardMiddleware around a stub app that reads the whole body; returns
    (status, headers, body, bytes the stub app read)."""
    import asyncio

    from zegformer.faces.web_guard import GuardMiddleware

    read = []

    async def stub(scope, receive, send):
        while True:
            message = await receive()
            read.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                for i, c in enumerate(chunks)]
    sent = []

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
             "headers": headers}
    asyncio.run(GuardMiddleware(stub, **guard_kwargs)(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body.decode(), sum(map(len, read))


def _multipart(n_files: int, size: int, boundary: str = "zzBOUNDARYzz") -> bytes:
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="f{i}.png"'
             f"\r\nContent-Type: image/png\r\n\r\n".encode() + b"x" * size + b"\r\n"
             for i in range(n_files)]
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


GUARD = dict(max_upload_files=2, max_upload_bytes=100_000)
FORM = [(b"content-type", b"multipart/form-data; boundary=zzBOUNDARYzz")]


def test_guard_adds_security_headers_and_passes_normal_requests():
    status, headers, body, _ = _asgi_call(GUARD, "GET", "/", [], [b""])
    assert status == 200 and body == "ok"
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert headers[b"content-security-policy"].startswith(b"frame-ancestors 'self'")


@pytest.mark.parametrize("path", ["/gradio_api/file=http://example.com/x.png",
                                  "/gradio_api/file=HTTPS://203.0.113.7/", "/file=ftp://x/y",
                                  "/gradio_api/proxy=https://example.com/"])
def test_guard_refuses_fetch_routes(path):
    status, headers, body, _ = _asgi_call(GUARD, "GET", path, [], [b""])
    assert status == 403 and body == "This app does not fetch outside URLs."
    assert headers[b"x-content-type-options"] == b"nosniff"


def test_guard_caps_upload_size_from_content_length_before_reading():
    form = _multipart(1, 200_000)
    length = [(b"content-length", str(len(form)).encode())]
    status, _, body, read = _asgi_call(GUARD, "POST", "/gradio_api/upload", FORM + length, [form])
    assert status == 413 and read == 0
    assert body == "Upload too large (0.2 MB in one request; at most 0.1 MB)."


def test_guard_caps_streamed_uploads_by_bytes_and_by_file_count():
    big = _multipart(1, 150_000)
    chunks = [big[i:i + 4096] for i in range(0, len(big), 4096)]
    status, _, body, read = _asgi_call(GUARD, "POST", "/gradio_api/upload", FORM, chunks)
    assert status == 413 and "maximum allowed size" in body and read <= GUARD["max_upload_bytes"]
    many = _multipart(5, 10)
    chunks = [many[i:i + 7] for i in range(0, len(many), 7)]  # markers split across chunks
    status, _, body, _ = _asgi_call(GUARD, "POST", "/gradio_api/upload", FORM, chunks)
    assert status == 413 and "Too many files" in body
    two = _multipart(2, 1000)
    status, _, body, read = _asgi_call(GUARD, "POST", "/gradio_api/upload", FORM,
                                       [two[i:i + 5] for i in range(0, len(two), 5)])
    assert status == 200 and read == len(two)


def test_output_store_sweeps_old_folders_without_following_links(tmp_path):
    from zegformer.faces.web_guard import OutputStore

    victim = tmp_path / "victim"
    (victim / "keep").mkdir(parents=True)
    (victim / "keep" / "precious.txt").write_text("do not delete")
    store = OutputStore(tmp_path / "outputs", max_age_s=60)
    made, fresh = store.new_dir(), store.new_dir()
    old = made.with_name(f"{time.time() - 120:.0f}-{made.name.split('-')[1]}")  # 2 min ago
    made.rename(old)
    (old / "result.json").write_text("{}")
    (old / "link-to-victim").symlink_to(victim)
    (store.root / "root-link").symlink_to(victim)
    os_utime_nofollow(store.root / "root-link", time.time() - 120)
    assert store.sweep() == 2
    assert not old.exists() and fresh.is_dir()
    assert (victim / "keep" / "precious.txt").read_text() == "do not delete"
    # A link put in place of the root itself is refused, and never swept through.
    linked = OutputStore(tmp_path / "root-is-link", max_age_s=0)
    linked.root.symlink_to(victim)
    with pytest.raises(OSError, match="is a link"):
        linked.new_dir()
    assert linked.sweep(now=time.time() + 3600) == 0 and (victim / "keep").is_dir()


def os_utime_nofollow(path: Path, when: float) -> None:
    import os

    os.utime(path, (when, when), follow_symlinks=False)


def test_guard_caps_other_request_bodies():
    capped = dict(GUARD, max_body_bytes=1000)
    length = [(b"content-length", b"5000"), (b"content-type", b"application/json")]
    status, _, body, read = _asgi_call(capped, "POST", "/gradio_api/queue/join", length,
                                       [b"x" * 5000])
    assert status == 413 and body.startswith("Request too large (0.005 MB") and read == 0
    status, _, body, _ = _asgi_call(capped, "POST", "/gradio_api/queue/join", [],
                                    [b"x" * 600, b"x" * 600])
    assert status == 413 and body == "Request too large (over 0.001 MB)."
    status, _, _, read = _asgi_call(capped, "POST", "/gradio_api/queue/join", [], [b"x" * 900])
    assert status == 200 and read == 900


# ----------------------------------------------------------------------------- the Space
# A real server on 127.0.0.1 (in this process, so a socket guard sees every lookup it makes),
# called with gradio_client and with raw HTTP (httpx, 127.0.0.1 only).
OUTPUT_AGE_S = 6  # ZEGFORMER_OUTPUT_MAX_AGE_S for the test server (default 600)
WAIT_LIMIT_S = 4  # ZEGFORMER_MAX_WAIT_S for the test server (default 120)
SERVER_RSS_GROWTH_MB = 150  # refusing the bomb raises the server's peak RSS by less than this
DISK_AFTER_50_MB = 3  # files in Gradio's cache during 50 small requests (about 50 KB each)
LEFT_MB = 0.05  # after the clean-up interval: at most the one re-sent upload (18 KB) is left
EXAMPLE = ROOT / "examples" / "cat.jpg"


class GatedPredictor:
    """The tiny predictor, with a gate a test can close to hold a request inside the model."""

    def __init__(self, inner):
        self._inner = inner
        self.gate, self.inside = threading.Event(), threading.Event()
        self.gate.set()

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def predict(self, *args, **kwargs):
        self.inside.set()
        assert self.gate.wait(120), "gate never opened"
        return self._inner.predict(*args, **kwargs)


@dataclass
class Space:
    url: str
    client: Any
    predictor: GatedPredictor
    cache: Path
    guard: NetworkGuard
    examples: set[Path]  # Gradio's copies of the example images, kept while it runs
    quick: Any  # a second client that leaves the outputs on the server (their paths come back)
    small: Path  # a 96 x 64 PNG: a cheap good request


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def space(tmp_path_factory, tiny_predictor):
    patch = pytest.MonkeyPatch()
    cache = tmp_path_factory.mktemp("gradio_cache")
    patch.setenv("GRADIO_TEMP_DIR", str(cache))
    patch.setenv("ZEGFORMER_OUTPUT_MAX_AGE_S", str(OUTPUT_AGE_S))
    patch.setenv("ZEGFORMER_MAX_WAIT_S", str(WAIT_LIMIT_S))
    guard = NetworkGuard(patch)  # from before start-up: telemetry would show here
    import app
    from gradio_client import Client

    predictor = GatedPredictor(tiny_predictor)
    demo = app.build_demo(predictor)
    port = _free_port()
    app.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
               quiet=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        client = Client(url, verbose=False,
                        download_files=str(tmp_path_factory.mktemp("downloads")))
        examples = {p for p in cache.rglob("*") if p.is_file()}
        small = tmp_path_factory.mktemp("small") / "small.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 96, 3), np.uint8)).save(
            small)
        quick = Client(url, verbose=False, download_files=False)
        yield Space(url, client, predictor, cache, guard, examples, quick, small)
    finally:
        demo.close()
        patch.undo()


def segment(space: Space, image: Any, classes: Any = "cat, wall", mode: str = "decoupled",
            threshold: Any = 0.0, opacity: Any = 0.5) -> dict:
    """/segment through gradio_client; a Path is uploaded, anything else is sent as it is."""
    from gradio_client import handle_file

    payload = handle_file(str(image)) if isinstance(image, Path) else image
    out = space.client.predict(payload, classes, mode, threshold, opacity, api_name="/segment")
    names = ["confidences", "table", "disagreement", "files", "result", "status", "parsed"]
    return dict(zip(names, out))


def call_raw(space: Space, data: list, timeout: float = 60) -> tuple[str, str]:
    """/segment through Gradio's plain HTTP API (POST, then read the event stream): the
    ("complete" | "error", data) of the last event."""
    import httpx

    with httpx.Client(base_url=space.url, timeout=timeout) as http:
        answer = http.post("gradio_api/call/segment", json={"data": data})
        assert answer.status_code == 200, answer.text
        event_id = answer.json()["event_id"]
        kind, payload = None, None
        with http.stream("GET", f"gradio_api/call/segment/{event_id}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    kind = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and kind in ("complete", "error"):
                    payload = line.split(":", 1)[1].strip()
                    break
    return kind, payload


def quick_segment(space: Space, classes: str = "cat, wall") -> tuple:
    """/segment on the small PNG, the outputs left on the server (FileData with their paths)."""
    from gradio_client import handle_file

    return space.quick.predict(handle_file(str(space.small)), classes, "decoupled", 0.0, 0.5,
                               api_name="/segment")


def good_request_works(space: Space) -> None:
    assert [c["name"] for c in quick_segment(space)[4]["classes"]] == ["cat", "wall"]


def _upload(space: Space, path: Path) -> dict:
    """Upload a file as the page does; the FileData payload that names it."""
    import httpx

    answer = httpx.post(space.url + "gradio_api/upload",
                        files=[("files", (path.name, path.read_bytes(), "image/png"))])
    assert answer.status_code == 200, answer.text
    return {"path": answer.json()[0], "meta": {"_type": "gradio.FileData"}}


SERVER_PATH = {"path": str(EXAMPLE), "meta": {"_type": "gradio.FileData"}}
URL_FILE = {"path": "http://example.com/cat.png", "meta": {"_type": "gradio.FileData"}}
# (image, classes, threshold, opacity) sent raw -> the one line the caller gets
RAW_CASES = [
    ("http://example.com/cat.png", "cat", 0.0, 0.5, "is a URL; this app never fetches URLs"),
    (URL_FILE, "cat", 0.0, 0.5, "is a URL; this app never fetches URLs"),
    ("/etc/passwd", "cat", 0.0, 0.5, "image must be an uploaded file, not the text '/etc/passwd'"),
    (SERVER_PATH, "cat", 0.0, 0.5, "was not uploaded to this app"),
    (["x"], "cat", 0.0, 0.5, "image must be an uploaded file, got a list"),
    ("upload", "cat", "abc", 0.5, "threshold must be a number between 0 and 1, got 'abc'"),
    ("upload", "cat", None, 0.5, "threshold must be a number between 0 and 1, got None"),
    ("upload", "cat", 0.0, "x", "opacity must be a number between 0 and 1, got 'x'"),
    ("upload", ["cat", "dog"], 0.0, 0.5, "classes must be one comma-separated string"),
    ("upload", "cat, " * 1_000_000, 0.0, 0.5, "class list is too long (5000000 characters"),
    ("upload", "x`<img src=x onerror=alert(1)>`y, X`<img src=x onerror=alert(1)>`Y", 0.0, 0.5,
     "is listed twice"),
]


@pytest.mark.parametrize("image, classes, threshold, opacity, message", RAW_CASES,
                         ids=["url", "url-file", "path", "server-file", "list", "threshold-abc",
                              "threshold-null", "opacity-x", "classes-list", "classes-5mb",
                              "markup"])
def test_bad_input_over_raw_http_gets_one_clear_line(space, image, classes, threshold, opacity,
                                                     message):
    if image == "upload":
        image = _upload(space, EXAMPLE)
    start = time.perf_counter()
    kind, payload = call_raw(space, [image, classes, "decoupled", threshold, opacity])
    error = json.loads(payload)
    assert kind == "error" and isinstance(error, dict), payload
    assert message in error["error"] and "\n" not in error["error"], payload
    assert time.perf_counter() - start < 10  # no model time spent on a refused request
    assert "<img" not in payload and "Traceback" not in payload
    good_request_works(space)


@pytest.mark.parametrize("image, classes, threshold, opacity, message", [
    ("http://example.com/cat.png", "cat", 0.0, 0.5, "is a URL; this app never fetches URLs"),
    (URL_FILE, "cat", 0.0, 0.5, "is a URL; this app never fetches URLs"),
    (EXAMPLE, ["cat", "dog"], 0.0, 0.5, "classes must be one comma-separated string"),
    (EXAMPLE, "cat", "abc", 0.5, "threshold must be a number between 0 and 1, got 'abc'"),
    (EXAMPLE, "cat", 0.0, "x", "opacity must be a number between 0 and 1, got 'x'"),
], ids=["url", "url-file", "classes-list", "threshold-abc", "opacity-x"])
def test_bad_input_through_gradio_client_gets_one_clear_line(space, image, classes, threshold,
                                                             opacity, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as err:
        segment(space, image, classes, threshold=threshold, opacity=opacity)
    assert message in str(err.value) and "\n" not in str(err.value)
    good_request_works(space)


def _vm_kb(field: str) -> int:
    import re

    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


def test_image_bomb_is_refused_fast_and_small(space, bomb, tmp_path):
    from gradio_client.exceptions import AppError

    good_request_works(space)  # warm: the first request's one-time costs are not the bomb's
    Path("/proc/self/clear_refs").write_text("5")  # reset this process's peak RSS (VmHWM)
    before = _vm_kb("VmRSS")
    start = time.perf_counter()
    with pytest.raises(AppError, match=r"too large .*at most 40 MP"):
        segment(space, bomb)
    assert time.perf_counter() - start < BOMB_SECONDS + 1  # + the 351 KB upload
    assert (_vm_kb("VmHWM") - before) / 1024 < SERVER_RSS_GROWTH_MB
    # 48 MP (under Pillow's own limit): refused from the header by the library's reader
    big = tmp_path / "48mp.png"
    big.write_bytes(grey_png_bomb(6900))
    with pytest.raises(AppError, match=r"6900 x 6900 pixels \(48 MP\) is too large"):
        segment(space, big)
    assert (_vm_kb("VmHWM") - before) / 1024 < SERVER_RSS_GROWTH_MB
    good_request_works(space)


def _png(tmp_path: Path, name: str, im: Image.Image, **save) -> Path:
    path = tmp_path / name
    im.save(path, format="PNG", **save)
    return path


def test_uploads_reach_the_library_with_their_original_pixels(space, tmp_path):
    """Opacity 0: the overlay is the image as the library read it (documented conversions)."""
    grey16 = Image.fromarray(np.full((48, 64), 32768, np.uint16))
    pal = Image.new("P", (64, 48), 0)
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.paste(1, (0, 0, 32, 48))
    rgba = np.zeros((48, 64, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 128
    cases = [
        (_png(tmp_path, "grey16.png", grey16), [127, 127, 127], [127, 127, 127]),  # not white
        (_png(tmp_path, "palette.png", pal, transparency=0), [0, 0, 255], [255, 255, 255]),
        (_png(tmp_path, "rgba.png", Image.fromarray(rgba, "RGBA")), [227, 127, 127],
         [227, 127, 127]),  # on white, not on black: 200 * 128/255 + 255 * 127/255
    ]
    for path, left, right in cases:
        out = segment(space, path, "thing", opacity=0.0)
        files = {Path(f).name: Path(f) for f in out["files"]}
        shown = np.asarray(Image.open(files["decoupled_overlay.webp"]).convert("RGB"))
        assert shown.shape == (48, 64, 3), path.name
        for got, want in ((shown[24, 4], left), (shown[24, 60], right)):  # lossy WebP: +-4
            assert np.abs(got.astype(int) - want).max() <= 4, (path.name, got.tolist(), want)


def test_http_level_limits_and_headers(space):
    import httpx

    with httpx.Client(base_url=space.url, timeout=60) as http:
        page = http.get("")
        assert page.status_code == 200
        assert page.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'self' https://huggingface.co" in \
            page.headers["content-security-policy"]
        for route in ["gradio_api/file=http://example.com/cat.png",
                      "gradio_api/file=https%3A%2F%2Fexample.com%2Fcat.png",
                      "gradio_api/proxy=http://example.com/"]:
            answer = http.get(route)
            assert answer.status_code == 403 and "does not fetch" in answer.text, route
        ten = [("files", (f"f{i}.png", b"x" * 20_000_000, "image/png")) for i in range(10)]
        answer = http.post("gradio_api/upload", files=ten)
        assert answer.status_code == 413 and "at most 26 MB" in answer.text
        three = [("files", (f"f{i}.png", b"x" * 1000, "image/png")) for i in range(3)]
        answer = http.post("gradio_api/upload", files=three)
        assert answer.status_code == 413 and "Too many files" in answer.text
        answer = http.post("gradio_api/call/segment", content=b"x" * 9_000_000,
                           headers={"content-type": "application/json"})
        assert answer.status_code == 413 and "Request too large" in answer.text
    assert not any(p.stat().st_size >= 1_000_000 for p in space.cache.rglob("*") if p.is_file())
    good_request_works(space)


def test_only_segment_is_in_the_api(space):
    api = space.client.view_api(print_info=False, return_format="dict")
    assert list(api["named_endpoints"]) == ["/segment"] and not api["unnamed_endpoints"]
    with pytest.raises(ValueError):
        space.client.predict("cat, dog", api_name="/describe_classes")


def test_a_request_that_waited_too_long_is_told_so(space):
    from gradio_client.exceptions import AppError
    from gradio_client import handle_file

    space.predictor.gate.clear()
    space.predictor.inside.clear()
    try:
        first = space.client.submit(handle_file(str(EXAMPLE)), "cat", "decoupled", 0.0, 0.5,
                                    api_name="/segment")
        assert space.predictor.inside.wait(60), "the first request never reached the model"
        second = space.client.submit(handle_file(str(EXAMPLE)), "cat", "decoupled", 0.0, 0.5,
                                     api_name="/segment")
        time.sleep(WAIT_LIMIT_S + 1)  # the second one waits behind the first, in the queue
    finally:
        space.predictor.gate.set()
    assert first.result(timeout=120)[4]["classes"][0]["name"] == "cat"
    with pytest.raises(AppError, match=rf"waited \d+ s for its turn \(at most {WAIT_LIMIT_S} s\)"):
        second.result(timeout=120)
    good_request_works(space)


def _cache_mb(space: Space) -> float:
    """MB of the files requests left in Gradio's cache (uploads, outputs, pictures shown).

    The server's clean-up runs meanwhile: a file listed and then deleted counts as gone."""
    total = 0
    for folder, _, names in os.walk(space.cache):  # os.walk skips folders removed meanwhile
        for name in names:
            p = Path(folder) / name
            if p in space.examples:
                continue
            try:
                total += p.stat().st_size
            except FileNotFoundError:
                pass
    return total / 1e6


def test_disk_use_is_bounded_and_drops_after_the_clean_up_interval(space):
    outputs = (space.cache / "zegformer-outputs").resolve()
    folders, peak = set(), 0.0
    for i in range(50):
        files = quick_segment(space, "noise, sky")[3]
        folders |= {Path(f["path"]).resolve().parent for f in files}  # as the server wrote them
        if i % 5 == 4:
            peak = max(peak, _cache_mb(space))
    assert len(folders) == 50 and all(f.parent == outputs for f in folders)  # one per request
    assert peak < DISK_AFTER_50_MB, peak  # an upper bound: old folders go while it runs
    deadline = time.monotonic() + 3 * OUTPUT_AGE_S + 30  # age + sweep period, on a busy box
    # Gradio's clean-up can lose track of an upload sent again with the same content (the same
    # small PNG here): at most that one file may stay; every output folder must go.
    while time.monotonic() < deadline and (_cache_mb(space) > LEFT_MB or any(outputs.iterdir())):
        time.sleep(0.5)
    assert _cache_mb(space) <= LEFT_MB and not any(outputs.iterdir())
    good_request_works(space)


def test_no_outside_address_was_contacted(space):
    """Last: start-up and every request above, and nothing outside 127.0.0.1 was looked up."""
    good_request_works(space)
    assert space.guard.outside == []

"""Hardening against hostile input (issue 11): bombs, URLs, odd image modes, YAML aliases.

Library-level cases first (no server); the Space's own cases follow further down.
"""
from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from image_bombs import write_grey_png_bomb
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
    old = store.new_dir()
    (old / "result.json").write_text("{}")
    (old / "link-to-victim").symlink_to(victim)
    (store.root / "root-link").symlink_to(victim)
    fresh = store.new_dir()
    past = time.time() - 120
    for p in (old, store.root / "root-link"):
        os_utime_nofollow(p, past)
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

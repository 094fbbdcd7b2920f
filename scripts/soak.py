"""Soak the Space: N requests through gradio_client, sampling the server's RSS and disk use.

    python scripts/soak.py                       # starts `app.py --random-weights` on 127.0.0.1
    python scripts/soak.py --requests 200 --clients 4 --mode both
    python scripts/soak.py --url http://127.0.0.1:7860/ --pid 1234 --watch /tmp/gradio

Started here, the app gets fresh GRADIO_TEMP_DIR and TMPDIR folders, so the disk figures are the
app's own files (Gradio's cache and the per-request outputs). Attached to a running app, pass its
--pid (for RSS) and the folders to --watch. Only 127.0.0.1 / localhost is accepted: this is a
load test of your own server, not of someone else's.

Prints p50 / p95 / max latency, errors, and the RSS and disk use at start, peak and end (also as
JSON with --json). Not a test: nothing is asserted; the README's Limits table quotes its output.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
MAX_REQUESTS = 2000  # bounds on one run, whatever the arguments say
MAX_SECONDS = 3600
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of `pid` and its children in MB (from /proc), 0 when it is gone."""
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += next(int(line.split()[1]) for line in status.splitlines()
                          if line.startswith("VmRSS:"))
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
            todo += [int(c) for c in children]
        except (OSError, StopIteration, ValueError):
            continue
    return total / 1024


def disk_mb(folders: list[Path]) -> float:
    """Bytes of the files under `folders` in MB (links not followed)."""
    total = 0
    for folder in folders:
        for base, _, names in os.walk(folder, followlinks=False):
            for name in names:
                try:
                    total += os.lstat(os.path.join(base, name)).st_size
                except OSError:
                    continue
    return total / 1e6


class Sampler(threading.Thread):
    """Samples RSS and disk every `every` seconds until stopped."""

    def __init__(self, pid: int | None, folders: list[Path], every: float = 0.5):
        super().__init__(daemon=True)
        self.pid, self.folders, self.every = pid, folders, every
        self.rss: list[float] = []
        self.disk: list[float] = []
        self.halt = threading.Event()

    def sample(self) -> None:
        if self.pid:
            self.rss.append(rss_mb(self.pid))
        self.disk.append(disk_mb(self.folders))

    def run(self) -> None:
        while not self.halt.is_set():
            self.sample()
            self.halt.wait(self.every)

    def stop(self) -> None:
        self.halt.set()
        self.join()
        self.sample()


def start_app(work: Path, port: int) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
               GRADIO_TEMP_DIR=str(work / "gradio"), TMPDIR=str(work / "tmp"),
               GRADIO_EXAMPLES_CACHE=str(work / "examples_cache"))
    for sub in ("gradio", "tmp"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    log = open(work / "app.log", "w")
    return subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--random-weights",
                             "--host", "127.0.0.1", "--port", str(port)],
                            cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def connect(url: str, proc: subprocess.Popen | None, downloads: Path, wait_s: float = 300):
    from gradio_client import Client

    deadline = time.monotonic() + wait_s
    while True:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the app exited with {proc.returncode}")
        try:
            return Client(url, verbose=False, download_files=str(downloads))
        except Exception:
            if time.monotonic() > deadline:
                raise SystemExit(f"no app answered at {url} within {wait_s:.0f} s") from None
            time.sleep(0.5)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="attach to this running app (127.0.0.1 only)")
    parser.add_argument("--pid", type=int, help="with --url: the app's process id, for RSS")
    parser.add_argument("--watch", nargs="*", type=Path, default=[],
                        help="with --url: folders whose disk use is sampled")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--clients", type=int, default=1, help="requests in flight at once")
    parser.add_argument("--max-seconds", type=float, default=600, help="stop sending after this")
    parser.add_argument("--image", type=Path, default=ROOT / "examples" / "cat.jpg")
    parser.add_argument("--classes", default="cat, dog, grass, sky, wall")
    parser.add_argument("--mode", default="decoupled", choices=["decoupled", "pixel", "both"])
    parser.add_argument("--settle", type=float, default=0.0,
                        help="seconds to keep sampling after the last request (clean-up)")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work folder (app log, downloads) instead of removing it")
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= MAX_REQUESTS:
        parser.error(f"--requests must be 1..{MAX_REQUESTS}")
    if not 1 <= args.clients <= 64:
        parser.error("--clients must be 1..64")
    max_seconds = min(args.max_seconds, MAX_SECONDS)

    from gradio_client import handle_file

    work = Path(tempfile.mkdtemp(prefix="zegformer-soak-"))
    proc = None
    if args.url:
        host = urlparse(args.url).hostname
        if host not in LOOPBACK:
            parser.error(f"--url must point at 127.0.0.1 or localhost, not {host!r}")
        url, pid, folders = args.url, args.pid, list(args.watch)
    else:
        port = free_port()
        proc = start_app(work, port)
        url, pid, folders = f"http://127.0.0.1:{port}/", proc.pid, [work / "gradio", work / "tmp"]
    try:
        t = time.perf_counter()
        client = connect(url, proc, work / "downloads")
        print(f"app at {url} ready after {time.perf_counter() - t:.1f} s; watching "
              f"{', '.join(map(str, folders)) or 'no folders'}")
        sampler = Sampler(pid, folders)
        sampler.sample()
        rss0, disk0 = (sampler.rss or [0.0])[0], sampler.disk[0]
        sampler.start()
        latencies, errors, lock = [], [], threading.Lock()
        stop_at = time.monotonic() + max_seconds

        def one(i: int) -> None:
            if time.monotonic() > stop_at:
                return
            start = time.perf_counter()
            try:
                client.predict(handle_file(str(args.image)), args.classes, args.mode, 0.0, 0.5,
                               api_name="/segment")
                with lock:
                    latencies.append(time.perf_counter() - start)
            except Exception as e:  # counted and shown; the soak goes on
                with lock:
                    errors.append(f"{type(e).__name__}: {str(e)[:120]}")

        t = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(one, range(args.requests)))
        elapsed = time.perf_counter() - t
        if args.settle > 0:
            time.sleep(args.settle)
        sampler.stop()
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)  # the group this script started, by its id
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    figures = {
        "requests": args.requests, "completed": len(latencies), "errors": len(errors),
        "clients": args.clients, "mode": args.mode, "seconds": round(elapsed, 1),
        "latency_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "latency_p95_s": round(percentile(latencies, 0.95), 3) if latencies else None,
        "latency_max_s": round(max(latencies), 3) if latencies else None,
        "rss_start_mb": round(rss0, 1), "rss_peak_mb": round(max(sampler.rss or [0.0]), 1),
        "rss_end_mb": round((sampler.rss or [0.0])[-1], 1),
        "disk_start_mb": round(disk0, 2), "disk_peak_mb": round(max(sampler.disk), 2),
        "disk_end_mb": round(sampler.disk[-1], 2),
    }
    print(f"{figures['completed']}/{args.requests} requests ({args.clients} client(s), "
          f"{args.mode}) in {elapsed:.1f} s, {len(errors)} errors")
    if latencies:
        print(f"latency: p50 {figures['latency_p50_s']:.2f} s, p95 {figures['latency_p95_s']:.2f}"
              f" s, max {figures['latency_max_s']:.2f} s")
    if pid:
        print(f"server RSS: start {rss0:.0f} MB, peak {figures['rss_peak_mb']:.0f} MB, "
              f"end {figures['rss_end_mb']:.0f} MB")
    print(f"disk: start {disk0:.2f} MB, peak {figures['disk_peak_mb']:.2f} MB, "
          f"end {figures['disk_end_mb']:.2f} MB")
    for e in errors[:5]:
        print("  error:", e)
    if args.json:
        print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()

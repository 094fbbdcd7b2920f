"""Text embeddings on disk: reuse across processes, concurrent writers, corrupt files, the size cap.

Every test points ZEGFORMER_CACHE at its own tmp_path (conftest.py points the whole suite at a
throw-away folder as well).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from zegformer import load_random_predictor
from zegformer.text import TextEmbedder
from zegformer.text_cache import TextDiskCache, default_cache_dir, text_tower_digest

ROOT = Path(__file__).resolve().parent.parent
NAMES = [f"thing {i}" for i in range(40)] + ["tv | television", "pot, flowerpot"]

# A deterministic stand-in for CLIP's text tower and tokenizer: the same code runs in the
# subprocesses below (it is pasted into their script).
FAKE_TOWER = '''
import torch

class FakeTower:
    """tokens N x L -> N x 8, position-weighted sums of a seeded table; counts its calls."""

    def __init__(self):
        self.table = torch.randn(256, 8, generator=torch.Generator().manual_seed(0))
        self.calls = 0

    def __call__(self, tokens):
        self.calls += 1
        weights = torch.arange(1, tokens.shape[1] + 1, dtype=torch.float32)[None, :, None]
        return (self.table[tokens % 256] * weights).sum(dim=1)


def fake_tokenizer(texts):
    out = torch.zeros(len(texts), 64, dtype=torch.long)
    for i, t in enumerate(texts):
        codes = [ord(ch) for ch in t[:64]]
        out[i, :len(codes)] = torch.tensor(codes)
    return out
'''
_ns: dict = {}
exec(FAKE_TOWER, _ns)
FakeTower, fake_tokenizer = _ns["FakeTower"], _ns["fake_tokenizer"]


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("ZEGFORMER_CACHE", str(tmp_path))
    monkeypatch.delenv("ZEGFORMER_TEXT_CACHE_MB", raising=False)
    return tmp_path / "text"


def _embedder(digest: str = "weights-A", **kw) -> tuple[TextEmbedder, FakeTower]:
    tower = FakeTower()
    return TextEmbedder(tower, fake_tokenizer, "fake", weights_digest=digest, **kw), tower


def _files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.npy"))


def test_a_fresh_embedder_reads_what_an_earlier_one_wrote(cache_dir):
    first, tower1 = _embedder()
    a = first(NAMES, "imagenet_select")
    assert tower1.calls > 0 and first.encoded == len(NAMES)
    assert len(_files(cache_dir)) == len(NAMES)
    second, tower2 = _embedder()
    b = second(NAMES, "imagenet_select")
    assert tower2.calls == 0 and second.encoded == 0 and second.disk_hits == len(NAMES)
    assert torch.equal(a, b)
    # Another template set, another weights digest: new keys, encoded again.
    second(NAMES[:3], "single")
    assert second.encoded == 3
    third, _ = _embedder("weights-B")
    third(NAMES[:2], "imagenet_select")
    assert third.encoded == 2 and third.disk_hits == 0


def test_no_digest_or_disabled_means_no_disk(cache_dir, monkeypatch):
    tower = FakeTower()
    TextEmbedder(tower, fake_tokenizer, "fake")(NAMES[:3], "single")  # no weights digest
    _embedder(disk_cache=False)[0](NAMES[:3], "single")
    monkeypatch.setenv("ZEGFORMER_TEXT_CACHE_MB", "0")
    _embedder()[0](NAMES[:3], "single")
    assert not cache_dir.exists() or _files(cache_dir) == []


def test_the_digest_follows_the_weights_not_the_name(cache_dir):
    """Two predictors with the same clip_id: equal CLIP weights share the cache, changed ones
    do not (the key holds a digest of the text tower's tensors)."""
    first = load_random_predictor(device="cpu")
    first.text(["zebra", "giraffe"], "single")
    again = load_random_predictor(device="cpu")
    calls = []
    again.text.encode_text = lambda tokens: calls.append(1) or first.clip.encode_text(tokens)
    again.text(["zebra", "giraffe"], "single")
    assert calls == [] and again.text.disk_hits == 2
    changed = load_random_predictor(device="cpu")
    with torch.no_grad():
        changed.clip.clip.ln_final.bias += 0.5
    assert changed.text.model_id == first.text.model_id
    assert text_tower_digest(changed.clip.clip) != text_tower_digest(first.clip.clip)
    changed.text(["zebra", "giraffe"], "single")
    assert changed.text.encoded == 2
    # The image tower is not part of the text key.
    visual = load_random_predictor(device="cpu")
    with torch.no_grad():
        visual.clip.clip.visual.ln_post.bias += 0.5
    assert text_tower_digest(visual.clip.clip) == text_tower_digest(first.clip.clip)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "wrong shape", "nan",
                                    "not unit norm"])
def test_a_damaged_file_is_ignored_and_rewritten(cache_dir, damage):
    first, _ = _embedder()
    expected = first(NAMES[:4], "single")
    victim = TextDiskCache(cache_dir).path(first._disk_key("single", NAMES[1]))
    assert victim.is_file()
    if damage == "truncate":
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    elif damage == "garbage":
        victim.write_bytes(os.urandom(200))
    elif damage == "empty":
        victim.write_bytes(b"")
    elif damage == "wrong shape":
        np.save(victim, np.ones((2, 4), dtype=np.float32) / np.sqrt(8))
    elif damage == "nan":
        np.save(victim, np.full(8, np.nan, dtype=np.float32))
    else:
        np.save(victim, np.ones(8, dtype=np.float32))
    second, tower = _embedder()
    out = second(NAMES[:4], "single")
    assert second.encoded == 1 and second.disk_hits == 3 and tower.calls == 1
    assert torch.equal(out, expected)
    restored = np.load(victim)
    assert np.array_equal(restored, expected[1].numpy())


def test_an_unwritable_cache_costs_only_the_cache(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("ZEGFORMER_CACHE", str(blocker))
    emb, _ = _embedder()
    out = emb(NAMES[:3], "single")
    assert out.shape == (3, 8) and emb.encoded == 3
    assert "not cached on disk" in caplog.text
    emb(NAMES[3:5], "single")  # still works, warns once
    assert caplog.text.count("not cached on disk") == 1


def test_size_cap_evicts_least_recently_used(cache_dir):
    emb, _ = _embedder()
    emb(NAMES[:10], "single")
    files = {n: TextDiskCache(cache_dir).path(emb._disk_key("single", n)) for n in NAMES[:10]}
    size = files[NAMES[0]].stat().st_size
    t0 = time.time() - 1000
    for i, n in enumerate(NAMES[:10]):  # thing 0 oldest ... thing 9 newest
        os.utime(files[n], (t0 + i, t0 + i))
    cache = TextDiskCache(cache_dir, max_bytes=8 * size)
    assert cache.get(emb._disk_key("single", NAMES[0])) is not None  # a read refreshes it
    cache.evict()  # 10 files > 8: down to 90% of the cap = 7 files
    left = {n for n, p in files.items() if p.exists()}
    assert left == {NAMES[0], *NAMES[4:10]}
    assert cache.size_bytes() <= 8 * size


def test_stale_temporary_files_are_removed(cache_dir):
    emb, _ = _embedder()
    emb(NAMES[:2], "single")
    stale, fresh = cache_dir / ".tmp-stale.npy", cache_dir / ".tmp-fresh.npy"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    TextDiskCache(cache_dir).evict()
    assert not stale.exists() and fresh.exists()  # a fresh one may belong to a live writer


def test_default_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("ZEGFORMER_CACHE", str(tmp_path / "zc"))
    assert default_cache_dir() == tmp_path / "zc" / "text"
    from huggingface_hub import constants

    monkeypatch.delenv("ZEGFORMER_CACHE")
    monkeypatch.setattr(constants, "HF_HOME", str(tmp_path / "hf"))
    assert default_cache_dir() == tmp_path / "hf" / "zegformer" / "text"


def test_the_suite_does_not_write_to_the_users_cache():
    """conftest.py points ZEGFORMER_CACHE at a temporary folder for every test."""
    here = default_cache_dir().resolve()
    assert here.is_relative_to(Path(tempfile.gettempdir()).resolve())
    assert not here.is_relative_to((Path.home() / ".cache").resolve())


# ---------------------------------------------------------------- separate processes

WORKER = FAKE_TOWER + '''
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from zegformer.text import TextEmbedder

go = Path(sys.argv[2])
names = [f"thing {i}" for i in range(int(sys.argv[3]))]
Path(sys.argv[4]).touch()  # imports done
deadline = time.time() + 60
while not go.exists() and time.time() < deadline:  # start both writers together
    time.sleep(0.002)


class SlowTower(FakeTower):  # long enough for the two processes to overlap
    def __call__(self, tokens):
        time.sleep(0.01)
        return super().__call__(tokens)


tower = SlowTower()
emb = TextEmbedder(tower, fake_tokenizer, "fake", weights_digest="weights-A", batch_size=16)
emb(names, "single")
print(tower.calls, emb.encoded)
'''


def test_two_processes_writing_at_once_leave_a_valid_cache(cache_dir, tmp_path):
    n = 300
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER))
    go = tmp_path / "go"
    env = {**os.environ, "ZEGFORMER_CACHE": str(cache_dir.parent)}
    ready = [tmp_path / f"ready-{i}" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, str(script), str(ROOT), str(go), str(n), str(r)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in ready]
    deadline = time.time() + 90
    while not all(r.exists() for r in ready) and time.time() < deadline:
        time.sleep(0.01)
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert int(out.split()[1]) > 0  # each started on an empty cache and encoded
    files = _files(cache_dir)
    assert len(files) == n and not list(cache_dir.glob(".tmp-*"))
    for f in files:
        v = np.load(f, allow_pickle=False)
        assert v.dtype == np.float32 and v.shape == (8,)
    # A third start (this process) encodes nothing and gets what an in-memory run computes.
    names = [f"thing {i}" for i in range(n)]
    emb, tower = _embedder()
    got = emb(names, "single")
    assert tower.calls == 0 and emb.disk_hits == n
    reference, _ = _embedder(disk_cache=False)
    assert torch.equal(got, reference(names, "single"))

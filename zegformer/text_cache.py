"""Class-name embeddings on disk, so that a restart does not run the text tower again.

One small `.npy` file (a D float32 vector) per (format version, digest of the CLIP text tower's
weights, precision, template set and its text, class name); the file name is the SHA-256 of that
key. Files live in `$ZEGFORMER_CACHE/text`, or else `<Hugging Face home>/zegformer/text`
(`$HF_HOME`, by default `~/.cache/huggingface`).

- Writes are atomic: a temporary file in the same folder, then `os.replace`; concurrent processes
  that compute the same entry each replace it with a complete file, so readers never see half
  of one. Nothing is locked.
- A file that cannot be read or does not hold a unit-norm float32 vector is ignored (the entry is
  computed again and the file rewritten); an unwritable folder only costs the disk cache (one
  warning), never the request.
- Size: at most `$ZEGFORMER_TEXT_CACHE_MB` MB (default 512, `0` turns the disk cache off). After
  each batch of writes the least recently used files (by modification time, which a read refreshes)
  are deleted until the folder is under 90% of the cap.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

CACHE_ENV = "ZEGFORMER_CACHE"  # root of ZegFormer's caches (text embeddings go to <root>/text)
SIZE_ENV = "ZEGFORMER_TEXT_CACHE_MB"  # disk cap in MB; 0 disables the disk cache
DEFAULT_MAX_MB = 512
FORMAT_VERSION = "1"  # bump when the way embeddings are computed changes
_STALE_TEMP_S = 3600.0  # temporary files older than this are leftovers of killed writers
_EVICT_TO = 0.9  # evict down to this fraction of the cap


def default_cache_dir() -> Path:
    """`$ZEGFORMER_CACHE/text`, else `<HF home>/zegformer/text`."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser() / "text"
    try:
        from huggingface_hub import constants

        hf_home = Path(constants.HF_HOME)
    except ImportError:  # pragma: no cover - huggingface_hub is in requirements.txt
        hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return Path(hf_home).expanduser() / "zegformer" / "text"


def default_max_bytes() -> int:
    """The cap from `$ZEGFORMER_TEXT_CACHE_MB` (default 512 MB)."""
    value = os.environ.get(SIZE_ENV, str(DEFAULT_MAX_MB))
    try:
        mb = float(value)
    except ValueError:
        from .errors import ZegFormerError

        raise ZegFormerError(f"{SIZE_ENV} must be a number of megabytes, got {value!r}") from None
    return int(max(mb, 0.0) * 2**20)


def tensors_digest(tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of (name, tensor) pairs, in the order given."""
    h = hashlib.sha256()
    for name, t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def text_tower_digest(clip_model: nn.Module) -> str:
    """Digest of every tensor of a CLIP model outside its image tower (`visual.*`) and logit
    scale/bias: what the text embeddings depend on. ViT-B/16: 242 MB hashed in ~0.2 s."""
    items = [(k, v) for k, v in clip_model.state_dict().items()
             if not k.startswith("visual.") and k not in ("logit_scale", "logit_bias")]
    return tensors_digest(sorted(items, key=lambda kv: kv[0]))


class TextDiskCache:
    """A folder of embedding files (see the module docstring).

    Args:
        directory: default `default_cache_dir()`.
        max_bytes: size cap; default `default_max_bytes()`.
    """

    def __init__(self, directory: str | os.PathLike | None = None,
                 max_bytes: int | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.max_bytes = default_max_bytes() if max_bytes is None else int(max_bytes)
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def path(self, key: Sequence[str]) -> Path:
        """File of `key` (a tuple of strings): `<sha256 of the key>.npy`."""
        digest = hashlib.sha256("\x1f".join((FORMAT_VERSION, *key)).encode("utf-8")).hexdigest()
        return self.directory / f"{digest}.npy"

    def get(self, key: Sequence[str], dim: int | None = None) -> np.ndarray | None:
        """The stored D vector (float32) of `key`, or None when absent or unreadable."""
        if not self.enabled:
            return None
        path = self.path(key)
        try:
            arr = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except Exception as e:  # truncated, garbled, not an .npy: recompute and rewrite
            log.info("ignoring unreadable text cache file %s (%s)", path, type(e).__name__)
            return None
        if (arr.dtype != np.float32 or arr.ndim != 1 or (dim is not None and arr.shape[0] != dim)
                or not np.isfinite(arr).all() or abs(float(np.linalg.norm(arr)) - 1.0) > 1e-3):
            log.info("ignoring invalid text cache file %s", path)
            return None
        try:
            os.utime(path)  # least recently *used* is evicted first
        except OSError:
            pass
        return arr

    def put_many(self, items: Iterable[tuple[Sequence[str], np.ndarray]]) -> None:
        """Store each (key, D vector) atomically, then evict past the cap. Never raises OSError."""
        if not self.enabled:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            for key, vec in items:
                self._write(self.path(key), np.ascontiguousarray(vec, dtype=np.float32))
            self.evict()
        except OSError as e:
            if not self._warned:
                log.warning("text embeddings not cached on disk (%s: %s)", self.directory, e)
                self._warned = True

    def _write(self, path: Path, vec: np.ndarray) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".npy")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, vec, allow_pickle=False)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def size_bytes(self) -> int:
        """Bytes in the cache folder (entries and temporary files)."""
        return sum(size for _, size, _ in self._entries())

    def _entries(self) -> list[tuple[Path, int, float]]:
        out = []
        try:
            with os.scandir(self.directory) as it:
                for entry in it:
                    if not entry.name.endswith(".npy"):
                        continue
                    try:
                        st = entry.stat()
                    except OSError:  # deleted meanwhile by another process
                        continue
                    out.append((Path(entry.path), st.st_size, st.st_mtime))
        except FileNotFoundError:
            pass
        return out

    def evict(self) -> None:
        """Delete stale temporary files, then the oldest entries while over the cap."""
        entries = self._entries()
        now = time.time()
        kept = []
        for path, size, mtime in entries:
            if path.name.startswith(".tmp-"):
                if now - mtime > _STALE_TEMP_S:
                    _unlink(path)
                    continue
            kept.append((path, size, mtime))
        total = sum(size for _, size, _ in kept)
        if total <= self.max_bytes:
            return
        target = _EVICT_TO * self.max_bytes
        for path, size, _ in sorted(kept, key=lambda e: e[2]):
            if total <= target:
                break
            if not path.name.startswith(".tmp-"):
                _unlink(path)
                total -= size


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:  # already gone (another process evicted it)
        pass

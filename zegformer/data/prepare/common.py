"""What every dataset preparation shares: package data, checked outputs written atomically,
label remapping with value checks, the worker pool with its progress bar, and the report.

An output counts as done when it exists, opens, has the expected size and mode and is complete
(a PNG ends with its IEND chunk, a JPEG with its end-of-image marker, an uncompressed TIFF holds
every pixel); done outputs are never rewritten, so a rerun is a no-op and a killed run resumes.
Files are written under a hidden ``.<name>.partial`` name and renamed, so a killed run never
leaves a half-written file under a final name.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ...errors import DatasetError
from ..datasets import read_label_file

SPLITS_DIR = Path(__file__).resolve().parents[1] / "splits"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
JPEG_END = b"\xff\xd9"


def default_workers() -> int:
    """min(4, number of CPUs): the official scripts used a fixed pool of 32."""
    return min(4, os.cpu_count() or 1)


def read_split_ints(name: str) -> list[int]:
    """Integers of a whitespace-separated list in ``zegformer/data/splits/<name>``."""
    return [int(x) for x in (SPLITS_DIR / name).read_text(encoding="utf-8").split()]


def read_split_json(name: str) -> dict:
    with open(SPLITS_DIR / name, encoding="utf-8") as f:
        return json.load(f)


# ----------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class LabelOutput:
    """One prepared label map: the output folder's name, the file, and the remap table's name."""

    split: str
    path: Path
    table: str


def _tail(path: Path, n: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - n))
        return f.read()


def output_is_done(path: Path, size: tuple[int, int] | None,
                   modes: Sequence[str] | None) -> bool:
    """True when ``path`` is a complete image of ``size`` (W, H) in one of ``modes`` (None: any
    size / any mode)."""
    try:
        if not path.is_file():
            return False
        with Image.open(path) as im:
            if (modes is not None and im.mode not in modes) or (size is not None and im.size != tuple(size)):
                return False
            fmt, (w, h) = im.format, im.size
            if fmt == "TIFF" and im.info.get("compression", "raw") == "raw":
                return path.stat().st_size >= w * h * (2 if im.mode.startswith("I;16") else 1)
        if fmt == "PNG":
            return _tail(path, len(PNG_END)) == PNG_END
        if fmt == "JPEG":
            return _tail(path, 2) == JPEG_END
        return fmt == "TIFF"
    except (OSError, ValueError, SyntaxError):
        return False


def copy_is_done(src: Path, dst: Path) -> bool:
    try:
        return dst.is_file() and dst.stat().st_size == src.stat().st_size
    except OSError:
        return False


def save_array_atomic(array: np.ndarray, path: Path, fmt: str) -> None:
    """Save with PIL's defaults for ``fmt`` (as the official ``Image.fromarray(a).save(p)``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    Image.fromarray(array).save(tmp, format=fmt)
    os.replace(tmp, path)


def copy_atomic(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` byte for byte (as the official ``shutil.copyfile``)."""
    if not src.is_file():
        raise DatasetError(f"image {src} does not exist (needed for {dst.parent})")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.partial")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def write_json_if_changed(path: Path, data: object) -> bool:
    """Write ``json.dumps(data)`` (the official scripts' ``json.dump`` format) unless the file
    already holds exactly that; returns whether it was written."""
    text = json.dumps(data)
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return True


# ----------------------------------------------------------------------------- label values


def remap_table(size: int, mapping: dict[int, int], ignore: int, dtype: type) -> np.ndarray:
    """A lookup table raw value -> output value: ``mapping`` where given, ``ignore`` elsewhere."""
    table: np.ndarray = np.full(size, ignore, dtype=dtype)
    for raw, out in mapping.items():
        table[raw] = out
    return table


def read_index_label(path: Path) -> np.ndarray:
    """An 8-bit single-channel label PNG (mode L or P) as an HxW uint8 array of its indices."""
    return read_label_file(path, ("L", "P"))


def check_values(values: np.ndarray, valid: np.ndarray, path: Path, what: str) -> None:
    """Raise when one of the (unique) raw ``values`` is not marked in ``valid``."""
    bad = values[(values >= len(valid)) | ~valid[np.minimum(values, len(valid) - 1)]]
    if bad.size:
        raise DatasetError(f"{path} has label values {bad[:10].tolist()} outside {what} "
                           "(refusing to guess what they mean)")


@dataclass
class SplitStats:
    """Per output folder: files written or found done, class ids present, pixels ignored."""

    written: int = 0
    skipped: int = 0
    classes: set[int] = field(default_factory=set)
    ignored: int = 0
    pixels: int = 0


@dataclass
class TaskResult:
    """What one worker task did (one raw image / label map and all its outputs)."""

    source: str
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stats: dict[str, tuple[list[int], int, int]] = field(default_factory=dict)
    error: str | None = None


def remap_with_stats(raw: np.ndarray, table: np.ndarray, ignore: int,
                     uniq: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, tuple]:
    """``table[raw]`` and its (classes present, ignored pixels, pixels) from ``raw``'s histogram."""
    out_ids = table[uniq]
    keep = out_ids != ignore
    stats = (sorted(int(c) for c in np.unique(out_ids[keep])), int(counts[~keep].sum()),
             int(raw.size))
    return table[raw], stats


# ----------------------------------------------------------------------------- running


_WORKER_STATE: dict[str, Any] = {}


def _init_worker(spec: Any) -> None:
    _WORKER_STATE["spec"] = spec


def worker_spec() -> Any:
    """The job description handed to this worker process by ``run_tasks``."""
    return _WORKER_STATE["spec"]


def guarded(fn: Callable[[Any], TaskResult], task: Any, source: str) -> TaskResult:
    """Run one task; any failure becomes a one-line error of that task, never a crash."""
    try:
        return fn(task)
    except DatasetError as e:
        return TaskResult(source, error=str(e))
    except (OSError, ValueError, SyntaxError) as e:
        return TaskResult(source, error=f"{source}: {type(e).__name__}: {e}")
    except Exception as e:  # noqa: BLE001 - keep the other files going, report this one
        return TaskResult(source, error=f"{source}: unexpected {type(e).__name__}: {e}")


def run_tasks(tasks: Sequence[Any], worker: Callable[[Any], TaskResult], spec: Any,
              workers: int, desc: str, progress: bool = True) -> list[TaskResult]:
    """Run ``worker`` over ``tasks`` in a process pool (in this process when ``workers`` <= 1)
    with a tqdm bar; results come back in completion order."""
    from tqdm import tqdm

    results: list[TaskResult] = []
    bar = tqdm(total=len(tasks), desc=desc, unit="file", disable=not progress, dynamic_ncols=True)
    try:
        if workers <= 1 or len(tasks) <= 1:
            _init_worker(spec)
            for t in tasks:
                results.append(worker(t))
                bar.update()
        else:
            chunk = max(1, min(32, len(tasks) // (workers * 8)))
            with multiprocessing.get_context().Pool(workers, _init_worker, (spec,)) as pool:
                for r in pool.imap_unordered(worker, tasks, chunksize=chunk):
                    results.append(r)
                    bar.update()
    finally:
        bar.close()
    return results


# ----------------------------------------------------------------------------- report


@dataclass
class PrepareReport:
    """The end summary of one ``prepare`` run."""

    dataset: str
    root: Path
    sources: int = 0
    splits: dict[str, SplitStats] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    class_files_written: list[Path] = field(default_factory=list)
    class_files_kept: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def add(self, results: Iterable[TaskResult]) -> None:
        for r in results:
            self.sources += 1
            if r.error is not None:
                self.failures.append(r.error)
                continue
            for s in r.written:
                self.splits.setdefault(s, SplitStats()).written += 1
            for s in r.skipped:
                self.splits.setdefault(s, SplitStats()).skipped += 1
            for s, (classes, ignored, pixels) in r.stats.items():
                st = self.splits.setdefault(s, SplitStats())
                st.classes.update(classes)
                st.ignored += ignored
                st.pixels += pixels

    def format(self) -> str:
        """A human-readable summary (one line per output folder, then the failures)."""
        lines = [f"{self.dataset}: {self.sources} source files under {self.root}"]
        for name, st in sorted(self.splits.items()):
            line = f"  {name:<40} {st.written:>6} written {st.skipped:>6} skipped (already done)"
            if st.pixels:
                line += (f"  {len(st.classes):>4} classes seen, {st.ignored / st.pixels:6.1%} of "
                         f"{st.pixels:,} written pixels ignored")
            lines.append(line)
        if self.class_files_written or self.class_files_kept:
            lines.append(f"  class-name files: {len(self.class_files_written)} written, "
                         f"{len(self.class_files_kept)} already up to date")
        lines += [f"  note: {n}" for n in self.notes]
        if self.failures:
            lines.append(f"  FAILED: {len(self.failures)} files (the others are done):")
            lines += [f"    {f}" for f in self.failures[:50]]
            if len(self.failures) > 50:
                lines.append(f"    ... and {len(self.failures) - 50} more")
        return "\n".join(lines)


@dataclass
class Job:
    """A planned preparation: the tasks for the pool and what is written before them."""

    dataset: str
    root: Path  # the dataset's own folder (e.g. DATASETS/coco/coco_stuff)
    tasks: list[Any]
    worker: Callable[[Any], TaskResult]
    spec: Any
    class_files: dict[Path, object] = field(default_factory=dict)  # JSON files to write
    dirs: list[Path] = field(default_factory=list)  # output folders (created even when empty)
    notes: list[str] = field(default_factory=list)


def find_dataset_dir(root: Path, candidates: Sequence[str], marker: str, expected: str) -> Path:
    """The first ``root/<candidate>`` holding ``marker``; else a DatasetError saying what was
    expected where (``expected`` describes the raw download)."""
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist or is not a directory")
    for c in candidates:
        if (root / c / marker).exists():
            return root / c
    raise DatasetError(f"{root} is not the expected root: no {root / candidates[0] / marker} "
                       f"({expected})")

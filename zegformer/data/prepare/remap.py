"""The 8-bit label remapping shared by COCO-Stuff and PASCAL VOC.

One task reads one raw label PNG, checks that every value is in the dataset's id table, and
writes one remapped uint8 PNG per output folder (``table[raw]``, 255 = ignore), like the official
``prepare_*`` scripts; it may also copy the matching image verbatim (VOC's v2 split).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .common import (
    LabelOutput,
    TaskResult,
    check_values,
    copy_atomic,
    copy_is_done,
    guarded,
    output_is_done,
    read_index_label,
    remap_with_stats,
    save_array_atomic,
    worker_spec,
)

IGNORE = 255


@dataclass(frozen=True)
class RemapSpec:
    """What every task of a job shares (sent once to each worker)."""

    tables: dict[str, np.ndarray]  # table name -> uint8[256] lookup (raw value -> output id)
    valid: np.ndarray  # bool[256]: raw values the id table knows (others are an error)
    what: str  # the id table in words, for error messages


@dataclass(frozen=True)
class RemapTask:
    source: Path  # raw label PNG
    outputs: tuple[LabelOutput, ...]
    copies: tuple[tuple[str, Path, Path], ...] = ()  # (output folder, src, dst) copied verbatim


def _size(path: Path) -> tuple[int, int] | None:
    """(W, H) from the header, or None when the file cannot be opened (read_index_label then
    reports why)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError, SyntaxError):
        return None


def _remap(task: RemapTask) -> TaskResult:
    spec: RemapSpec = worker_spec()
    res = TaskResult(str(task.source))
    todo = []
    size = _size(task.source)
    for out in task.outputs:
        if size is not None and output_is_done(out.path, size, ("L",)):
            res.skipped.append(out.split)
        else:
            todo.append(out)
    if todo:
        raw = read_index_label(task.source)
        uniq, counts = np.unique(raw, return_counts=True)
        check_values(uniq, spec.valid, task.source, spec.what)
        for out in todo:
            arr, res.stats[out.split] = remap_with_stats(raw, spec.tables[out.table], IGNORE,
                                                         uniq, counts)
            save_array_atomic(arr.astype(np.uint8), out.path, "PNG")
            res.written.append(out.split)
    for split, src, dst in task.copies:
        if copy_is_done(src, dst):
            res.skipped.append(split)
        else:
            copy_atomic(src, dst)
            res.written.append(split)
    return res


def remap_worker(task: RemapTask) -> TaskResult:
    """Pool entry point: one raw label map, all its outputs; errors become a one-line result."""
    return guarded(_remap, task, str(task.source))

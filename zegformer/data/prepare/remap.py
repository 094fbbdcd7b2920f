"""The 8-bit label remapping shared by COCO-Stuff and PASCAL VOC.

`seen_unseen_tables` builds the "seen" / "unseen" / "all" lookups both datasets write, and
`add_remap_tasks` plans one task per raw label PNG of each raw split. One task reads one raw
label PNG, checks that every value is in the dataset's id table, and writes one remapped uint8
PNG per output folder (``table[raw]``, 255 = ignore), like the official ``prepare_*`` scripts;
it may also copy the matching image verbatim (VOC's v2 split).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from .common import (
    Job,
    LabelOutput,
    TaskResult,
    check_values,
    copy_atomic,
    copy_is_done,
    guarded,
    output_is_done,
    read_index_label,
    remap_table,
    remap_with_stats,
    save_array_atomic,
    worker_spec,
)

IGNORE = 255
Copy = tuple[str, Path, Path]  # (output folder for the report, source, destination)


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
    copies: tuple[Copy, ...] = ()  # files copied verbatim


# raw split, raw label PNG -> (more outputs for that file, files to copy verbatim)
Extra = Callable[[str, Path], tuple[list[LabelOutput], tuple[Copy, ...]]]


def known_values(raw_ids: Iterable[int]) -> np.ndarray:
    """bool[256]: True for the dataset's raw ids and for 255 (unlabelled / ignore)."""
    valid = np.zeros(256, dtype=bool)
    valid[list(raw_ids)] = True
    valid[IGNORE] = True
    return valid


def seen_unseen_tables(seen: Sequence[int], unseen: Sequence[int]) -> dict[str, np.ndarray]:
    """uint8[256] lookups raw value -> output id: "seen" (seen -> 0..S-1), "unseen"
    (unseen -> 0..U-1) and "all" (seen then unseen -> 0..S+U-1); everything else -> 255."""
    def table(raw: Sequence[int]) -> np.ndarray:
        return remap_table(256, {r: i for i, r in enumerate(raw)}, IGNORE, np.uint8)

    return {"seen": table(seen), "unseen": table(unseen), "all": table([*seen, *unseen])}


def add_remap_tasks(job: Job, raw_root: Path, splits: Mapping[str, Mapping[str, str]],
                    out_root: Path, extra: Extra | None = None) -> int:
    """Append to `job` one `RemapTask` per PNG in ``raw_root/<raw split>/``.

    Args:
        job: the job to extend (a raw split without PNGs adds a note instead).
        raw_root: the folder of the raw splits (e.g. ``.../annotations``).
        splits: raw split -> {output folder under `out_root`: table name}.
        out_root: where the output folders are (e.g. ``.../annotations_detectron2``).
        extra: more outputs and copies per file (VOC's v2 split).

    Returns:
        How many raw splits had label maps.
    """
    found = 0
    for raw_split, outputs in splits.items():
        raw_dir = raw_root / raw_split
        files = sorted(raw_dir.glob("*.png")) if raw_dir.is_dir() else []
        if not files:
            job.notes.append(f"no {raw_split} label maps in {raw_dir}: that split is not prepared")
            continue
        found += 1
        for f in files:
            outs = [LabelOutput(f"{out_root.name}/{name}", out_root / name / f.name, table)
                    for name, table in outputs.items()]
            copies: tuple[Copy, ...] = ()
            if extra is not None:
                more, copies = extra(raw_split, f)
                outs += more
            job.tasks.append(RemapTask(f, tuple(outs), copies))
    return found


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

"""Dataset preparation: raw downloads -> the official ZegFormer prepared layouts.

``python -m zegformer.data.prepare coco-stuff|voc|ade847 --root DATASETS [--workers N]``
(see ``__main__``), or from Python::

    from zegformer.data.prepare import prepare_dataset
    report = prepare_dataset("coco-stuff", "datasets", workers=4)
    print(report.format()); assert report.ok

``DATASETS`` is detectron2's ``$DETECTRON2_DATASETS`` (the folder holding ``coco/``,
``VOCZERO/``, ``ADE20K_2021_17_01/``); the dataset's own folder is accepted too. The outputs are
those of the official scripts (folders, file names, dtypes, label values; see ``coco_stuff``,
``voc``, ``ade20k_full``) plus the class-name JSON files the official configs point at, written
from data shipped in the package. Runs are idempotent and resumable; bad files are reported one
line each at the end while the others are prepared.
"""
from __future__ import annotations

from pathlib import Path

from ...errors import DatasetError
from .common import Job, PrepareReport, default_workers, run_tasks, write_json_if_changed

DATASET_NAMES: tuple[str, ...] = ("coco-stuff", "voc", "ade847")

__all__ = ["DATASET_NAMES", "PrepareReport", "plan_dataset", "prepare_dataset"]


def plan_dataset(name: str, root: str | Path, *, trust_pickle: bool = False) -> Job:
    """Check the raw layout under ``root`` and list the work, without writing anything."""
    root = Path(root).expanduser()
    if name == "coco-stuff":
        from .coco_stuff import plan

        return plan(root)
    if name == "voc":
        from .voc import plan as plan_voc

        return plan_voc(root)
    if name == "ade847":
        from .ade20k_full import plan as plan_ade

        return plan_ade(root, trust_pickle)
    raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")


def prepare_dataset(name: str, root: str | Path, *, workers: int | None = None,
                    progress: bool = True, trust_pickle: bool = False) -> PrepareReport:
    """Prepare one dataset in place.

    Args:
        name: "coco-stuff", "voc" or "ade847".
        root: DATASETS (or the dataset's own folder).
        workers: worker processes (default ``min(4, cpu count)``; 1 = in this process).
        progress: show a tqdm bar on stderr.
        trust_pickle: ade847 only: unpickle ``index_ade20k.pkl`` even if it holds objects
            other than lists, dicts, strings, numbers and numpy arrays.

    Returns:
        The report: per output folder the files written / skipped and, for the files written,
        the classes present and the share of ignored pixels; ``failures`` lists the files that
        could not be prepared (``ok`` is False then).

    Raises:
        DatasetError: the root or the raw layout is wrong (nothing is written then).
    """
    job = plan_dataset(name, root, trust_pickle=trust_pickle)
    report = PrepareReport(name, job.root, notes=list(job.notes))
    for d in job.dirs:
        d.mkdir(parents=True, exist_ok=True)
        for stale in d.glob(".*.partial"):  # left by a run that was killed while writing
            stale.unlink(missing_ok=True)
    for path, content in job.class_files.items():
        (report.class_files_written if write_json_if_changed(path, content)
         else report.class_files_kept).append(path)
    n = default_workers() if workers is None else max(1, int(workers))
    report.add(run_tasks(job.tasks, job.worker, job.spec, n, f"prepare {name}", progress))
    report.failures.sort()
    return report

"""Evaluation of perceptual abilities: generalized zero-shot mIoU and small-target segmentation.

Library layout (the command line is ``python -m zegformer.evaluate``):

* ``metrics``: confusion matrix, mIoU / fwIoU / mACC / pACC, seen / unseen / harmonic
  (``compat`` = ZegFormer's formulas, ``strict`` = well defined on every subset);
* ``objects``: ground-truth objects (instance rule, 8-connected components, size filter);
* ``small_targets``: per-object coverage, sIoU, detection, apportioned-FP IoU, dominant class,
  and predicted-segment precision;
* ``buckets`` / ``aggregate``: absolute (XS/S/M/L) and relative (R0..R3) buckets, per-class and
  per-split aggregation, iIoU;
* ``datasets`` / ``official``: folder, COCO-Stuff 171, PASCAL VOC 20, ADE20K-Full 847 layouts;
* ``report`` / ``plots`` / ``compare``: summary.json, CSV tables, size curves, run comparison;
* ``runner`` / ``distributed``: the evaluation loop, resumable and sharded under torchrun.

The specification is SMALL_TARGETS.md (section 8); its worked examples are unit tests.
"""
from .aggregate import aggregate, iiou
from .buckets import abs_bucket, rel_bucket
from ..data.datasets import DatasetError, EvalDataset, Record, Vocabulary
from .metrics import confusion_matrix, harmonic, standard_metrics
from ..data.objects import Instance, InstanceSet, extract_objects
from ..data.official import build_dataset
from .report import build_report, write_report
from .runner import EvalOptions, run_evaluation
from .small_targets import ClassInfo, evaluate_image

__all__ = [
    "aggregate", "iiou", "abs_bucket", "rel_bucket", "DatasetError", "EvalDataset", "Record",
    "Vocabulary", "confusion_matrix", "harmonic", "standard_metrics", "Instance", "InstanceSet",
    "extract_objects", "build_dataset", "build_report", "write_report", "EvalOptions",
    "run_evaluation", "ClassInfo", "evaluate_image",
]

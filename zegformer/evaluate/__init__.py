"""Command-line entry points of the evaluation.

* ``python -m zegformer.evaluate``: evaluate a model (or saved predictions) on a dataset;
* ``python -m zegformer.evaluate.compare``: two runs side by side per object-size bucket.

The library behind them is ``zegformer.evaluation``.
"""
from ..evaluation.cli import build_parser, main

__all__ = ["build_parser", "main"]

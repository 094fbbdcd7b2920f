"""Shared test set-up: offline, one thread, repository root importable."""
from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
# Text embeddings are cached on disk (zegformer.text_cache): the suite, and the processes it
# starts, use a throw-away folder, never the user's ~/.cache.
_CACHE = tempfile.mkdtemp(prefix="zegformer-test-cache-")
os.environ["ZEGFORMER_CACHE"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MPLBACKEND", "Agg")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_predictor():
    """One tiny random-weights predictor shared by the tests (CPU)."""
    from zegformer import load_random_predictor

    return load_random_predictor(device="cpu")


@pytest.fixture(scope="session")
def tiny_baseline():
    """A tiny random-weights per-pixel baseline predictor (CPU): the "pixel" mode only."""
    from zegformer import load_random_predictor

    return load_random_predictor(device="cpu", opts=[
        "MODEL.META_ARCHITECTURE", "SemanticSegmentorGzero",
        "MODEL.SEM_SEG_HEAD.NAME", "ZeroshotPerPixelBaselineHead"])

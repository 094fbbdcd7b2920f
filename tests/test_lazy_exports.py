"""zegformer._lazy.lazy_exports: a package's names are imported on first read, once."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A throw-away package `lazypkg` whose `Thing` lives in `lazypkg.sub.impl`."""
    pkg = tmp_path / "lazypkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "from zegformer._lazy import lazy_exports\n"
        "_EXPORTS = {'Thing': 'sub.impl', 'other': 'sub.impl'}\n"
        "__all__ = sorted(_EXPORTS)\n"
        "__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "impl.py").write_text("LOADS = []\nLOADS.append(1)\nclass Thing: pass\n"
                                         "other = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "lazypkg"
    for name in [m for m in sys.modules if m.split(".")[0] == "lazypkg"]:
        del sys.modules[name]


def test_names_load_on_first_read_and_stay(package):
    import importlib

    mod = importlib.import_module(package)
    assert "lazypkg.sub.impl" not in sys.modules
    assert "Thing" in dir(mod) and "other" in dir(mod)
    thing = mod.Thing
    impl = sys.modules["lazypkg.sub.impl"]
    assert thing is impl.Thing and mod.other == 42
    assert vars(mod)["Thing"] is thing  # kept: the next read is a plain attribute
    assert impl.LOADS == [1]


def test_unknown_name_is_an_attribute_error_naming_the_package(package):
    import importlib

    mod = importlib.import_module(package)
    with pytest.raises(AttributeError, match="module 'lazypkg' has no attribute 'Missing'"):
        mod.Missing
    assert not hasattr(mod, "Missing")


def test_zegformer_packages_import_torch_only_when_a_name_needs_it():
    code = ("import sys, zegformer, zegformer.training\n"
            "before = 'torch' in sys.modules\n"
            "zegformer.training.HungarianMatcher\n"
            "print(before, 'torch' in sys.modules, 'Predictor' in dir(zegformer),\n"
            "      'SetCriterion' in dir(zegformer.training))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=str(ROOT), timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "True", "True", "True"]

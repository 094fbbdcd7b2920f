"""Every command line answers --help without importing torch, open_clip or gradio (those load
inside the functions that need them), both as `python -m ...` and as the console scripts of
pyproject.toml. (Timings are measured for the report, not asserted here.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "torchvision", "open_clip", "gradio")
MODULES = ["zegformer.demo", "zegformer.evaluate", "zegformer.train", "zegformer.data.prepare",
           "zegformer.hub", "zegformer.evaluate.compare"]
PROBE = """
import json, runpy, sys
kind, target = sys.argv[1], sys.argv[2]
sys.argv = [target, "--help"]
code = None
try:
    if kind == "module":
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
        module, func = target.split(":")
        __import__(module)
        getattr(sys.modules[module], func)(["--help"])
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "heavy": [m for m in %r if m in sys.modules]}), file=sys.stderr)
""" % (HEAVY,)


def _probe(kind: str, target: str) -> tuple[dict, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", PROBE, kind, target], capture_output=True,
                         text=True, cwd=str(ROOT), env=env, timeout=120)
    return json.loads(run.stderr.strip().splitlines()[-1]), run.stdout


@pytest.mark.parametrize("module", MODULES)
def test_module_help_imports_no_heavy_library(module):
    result, out = _probe("module", module)
    assert result["code"] in (0, None) and "usage:" in out
    assert result["heavy"] == [], f"{module} --help imported {result['heavy']}"


def _scripts() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_console_scripts_cover_the_command_lines():
    assert {"zegformer-demo", "zegformer-evaluate", "zegformer-train", "zegformer-prepare",
            "zegformer-hub"} <= set(_scripts())


@pytest.mark.parametrize("name", sorted(_scripts()))
def test_console_script_help_imports_no_heavy_library(name):
    result, out = _probe("entry", _scripts()[name])
    assert result["code"] in (0, None) and "usage:" in out
    assert result["heavy"] == [], f"{name} --help imported {result['heavy']}"

"""The wheel ships what the package needs: configs, vocabularies and prompt templates.

Build the wheel, install it without dependencies into a folder outside the checkout, and use it
from another directory with only that folder on the path for `zegformer`.
"""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp / "dist"), str(ROOT)],
        capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next((tmp / "dist").glob("zegformer_studio-*.whl"))
    site = tmp / "site"
    inst = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
         "--target", str(site), str(wheel)], capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr[-2000:]
    return wheel, site, tmp


def _run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_wheel_holds_the_data_files_once(installed):
    wheel, _, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert "zegformer/_data/configs/coco-stuff/Base-COCOStuff-171.yaml" in names
    assert "zegformer/_data/configs/tiny.yaml" in names
    assert "zegformer/_data/assets/vocabularies/coco_stuff_171.json" in names
    assert "zegformer/_data/assets/prompt_templates.json" in names
    assert "zegformer/loading/clip_configs/zegformer-tiny-clip.json" in names
    # Data files exist once in the repository (not copied into the package folder).
    assert not (ROOT / "zegformer" / "_data").exists()


def test_installed_package_lists_configs_and_segments(installed):
    _, site, tmp = installed
    work = tmp / "elsewhere"
    work.mkdir()
    code = (
        "import zegformer, numpy as np\n"
        "from zegformer import list_configs, load_random_predictor, resources\n"
        f"assert zegformer.__file__.startswith({str(site)!r}), zegformer.__file__\n"
        "assert str(resources.config_dir()).startswith(" + repr(str(site)) + ")\n"
        "names = list_configs()\n"
        "assert 'tiny' in names and any('coco-stuff' in n for n in names), names\n"
        "p = load_random_predictor(device='cpu')\n"
        "img = (np.random.default_rng(0).random((48, 64, 3)) * 255).astype('uint8')\n"
        "r = p.predict(img, 'cat, grass, sky')\n"
        "assert r.label_map.shape == (48, 64)\n"
        "print('configs', len(names))\n")
    out = _run(site, work, "-c", code)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "configs" in out.stdout


def test_installed_demo_cli_runs(installed):
    _, site, tmp = installed
    work = tmp / "demo"
    work.mkdir()
    Image.fromarray((np.random.default_rng(1).random((40, 56, 3)) * 255).astype("uint8")).save(
        work / "img.png")
    out = _run(site, work, "-m", "zegformer.demo", "--random-weights", "--input", "img.png",
               "--classes", "cat, dog", "--output", "out")
    assert out.returncode == 0, out.stderr[-3000:]
    assert any((work / "out").iterdir())

"""Build step that ships the repository's `configs/` and `assets/` data inside the wheel.

The files stay once, at the repository root; `build_py` copies them into `zegformer/_data/`,
where `zegformer.resources` finds them after `pip install`.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = ["configs", "assets/vocabularies", "assets/prompt_templates.json"]


class BuildPyWithData(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "zegformer" / "_data"
        shutil.rmtree(target, ignore_errors=True)  # no stale files from an earlier build
        for rel in SHIPPED:
            src, dst = ROOT / rel, target / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.md"))
            else:
                shutil.copy2(src, dst)


setup(cmdclass={"build_py": BuildPyWithData})

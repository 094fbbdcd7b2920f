"""One way to find the package's data files, in a checkout and in an installed wheel.

The files live once, at the repository root, where a reader of the repository expects them:
`configs/` (official YAML configs), `assets/vocabularies/` (class lists) and
`assets/prompt_templates.json`. Building a wheel copies them into `zegformer/_data/` (see
`setup.py`), so an installed package finds them through `importlib.resources`; a checkout finds
them beside the package.

    >>> from zegformer import resources
    >>> resources.config_dir() / "coco-stuff" / "Base-COCOStuff-171.yaml"
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources as _resources
from pathlib import Path

from .errors import ConfigError

PACKAGED = "_data"  # folder inside the installed package holding configs/ and assets/


@lru_cache(maxsize=1)
def data_root() -> Path:
    """The folder holding `configs/` and `assets/`: `zegformer/_data` when installed, else the
    repository root of this checkout."""
    packaged = Path(str(_resources.files("zegformer") / PACKAGED))
    if (packaged / "configs").is_dir():
        return packaged
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "configs").is_dir():
        return checkout
    raise ConfigError("zegformer's data files (configs/, assets/) are missing: reinstall the "
                      "package (pip install .) or run from a full checkout")


def config_dir() -> Path:
    """Official YAML configs (`configs/<dataset>/<name>.yaml`)."""
    return data_root() / "configs"


def vocabulary_dir() -> Path:
    """Class vocabularies (`assets/vocabularies/*.json`)."""
    return data_root() / "assets" / "vocabularies"


def prompt_templates_file() -> Path:
    """The prompt-template sets (`assets/prompt_templates.json`)."""
    return data_root() / "assets" / "prompt_templates.json"


def examples_dir() -> Path | None:
    """Demo images with their class lists (checkout only; not shipped in the wheel)."""
    d = Path(__file__).resolve().parent.parent / "examples"
    return d if (d / "examples.json").is_file() else None

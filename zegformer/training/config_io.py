"""Writing a resolved config back as YAML (OUTPUT_DIR/config.yaml), in the official schema."""
from __future__ import annotations

from typing import Any

import yaml


def _plain(obj: Any) -> Any:
    """CfgNode / tuples / str subclasses -> plain dicts, lists and strs that safe_dump writes."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, str):
        return str(obj)
    return obj


def dump_config(cfg: dict) -> str:
    """The config as YAML text; `load_config` reads it back to the same values (inert
    `!!python` expressions stay text, so the file never asks for code execution)."""
    return yaml.safe_dump(_plain(cfg), sort_keys=True, default_flow_style=None, width=100)

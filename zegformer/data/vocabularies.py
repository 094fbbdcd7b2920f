"""Dataset class lists shipped in assets/vocabularies (data, not code)."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from .. import resources
from ..errors import ConfigError

VOCAB_DIR = resources.vocabulary_dir()


@lru_cache(maxsize=None)
def load_vocabulary(name: str) -> dict:
    """`assets/vocabularies/<name>.json`: {"name", "classes": [...], "unseen": [...]}."""
    path = VOCAB_DIR / (name if name.endswith(".json") else name + ".json")
    if not path.is_file():
        raise ConfigError(f"vocabulary {name!r} not found in {VOCAB_DIR}")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def list_vocabularies() -> list[str]:
    """Names of the shipped vocabularies."""
    return sorted(p.stem for p in VOCAB_DIR.glob("*.json") if p.stem != "official_paths")


@lru_cache(maxsize=None)
def class_list_for_official_path(official_path: str) -> tuple[str, ...]:
    """The class list an official config's TRAIN_CLASS_JSON / TEST_CLASS_JSON path stands for.

    Example: "datasets/coco/coco_stuff/split/seen_classnames.json" -> the 156 seen COCO-Stuff names.
    """
    with open(VOCAB_DIR / "official_paths.json", encoding="utf-8") as f:
        table = json.load(f)
    entry = table.get(official_path)
    if entry is None:
        raise ConfigError(f"unknown class list {official_path!r}: add it to "
                          f"{VOCAB_DIR / 'official_paths.json'}")
    vocab = load_vocabulary(entry["file"])
    unseen = set(vocab.get("unseen", []))
    subset = entry.get("subset", "all")
    if subset == "seen":
        return tuple(c for c in vocab["classes"] if c not in unseen)
    if subset == "unseen":
        return tuple(c for c in vocab["classes"] if c in unseen)
    return tuple(vocab["classes"])

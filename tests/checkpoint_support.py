"""Shared helpers and fixtures of the checkpoint tests: expected key lists per released config
(official, or derived by the rule in test_checkpoint.py's docstring) and rule-made state dicts."""
from __future__ import annotations

import fractions
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from fake_weights import KEYS_DIR, clip_state_dict, read_key_list, save_clip_file, \
    zegformer_state_dict
from zegformer import WeightsError, ZegFormerError, build_model, list_configs, load_checkpoint, \
    load_config, load_predictor, read_state_dict
from zegformer.loading.checkpoint import DROPPED_KEY_PREFIXES, detect_format, unwrap_state_dict
from zegformer.loading.clip import build_clip
from zegformer.modeling.clip_adapter import ClipAdapter
from zegformer.loading.weights import WEIGHTS_ENV, resolve_weights

COCO_TRAIN = "zegformer_R101_bs32_60k_vit16_coco-stuff"
COCO_GZSS = "zegformer_R101_bs32_60k_vit16_coco-stuff_gzss_eval"
COCO_R50_GZSS = "zegformer_R50_bs32_60k_vit16_coco-stuff_gzss_eval"
VOC_GZSS = "zegformer_R101_bs32_10k_vit16_voc_gzss_eval"
BASELINE_LIST = "zegformer_R101_bs32_60k_vit16_coco-stuff_gzss_eval_baseline"
BASELINE_OPTS = ["MODEL.META_ARCHITECTURE", "SemanticSegmentorGzero",
                 "MODEL.SEM_SEG_HEAD.NAME", "ZeroshotPerPixelBaselineHead"]
OFFICIAL_LISTS = {COCO_TRAIN: COCO_TRAIN, COCO_GZSS: COCO_GZSS, VOC_GZSS: VOC_GZSS}
RELEASED = sorted(n for n in list_configs() if n != "tiny")
KEEP_BUILT = (COCO_GZSS, COCO_R50_GZSS)  # used by several tests: built once, kept


def _stem(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _ckpt_rows(list_name: str) -> dict[str, list[int]]:
    """{key: shape} of the keys an official checkpoint holds (not the CLIP keys)."""
    return {k: shape for k, shape, _, where in read_key_list(KEYS_DIR / f"{list_name}.txt")
            if where == "ckpt"}


def _nearest_list(name: str) -> str:
    cfg = load_config(name)
    if not cfg.MODEL.SEM_SEG_HEAD.CLIP_CLASSIFICATION:
        return COCO_TRAIN
    return VOC_GZSS if "voc" in name else COCO_GZSS


_R50_DROPPED = re.compile(r"backbone\.res4\.(\d+)\.")


def expected_rows(name: str) -> dict[str, list[int]]:
    """The checkpoint keys and shapes of config `name` (official list, or derived by the rule)."""
    stem = _stem(name)
    if stem in OFFICIAL_LISTS:
        return _ckpt_rows(OFFICIAL_LISTS[stem])
    cfg = load_config(name)
    rows = dict(_ckpt_rows(_nearest_list(name)))
    if cfg.MODEL.RESNETS.DEPTH == 50:
        rows = {k: v for k, v in rows.items()
                if not ((m := _R50_DROPPED.match(k)) and int(m.group(1)) >= 6)}
    else:
        assert cfg.MODEL.RESNETS.DEPTH == 101
    rows["criterion.empty_weight"] = [cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES + 1]
    return rows


def _model_keys(rows: dict[str, list[int]]) -> dict[str, list[int]]:
    return {k: v for k, v in rows.items() if not k.startswith("criterion.")}


def _by_attribute(model: torch.nn.Module, key: str) -> torch.Tensor:
    """The tensor the module tree holds under dotted `key`, reached by getattr (not state_dict)."""
    obj = model
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.fixture(scope="module")
def fake_official():
    """Rule-made official state dicts, made lazily, once per key list (about 2 s each)."""
    made: dict[str, dict[str, torch.Tensor]] = {}

    def get(list_name: str) -> dict[str, torch.Tensor]:
        if list_name not in made:
            made[list_name] = zegformer_state_dict(KEYS_DIR / f"{list_name}.txt")
        return made[list_name]

    yield get
    made.clear()


@pytest.fixture(scope="module")
def built():
    """build_model per config; the configs in KEEP_BUILT are built once and shared."""
    cache: dict[str, torch.nn.Module] = {}

    def get(name: str) -> torch.nn.Module:
        stem = _stem(name)
        if stem in cache:
            return cache[stem]
        model = build_model(name)
        if stem in KEEP_BUILT:
            cache[stem] = model
        return model

    yield get
    cache.clear()


def fake_for(name: str, fake_official) -> dict[str, torch.Tensor]:
    """Fake official state dict for config `name` (derived configs reuse the official tensors)."""
    stem = _stem(name)
    if stem in OFFICIAL_LISTS:
        return fake_official(OFFICIAL_LISTS[stem])
    source = fake_official(_nearest_list(name))
    rows = expected_rows(name)
    sd = {k: source[k] for k in rows if k in source and not k.startswith("criterion.")}
    empty_weight = torch.ones(rows["criterion.empty_weight"])
    empty_weight[-1] = 0.1
    sd["criterion.empty_weight"] = empty_weight
    return sd



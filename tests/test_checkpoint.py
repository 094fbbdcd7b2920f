"""Official checkpoints load strictly: every released config against the official key lists in
tests/data/keys (or a key list derived from them by a stated rule), every key into the parameter
of the same name, and every kind of wrong file refused with a message that names the problem.

Derivation rule for configs without an official key list (R50 variants, ADE20K, VOC 30k, 847
classes): start from the nearest official R101 list (same role: eval or training); the model
keys do not depend on the dataset; for ResNet-50 drop `backbone.res4.6` .. `backbone.res4.22`
(R101 has 23 res4 blocks, R50 has 6); `criterion.empty_weight` is sized NUM_CLASSES + 1.
"""
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

from checkpoint_support import (  # noqa: F401  (fixtures are used by name)
    COCO_TRAIN, COCO_GZSS, COCO_R50_GZSS, VOC_GZSS, BASELINE_LIST, BASELINE_OPTS, OFFICIAL_LISTS, RELEASED, _by_attribute, _ckpt_rows, _model_keys, built, expected_rows, fake_for, fake_official,
)

# ---------------------------------------------------------------- the key lists themselves


def test_official_lists_differ_only_in_the_loss_constant():
    """Justifies the derivation rule: the model keys do not depend on the dataset."""
    lists = {n: _ckpt_rows(n) for n in OFFICIAL_LISTS}
    base = _model_keys(lists[COCO_TRAIN])
    for name, rows in lists.items():
        assert _model_keys(rows) == base, name
        num_classes = load_config(name).MODEL.SEM_SEG_HEAD.NUM_CLASSES
        assert rows["criterion.empty_weight"] == [num_classes + 1]  # 157, 172, 21
    assert len(base) == 666  # the headers say 667 checkpoint keys, criterion.empty_weight included


def test_r50_rule_removes_17_res4_blocks():
    r101 = _model_keys(expected_rows(COCO_GZSS))
    r50 = _model_keys(expected_rows(COCO_R50_GZSS))
    # 17 bottleneck blocks (res4.6 .. res4.22) x 3 convs x (weight + 4 FrozenBN tensors) = 255.
    assert len(r101) - len(r50) == 255
    # Per block: 1024*256 + 256*256*9 + 256*1024 conv weights + 4*(256+256+1024) norm values
    # = 262144 + 589824 + 262144 + 6144 = 1120256; the header gives 60498797 elements with
    # criterion [172]; so R50 holds 60498797 - 172 - 17 * 1120256 = 41454273.
    assert sum(int(np.prod(s)) for s in r50.values()) == 60498797 - 172 - 17 * 1120256
    assert "backbone.res4.5.conv3.norm.running_var" in r50
    assert "backbone.res4.6.conv1.weight" not in r50


# ---------------------------------------------------------------- every released config


@pytest.mark.parametrize("name", RELEASED)
def test_released_config_builds_and_loads_strictly(name, built, fake_official):
    model = built(name)
    assert not model.training
    rows = expected_rows(name)
    own = model.state_dict()
    want = _model_keys(rows)
    # Exactly the checkpoint's keys, with exactly its shapes; only documented keys are dropped.
    assert sorted(own) == sorted(want)
    assert {k: list(v.shape) for k, v in own.items()} == want
    assert [k for k in rows if k not in own] == ["criterion.empty_weight"]
    assert all(any(k.startswith(p) for p in DROPPED_KEY_PREFIXES) for k in rows if k not in own)

    sd = fake_for(name, fake_official)
    assert set(sd) == set(rows)
    assert load_checkpoint(model, sd) == "zegformer"
    after = model.state_dict()
    for k in want:
        assert torch.equal(after[k], sd[k]), k


def test_every_key_lands_in_the_parameter_of_its_name(built):
    """Each official key gets its own constant; the module tree must hold it under that name."""
    model = built(COCO_GZSS)
    rows = expected_rows(COCO_GZSS)
    marked = {k: torch.full(shape, float(i + 1)) for i, (k, shape) in enumerate(rows.items())}
    load_checkpoint(model, {"model": marked})
    for i, k in enumerate(rows):
        if k.startswith("criterion."):
            continue
        t = _by_attribute(model, k)
        assert bool((t == float(i + 1)).all()), k
    res5 = [k for k in rows if k.startswith("backbone.res5.")]
    assert len(res5) == 3 * 3 * 5 + 5  # 3 blocks x 3 convs x 5 tensors + block 0's shortcut
    head = ["sem_seg_head.predictor.query_embed.weight", "sem_seg_head.predictor.bg_feature",
            "sem_seg_head.predictor.mask_embed.layers.2.bias"]
    for k in res5 + head:
        assert torch.equal(_by_attribute(model, k), marked[k]), k


def test_rule_weights_sample_by_attribute(built, fake_official):
    model = built(COCO_GZSS)
    sd = fake_official(COCO_GZSS)
    load_checkpoint(model, sd)
    p = model.sem_seg_head.predictor
    assert torch.equal(p.query_embed.weight, sd["sem_seg_head.predictor.query_embed.weight"])
    assert torch.equal(p.bg_feature, sd["sem_seg_head.predictor.bg_feature"])
    assert torch.equal(p.mask_embed.layers[1].weight,
                       sd["sem_seg_head.predictor.mask_embed.layers.1.weight"])
    assert torch.equal(p.transformer.decoder.layers[5].multihead_attn.in_proj_weight,
                       sd["sem_seg_head.predictor.transformer.decoder.layers.5.multihead_attn."
                          "in_proj_weight"])
    assert torch.equal(model.backbone.res4[22].conv2.norm.weight,
                       sd["backbone.res4.22.conv2.norm.weight"])
    assert torch.equal(model.sem_seg_head.pixel_decoder.layer_4.weight,
                       sd["sem_seg_head.pixel_decoder.layer_4.weight"])
    assert p.logit_scale.item() == pytest.approx(np.log(100.0))


# ---------------------------------------------------------------- wrong keys are named


def test_missing_key_is_named(built, fake_official):
    sd = dict(fake_official(COCO_GZSS))
    del sd["sem_seg_head.predictor.query_embed.weight"]
    with pytest.raises(WeightsError, match=r"missing keys: sem_seg_head\.predictor\.query_embed"):
        load_checkpoint(built(COCO_GZSS), sd)


def test_unexpected_key_is_named(built, fake_official):
    sd = dict(fake_official(COCO_GZSS))
    sd["sem_seg_head.predictor.extra_head.weight"] = torch.zeros(3)
    with pytest.raises(WeightsError, match=r"unexpected keys: sem_seg_head\.predictor\.extra_head"):
        load_checkpoint(built(COCO_GZSS), sd)


def test_shape_mismatch_is_named_with_both_shapes(built, fake_official):
    sd = dict(fake_official(COCO_GZSS))
    sd["sem_seg_head.predictor.bg_feature"] = torch.zeros(1, 256)
    model = built(COCO_GZSS)
    before = model.sem_seg_head.predictor.bg_feature.clone()
    with pytest.raises(WeightsError, match=r"sem_seg_head\.predictor\.bg_feature "
                                           r"\(file \(1, 256\), model \(1, 512\)\)"):
        load_checkpoint(model, sd)
    assert torch.equal(model.sem_seg_head.predictor.bg_feature, before)  # nothing half-loaded


def test_r50_checkpoint_into_r101_model_names_the_missing_blocks(built, fake_official):
    sd = fake_for(COCO_R50_GZSS, fake_official)
    with pytest.raises(WeightsError, match=r"missing keys: backbone\.res4\.10\.") as err:
        load_checkpoint(built(COCO_GZSS), sd)
    assert "(255 in all)" in str(err.value)


def test_training_checkpoint_loads_into_eval_config(built, fake_official):
    """criterion.empty_weight [157] vs [172]: a loss constant, dropped (see the keys README)."""
    sd = fake_official(COCO_TRAIN)
    assert sd["criterion.empty_weight"].shape == (157,)
    assert load_checkpoint(built(COCO_GZSS), sd) == "zegformer"


def test_documented_extra_entries_are_dropped(built, fake_official):
    sd = dict(fake_official(COCO_GZSS))
    sd["sem_seg_head.predictor.clip_model.visual.proj"] = torch.zeros(768, 512)
    sd["pixel_mean"] = torch.zeros(3, 1, 1)
    assert load_checkpoint(built(COCO_GZSS), sd) == "zegformer"


def test_containers_and_prefixes_unwrap_on_load(built, fake_official):
    sd = fake_official(COCO_GZSS)
    wrapped = {"state_dict": {"module." + k: v for k, v in sd.items()}, "iteration": 59999}
    assert load_checkpoint(built(COCO_GZSS), wrapped) == "zegformer"


# ---------------------------------------------------------------- per-pixel baseline


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, fake_official):
    """load_predictor on an official baseline checkpoint (tiny random CLIP: only the ZegFormer
    weights matter here)."""
    sd = fake_official(BASELINE_LIST)
    path = tmp_path_factory.mktemp("baseline") / "baseline.pth"
    torch.save({"model": sd}, path)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("ZEGFORMER_CLIP_WEIGHTS", raising=False)
        predictor = load_predictor(COCO_GZSS, path, device="cpu",
                                   opts=["MODEL.SEM_SEG_HEAD.CLIP_PRETRAINED", "tiny"])
    path.unlink()
    return predictor, sd


def test_baseline_checkpoint_builds_the_baseline(baseline):
    predictor, sd = baseline
    assert predictor.kind == "per_pixel_baseline"
    assert predictor.settings.arch == "per_pixel_baseline"
    assert predictor.modes == ("pixel",)
    assert detect_format(sd) == "per_pixel_baseline"
    rows = _ckpt_rows(BASELINE_LIST)
    own = predictor.model.state_dict()
    assert {k: list(v.shape) for k, v in own.items()} == rows  # no criterion in this list
    for k in rows:
        assert torch.equal(own[k], sd[k]), k
    assert torch.equal(predictor.model.sem_seg_head.projection_layer.weight,
                       sd["sem_seg_head.projection_layer.weight"])


def test_baseline_refuses_decoupled_mode(baseline):
    predictor, _ = baseline
    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ZegFormerError, match="per-pixel baseline.*pixel"):
        predictor.predict(image, "cat, dog", mode="decoupled")


def test_checkpoint_kind_must_match_model(baseline, built, fake_official):
    predictor, baseline_sd = baseline
    with pytest.raises(WeightsError, match="zegformer checkpoint but the model is per_pixel"):
        load_checkpoint(predictor.model, fake_official(COCO_GZSS))
    with pytest.raises(WeightsError, match="per_pixel_baseline checkpoint but the model is zeg"):
        load_checkpoint(built(COCO_GZSS), baseline_sd)



"""Weights files: detectron2 ImageNet backbones, unsafe pickles refused, containers unwrapped, CLIP
files in OpenAI layout, and where load_predictor / resolve_weights look for weights."""
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

# ---------------------------------------------------------------- detectron2 ImageNet backbone


@pytest.fixture(scope="module")
def d2_backbone_pkl(tmp_path_factory):
    """A detectron2 R-50.pkl: backbone keys without the prefix, numpy arrays, an ImageNet fc."""
    rows = expected_rows(COCO_R50_GZSS)
    arrays = {k[len("backbone."):]: np.full(shape, i + 0.5, np.float32)
              for i, (k, shape) in enumerate(rows.items()) if k.startswith("backbone.")}
    arrays["stem.conv1.weight"] = np.random.default_rng(0).standard_normal(
        (64, 3, 7, 7)).astype(np.float32)
    arrays["fc.weight"] = np.zeros((1000, 2048), np.float32)
    arrays["fc.bias"] = np.zeros(1000, np.float32)
    path = tmp_path_factory.mktemp("d2") / "R-50.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": arrays, "__author__": "torchvision", "matching_heuristics": True}, f)
    return path, arrays


def test_d2_backbone_pkl_loads_into_the_backbone_only(built, d2_backbone_pkl):
    path, arrays = d2_backbone_pkl
    model = built(COCO_R50_GZSS)
    head_before = model.sem_seg_head.predictor.query_embed.weight.clone()
    assert load_checkpoint(model, path) == "d2_backbone"
    own = model.backbone.state_dict()
    assert set(own) == set(arrays) - {"fc.weight", "fc.bias"}
    for k, v in own.items():
        assert np.array_equal(v.numpy(), arrays[k]), k
    assert torch.equal(model.sem_seg_head.predictor.query_embed.weight, head_before)


def test_d2_backbone_with_wrong_blocks_is_refused(built, tmp_path):
    sd = {"stem.conv1.weight": np.zeros((64, 3, 7, 7), np.float32),
          "res4.6.conv1.weight": np.zeros((256, 1024, 1, 1), np.float32)}
    path = tmp_path / "R-101-ish.pkl"
    path.write_bytes(pickle.dumps({"model": sd}))
    with pytest.raises(WeightsError, match=r"unexpected keys: res4\.6\.conv1\.weight"):
        load_checkpoint(built(COCO_R50_GZSS), path)


def test_load_predictor_refuses_a_backbone_only_file(d2_backbone_pkl):
    path, _ = d2_backbone_pkl
    with pytest.raises(WeightsError, match="ImageNet backbone"):
        load_predictor("tiny", path, device="cpu")


# ---------------------------------------------------------------- unsafe files


class Payload:
    """A custom class: unpickling it needs a non-numpy global."""

    def __init__(self) -> None:
        self.value = 1


class _RunsCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _pkl(tmp_path: Path, obj) -> Path:
    path = tmp_path / "weights.pkl"
    path.write_bytes(pickle.dumps(obj))
    return path


@pytest.mark.parametrize("extra", ["os.system reference", "custom class"])
def test_pkl_with_non_numpy_objects_is_refused(tmp_path, extra):
    value = os.system if extra == "os.system reference" else Payload()
    path = _pkl(tmp_path, {"model": {"stem.conv1.weight": np.zeros(3, np.float32), "x": value}})
    with pytest.raises(WeightsError, match="refusing to load .*trust_pickle=True"):
        read_state_dict(path)


def test_pkl_that_would_run_a_command_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = _pkl(tmp_path, {"model": {"stem.conv1.weight": _RunsCommand(marker)}})
    with pytest.raises(WeightsError, match="system"):
        read_state_dict(path)
    assert not marker.exists()


def test_trusted_pkl_loads_with_a_warning(tmp_path):
    path = _pkl(tmp_path, {"model": {"stem.conv1.weight": np.ones(3, np.float32)},
                           "meta": fractions.Fraction(1, 3)})
    with pytest.raises(WeightsError, match="trust_pickle"):
        read_state_dict(path)
    with pytest.warns(UserWarning, match="arbitrary code"):
        sd = read_state_dict(path, trust_pickle=True)
    assert torch.equal(sd["stem.conv1.weight"], torch.ones(3))


def test_torch_file_needing_full_unpickling_is_refused_by_default(tmp_path):
    path = tmp_path / "custom.pth"
    torch.save({"model": {"backbone.stem.conv1.weight": torch.ones(2)},
                "meta": fractions.Fraction(1, 3)}, path)
    with pytest.raises(WeightsError, match="holds Python objects besides tensors.*trust_pickle"):
        read_state_dict(path)
    with pytest.warns(UserWarning, match="arbitrary code"):
        sd = read_state_dict(path, trust_pickle=True)
    assert torch.equal(sd["backbone.stem.conv1.weight"], torch.ones(2))


# ---------------------------------------------------------------- reading and unwrapping


@pytest.mark.parametrize("container", [
    lambda sd: sd,
    lambda sd: {"model": sd, "iteration": 10},
    lambda sd: {"state_dict": sd},
    lambda sd: {"model": {"module." + k: v for k, v in sd.items()}},
    lambda sd: {"state_dict": {"_orig_mod." + k: v for k, v in sd.items()}},
    lambda sd: {"model": {"module._orig_mod." + k: v for k, v in sd.items()}},
])
def test_containers_and_prefixes_unwrap(tmp_path, container):
    sd = {"a.weight": torch.arange(3.0), "b.bias": torch.ones(2)}
    path = tmp_path / "w.pth"
    torch.save(container(sd), path)
    out = read_state_dict(path)
    assert set(out) == {"a.weight", "b.bias"}
    assert torch.equal(out["a.weight"], torch.arange(3.0))


def test_unwrap_converts_numpy_and_drops_non_tensors():
    out = unwrap_state_dict({"model": {"w": np.arange(4, dtype=np.float32)[::2], "step": 3,
                                       "name": "x"}})
    assert list(out) == ["w"] and torch.equal(out["w"], torch.tensor([0.0, 2.0]))


@pytest.mark.parametrize("obj, message", [
    ({"model": {"step": 3}}, "holds no tensors"),
    ([torch.zeros(1)], "expected a state dict"),
])
def test_unwrap_refuses_non_state_dicts(obj, message):
    with pytest.raises(WeightsError, match=message):
        unwrap_state_dict(obj)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        read_state_dict(tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(WeightsError, match="junk.pth"):
        read_state_dict(junk)


def test_unrecognised_checkpoint():
    with pytest.raises(WeightsError, match="is not a ZegFormer checkpoint.*encoder.layer.0.weight"):
        detect_format({"encoder.layer.0.weight": torch.zeros(1)})


# ---------------------------------------------------------------- CLIP file


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    return save_clip_file(tmp_path_factory.mktemp("clip") / "ViT-B-16.pt")


@pytest.fixture(scope="module")
def clip_model(clip_file):
    return build_clip("ViT-B/16", clip_file)


def test_clip_openai_layout_file_loads(clip_model):
    fake = clip_state_dict()
    own = clip_model.state_dict()
    ints = {"input_resolution", "context_length", "vocab_size"}
    assert set(own) == set(fake) - ints
    for k, v in own.items():
        assert v.dtype == torch.float32, k
        assert torch.equal(v, fake[k].float()), k
    adapter = ClipAdapter(clip_model)
    assert (adapter.embed_dim, adapter.image_size) == (512, 224)
    assert adapter.logit_scale.item() == pytest.approx(100.0, rel=1e-3)  # exp(log 100), fp16 file
    assert not clip_model.training


def test_clip_file_given_as_zegformer_weights(clip_file):
    with pytest.raises(WeightsError, match="is a CLIP state dict.*clip_weights"):
        load_predictor("tiny", clip_file, device="cpu")


def test_missing_clip_file():
    with pytest.raises(WeightsError, match="CLIP weights file not found"):
        build_clip("ViT-B/16", "/nonexistent/ViT-B-16.pt")


# ---------------------------------------------------------------- load_predictor / resolve_weights


def test_load_predictor_without_weights_says_what_to_set(monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    with pytest.raises(WeightsError, match="ZEGFORMER_WEIGHTS"):
        load_predictor("tiny", device="cpu")


def test_load_predictor_with_env_pointing_nowhere(monkeypatch, tmp_path):
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "gone.pth"))
    with pytest.raises(WeightsError, match=r"gone\.pth \(from \$ZEGFORMER_WEIGHTS\)"):
        load_predictor("tiny", device="cpu")


def test_resolve_local_path_and_env_fallback(tmp_path, monkeypatch):
    f = tmp_path / "w.pth"
    f.write_bytes(b"x")
    g = tmp_path / "g.pth"
    g.write_bytes(b"y")
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    assert resolve_weights(f) == f
    assert resolve_weights(str(f), WEIGHTS_ENV) == f
    assert resolve_weights(None, WEIGHTS_ENV) is None
    assert resolve_weights("", None) is None
    monkeypatch.setenv(WEIGHTS_ENV, str(g))
    assert resolve_weights(None, WEIGHTS_ENV) == g
    assert resolve_weights(f, WEIGHTS_ENV) == f  # an explicit path wins over the variable


def test_resolve_missing_path(tmp_path):
    with pytest.raises(WeightsError, match="weights file not found"):
        resolve_weights(tmp_path / "missing.pth")


@pytest.mark.parametrize("ref", ["hf://owner/repo", "hf://owner//model.pth", "hf://", "hf:///a/b"])
def test_resolve_malformed_hub_reference(ref):
    with pytest.raises(WeightsError, match="malformed Hub reference"):
        resolve_weights(ref)


def test_resolve_other_url_scheme():
    with pytest.raises(WeightsError, match="cannot fetch"):
        resolve_weights("https://example.com/model.pth")


def test_resolve_uncached_hub_file_offline():
    import huggingface_hub.constants

    assert huggingface_hub.constants.HF_HUB_OFFLINE  # set by conftest: no network is tried
    with pytest.raises(WeightsError, match="could not get hf://zegformer-tests/no-such-repo"):
        resolve_weights("hf://zegformer-tests/no-such-repo/weights/model.pth")


# ---------------------------------------------------------------- torchvision ImageNet ResNet


def test_torchvision_resnet_checkpoint_loads_into_the_backbone(built, tmp_path):
    """A torchvision ResNet-101 state dict (names of resnet101-63fe2227.pth) maps key by key."""
    import torchvision

    tv = torchvision.models.resnet101(weights=None)
    with torch.no_grad():
        for i, t in enumerate(tv.state_dict().values()):
            if t.is_floating_point():
                t.copy_(torch.randn_like(t) * 0.01 + i * 1e-4)
    path = tmp_path / "resnet101-63fe2227.pth"
    torch.save(tv.state_dict(), path)
    model = build_model(COCO_GZSS)
    assert load_checkpoint(model, path) == "d2_backbone"
    ours = model.backbone.state_dict()
    sd = tv.state_dict()
    torch.testing.assert_close(ours["stem.conv1.weight"], sd["conv1.weight"])
    torch.testing.assert_close(ours["stem.conv1.norm.running_var"], sd["bn1.running_var"])
    torch.testing.assert_close(ours["res2.0.shortcut.weight"], sd["layer1.0.downsample.0.weight"])
    torch.testing.assert_close(ours["res2.0.shortcut.norm.bias"], sd["layer1.0.downsample.1.bias"])
    torch.testing.assert_close(ours["res4.22.conv3.norm.weight"], sd["layer3.22.bn3.weight"])
    torch.testing.assert_close(ours["res5.2.conv2.weight"], sd["layer4.2.conv2.weight"])


def test_torchvision_resnet50_into_r101_names_the_missing_blocks(tmp_path):
    import torchvision

    path = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    with pytest.raises(WeightsError, match=r"missing keys: res4\.1\d\..*\(255 in all\)"):
        load_checkpoint(build_model(COCO_GZSS), path)

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
    with pytest.raises(WeightsError, match="cannot be read safely.*trust_pickle"):
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
    with pytest.raises(WeightsError, match="unrecognised checkpoint"):
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

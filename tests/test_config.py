"""Official YAML configs without detectron2: `_BASE_` chains, --opts, inert python tags, and the
settings every shipped config yields (expected values read by hand from the YAML chains)."""
from __future__ import annotations

from pathlib import Path

import pytest

from zegformer import ConfigError, list_configs, load_config
from zegformer.loading.config import CONFIG_DIR, UnsafeValue, apply_opts, resolve_config_path
from zegformer.loading.settings import settings_from_config

COCO_GZSS = "zegformer_R101_bs32_60k_vit16_coco-stuff_gzss_eval"
COCO_SEEN = "datasets/coco/coco_stuff/split/seen_classnames.json"
COCO_ALL = "datasets/coco/coco_stuff/split/all_classnames.json"
ADE_572 = "datasets/ADE20K_2021_17_01/ADE20K_572_pure_class.json"
ADE_847 = "datasets/ADE20K_2021_17_01/ADE20K_847_pure_class.json"
VOC_SEEN = "datasets/VOCZERO/seen_classnames.json"
VOC_ALL = "datasets/VOCZERO/all_classnames.json"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- _BASE_ inheritance


def test_base_values_survive_and_children_override(tmp_path):
    _write(tmp_path / "base.yaml", (
        "MODEL:\n"
        "  WEIGHTS: base.pth\n"
        "  RESNETS:\n"
        "    DEPTH: 50\n"
        "    STRIDE_IN_1X1: False\n"
        "  SEM_SEG_HEAD:\n"
        "    NUM_CLASSES: 156\n"
        "INPUT:\n"
        "  MIN_SIZE_TEST: 512\n"
        "MY_TRAINING_ONLY_KEY: 7\n"))
    _write(tmp_path / "mid.yaml", (
        "_BASE_: base.yaml\n"
        "MODEL:\n"
        "  RESNETS:\n"
        "    DEPTH: 101\n"))
    child = _write(tmp_path / "child.yaml", (
        "_BASE_: mid.yaml\n"
        "MODEL:\n"
        "  SEM_SEG_HEAD:\n"
        "    NUM_CLASSES: 171\n"))
    cfg = load_config(child)
    assert cfg.MODEL.RESNETS.DEPTH == 101  # from mid, overriding base's 50
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 171  # from child
    assert cfg.MODEL.WEIGHTS == "base.pth"  # from base, two levels up
    assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is False  # base overrides the default (True)
    assert cfg.INPUT.MIN_SIZE_TEST == 512
    assert cfg.MY_TRAINING_ONLY_KEY == 7  # unknown keys from files are kept
    # Untouched defaults survive the whole chain (detectron2 / add_mask_former_config values).
    assert cfg.MODEL.RESNETS.OUT_FEATURES == ["res2", "res3", "res4", "res5"]
    assert cfg.MODEL.MASK_FORMER.NHEADS == 8
    assert cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY == 32
    # A sibling of an overridden key inside the same nested node is not lost by the merge.
    assert cfg.MODEL.RESNETS.STEM_OUT_CHANNELS == 64
    assert cfg.CONFIG_FILE == str(child)
    assert "_BASE_" not in cfg


def test_official_chain_of_coco_gzss_eval():
    # gzss_eval -> R101 train -> R50 train -> Base-COCOStuff-171.
    cfg = load_config(COCO_GZSS)
    assert cfg.MODEL.RESNETS.DEPTH == 101  # R101 train file
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 171  # gzss_eval overrides 156
    assert cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM == 256  # R50 train file
    assert cfg.MODEL.PIXEL_STD == [58.395, 57.120, 57.375]  # Base file
    assert cfg.INPUT.MIN_SIZE_TEST == 640 and cfg.INPUT.MAX_SIZE_TEST == 2560  # Base file
    assert cfg.MODEL.WEIGHTS == "R-101.pkl"  # R101 train overrides the Base's R-50.pkl
    assert cfg.MODEL.PROMPT_ENSEMBLE_TYPE == "single"  # gzss_eval overrides imagenet_select
    assert cfg.DATASETS.TEST == '("coco_2017_val_all_stuff_sem_seg",)'  # YAML text, kept as is
    assert Path(cfg.CONFIG_FILE).name == COCO_GZSS + ".yaml"


def test_missing_base_file_is_a_config_error(tmp_path):
    child = _write(tmp_path / "child.yaml", "_BASE_: not-there.yaml\nMODEL:\n  WEIGHTS: x\n")
    with pytest.raises(ConfigError, match="not-there.yaml"):
        load_config(child)


def test_base_cycle_is_a_config_error(tmp_path):
    _write(tmp_path / "a.yaml", "_BASE_: b.yaml\n")
    _write(tmp_path / "b.yaml", "_BASE_: a.yaml\n")
    with pytest.raises(ConfigError, match="too deep"):
        load_config(tmp_path / "a.yaml")


@pytest.mark.parametrize("text, message", [
    ("MODEL: [unclosed\n", "not valid YAML"),
    ("- a\n- b\n", "mapping at the top level"),
])
def test_malformed_files_are_config_errors(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path / "bad.yaml", text))


def test_empty_file_gives_the_defaults(tmp_path):
    cfg = load_config(_write(tmp_path / "empty.yaml", ""))
    assert cfg.MODEL.RESNETS.DEPTH == 50 and cfg.INPUT.MIN_SIZE_TEST == 800


# ---------------------------------------------------------------- names and paths


def test_missing_config_name_is_a_config_error():
    with pytest.raises(ConfigError, match="no_such_config"):
        load_config("no_such_config")


def test_config_found_by_name_with_or_without_suffix_and_by_relative_path():
    by_name = resolve_config_path(COCO_GZSS)
    assert by_name == CONFIG_DIR / "coco-stuff" / (COCO_GZSS + ".yaml")
    assert resolve_config_path(COCO_GZSS + ".yaml") == by_name
    assert resolve_config_path("coco-stuff/" + COCO_GZSS) == by_name


# ---------------------------------------------------------------- --opts


def test_opts_override_with_types():
    cfg = load_config(COCO_GZSS, [
        "MODEL.WEIGHTS", "my.pth",
        "INPUT.MIN_SIZE_TEST", "512",
        "MODEL.MASK_FORMER.GZERO_CALIBRATE", "0",  # int text for a float key -> float
        "MODEL.SEM_SEG_HEAD.CLIP_CLASSIFICATION", "False",
        "MODEL.PIXEL_MEAN", "[1, 2, 3]",
        "MODEL.RESNETS.DEPTH", "50.0",  # integer-valued float for an int key -> int
    ])
    assert cfg.MODEL.WEIGHTS == "my.pth"
    assert cfg.INPUT.MIN_SIZE_TEST == 512 and type(cfg.INPUT.MIN_SIZE_TEST) is int
    assert cfg.MODEL.MASK_FORMER.GZERO_CALIBRATE == 0.0
    assert type(cfg.MODEL.MASK_FORMER.GZERO_CALIBRATE) is float
    assert cfg.MODEL.SEM_SEG_HEAD.CLIP_CLASSIFICATION is False
    assert cfg.MODEL.PIXEL_MEAN == [1, 2, 3]
    assert cfg.MODEL.RESNETS.DEPTH == 50 and type(cfg.MODEL.RESNETS.DEPTH) is int
    s = settings_from_config(cfg)
    assert (s.depth, s.min_size_test, s.gzero_calibrate, s.clip_classification) == \
        (50, 512, 0.0, False)


def test_opts_string_key_keeps_text_that_looks_like_a_number():
    cfg = load_config(COCO_GZSS, ["MODEL.WEIGHTS", "123"])
    assert cfg.MODEL.WEIGHTS == "123"


@pytest.mark.parametrize("key", ["MODEL.NOPE", "NOPE.WEIGHTS", "MODEL.WEIGHTS.DEEPER",
                                 "MODEL.RESNETS.DEPTHH"])
def test_opts_unknown_key_names_the_key(key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(COCO_GZSS, [key, "1"])


def test_opts_odd_count():
    with pytest.raises(ConfigError, match="odd number"):
        load_config(COCO_GZSS, ["MODEL.WEIGHTS", "a.pth", "INPUT.MIN_SIZE_TEST"])


@pytest.mark.parametrize("key, value, message", [
    ("INPUT.MIN_SIZE_TEST", "big", "expects a number"),
    ("INPUT.MIN_SIZE_TEST", "True", "expects a number"),
    ("INPUT.MIN_SIZE_TEST", "512.5", "expects an integer"),
    ("MODEL.MASK_FORMER.GZERO_CALIBRATE", "[0.1]", "expects a number"),
    ("MODEL.MASK_FORMER.ENSEMBLING", "1", "expects True or False"),
    ("MODEL.MASK_FORMER.ENSEMBLING", "yes", "expects True or False"),
    ("MODEL.PIXEL_MEAN", "abc", "expects a list"),
])
def test_opts_wrong_type(key, value, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(COCO_GZSS, [key, value])
    assert key in str(err.value)


def test_failed_opts_leave_loaded_values_alone():
    cfg = load_config(COCO_GZSS)
    with pytest.raises(ConfigError):
        apply_opts(cfg, ["INPUT.MIN_SIZE_TEST", "x"])
    assert cfg.INPUT.MIN_SIZE_TEST == 640


# ---------------------------------------------------------------- inert python tags


def test_official_eval_tag_is_kept_as_inert_text():
    cfg = load_config(COCO_GZSS)
    value = cfg.INPUT.MIN_SIZE_TRAIN
    assert isinstance(value, UnsafeValue) and isinstance(value, str)
    # Evaluated it would be the list [320, 384, ..., 960]; kept, it is the tag and its text.
    assert value == "!!python/object/apply:eval [int(x * 0.1 * 640) for x in range(5, 16)]"


@pytest.mark.parametrize("template", [
    "X: !!python/object/apply:os.system [\"touch {marker}\"]\n",
    "X: !!python/object/apply:os.system {{args: [\"touch {marker}\"]}}\n",
    "X: !!python/object/new:os.system [\"touch {marker}\"]\n",
    "X: !!python/name:os.system\nY: !!python/object/apply:os.system [\"touch {marker}\"]\n",
])
def test_python_tags_are_never_executed(tmp_path, template):
    marker = tmp_path / "pwned"
    path = _write(tmp_path / "evil.yaml", template.format(marker=marker))
    cfg = load_config(path)
    assert not marker.exists()
    assert isinstance(cfg.X, UnsafeValue) and "os.system" in cfg.X


def test_python_tag_in_a_base_file_is_inert_too(tmp_path):
    marker = tmp_path / "pwned"
    _write(tmp_path / "base.yaml",
           f"INPUT:\n  MIN_SIZE_TRAIN: !!python/object/apply:os.system [\"touch {marker}\"]\n")
    cfg = load_config(_write(tmp_path / "child.yaml", "_BASE_: base.yaml\n"))
    assert not marker.exists()
    assert isinstance(cfg.INPUT.MIN_SIZE_TRAIN, UnsafeValue)


# ---------------------------------------------------------------- every shipped config

# Values read by hand from each YAML chain (Base -> R50 train -> R101 train -> eval file) and
# the defaults of add_mask_former_config: depth, NUM_CLASSES, CLIP_CLASSIFICATION,
# MASK_FORMER.GZERO_CALIBRATE (default -1.0), ENSEMBLING (default False), PROMPT_ENSEMBLE_TYPE,
# MIN_SIZE_TEST, MAX_SIZE_TEST, TRAIN_CLASS_JSON, TEST_CLASS_JSON.
EXPECTED = {
    "coco-stuff/zegformer_R101_bs32_60k_vit16_coco-stuff":
        (101, 156, False, -1.0, False, "imagenet_select", 640, 2560, COCO_SEEN, COCO_SEEN),
    "coco-stuff/zegformer_R101_bs32_60k_vit16_coco-stuff_gzss_eval":
        (101, 171, True, 0.1, True, "single", 640, 2560, COCO_SEEN, COCO_ALL),
    "coco-stuff/zegformer_R101_bs32_60k_vit16_coco-stuff_gzss_eval_847_classes":
        (101, 847, True, 0.0, False, "imagenet_select", 640, 2560, COCO_SEEN, ADE_847),
    "coco-stuff/zegformer_R50_bs32_60k_vit16_coco-stuff":
        (50, 156, False, -1.0, False, "imagenet_select", 640, 2560, COCO_SEEN, COCO_SEEN),
    "coco-stuff/zegformer_R50_bs32_60k_vit16_coco-stuff_gzss_eval":
        (50, 171, True, 0.1, True, "imagenet_select", 640, 2560, COCO_SEEN, COCO_ALL),
    "coco-stuff/zegformer_R50_bs32_60k_vit16_coco-stuff_gzss_eval_847_classes":
        (50, 847, True, 0.0, False, "imagenet_select", 640, 2560, COCO_SEEN, ADE_847),
    "ade20k-full-847-freq/zegformer_R50_bs32_60k_vit16_ade20k-full-847-freq":
        (50, 572, False, -1.0, False, "imagenet_select", 512, 2048, ADE_572, ADE_572),
    "ade20k-full-847-freq/zegformer_R50_bs32_60k_vit16_ade20k-full-847-freq_gzss_eval":
        (50, 847, True, 0.0, True, "imagenet_select", 512, 2048, ADE_572, ADE_847),
    "pascal_voc/zegformer_R101_bs32_10k_vit16_voc":
        (101, 15, False, -1.0, False, "single", 512, 2048, VOC_SEEN, VOC_SEEN),
    "pascal_voc/zegformer_R101_bs32_10k_vit16_voc_gzss_eval":
        (101, 20, True, 0.1, True, "single", 512, 2048, VOC_SEEN, VOC_ALL),
    "pascal_voc/zegformer_R101_bs32_30k_vit16_voc":
        (101, 15, False, -1.0, False, "single", 512, 2048, VOC_SEEN, VOC_SEEN),
    "pascal_voc/zegformer_R101_bs32_30k_vit16_voc_gzss_eval":
        (101, 20, True, 0.1, True, "single", 512, 2048, VOC_SEEN, VOC_ALL),
    "pascal_voc/zegformer_R50_bs32_10k_vit16_voc":
        (50, 15, False, -1.0, False, "single", 512, 2048, VOC_SEEN, VOC_SEEN),
    "pascal_voc/zegformer_R50_bs32_10k_vit16_voc_gzss_eval":
        (50, 20, True, -1.0, False, "single", 512, 2048, VOC_SEEN, VOC_ALL),
    "pascal_voc/zegformer_R50_bs32_30k_vit16_voc":
        (50, 15, False, -1.0, False, "single", 512, 2048, VOC_SEEN, VOC_SEEN),
    "pascal_voc/zegformer_R50_bs32_30k_vit16_voc_gzss_eval":
        (50, 20, True, 0.1, True, "single", 512, 2048, VOC_SEEN, VOC_ALL),
    "pascal_voc2/zegformer_R101_bs32_10k_vit16_voc2":
        (101, 15, False, -1.0, False, "single", 512, 2048, VOC_SEEN, VOC_SEEN),
    "pascal_voc2/zegformer_R101_bs32_10k_vit16_voc2_gzss_eval":
        (101, 20, True, 0.1, True, "single", 512, 2048, VOC_SEEN, VOC_ALL),
    "pascal_voc2/zegformer_R50_bs32_10k_vit16_gzss_eval_voc2":
        (50, 20, True, -1.0, False, "single", 512, 2048, VOC_SEEN, VOC_ALL),
    "pascal_voc2/zegformer_R50_bs32_10k_vit16_voc2":
        (50, 15, False, -1.0, False, "single", 512, 2048, VOC_SEEN, VOC_SEEN),
    # tiny: the R50 COCO gzss_eval chain with small sizes.
    "tiny": (18, 171, True, 0.1, True, "imagenet_select", 160, 640, COCO_SEEN, COCO_ALL),
}


def test_list_configs_is_exactly_the_shipped_set():
    on_disk = {str(p.relative_to(CONFIG_DIR).with_suffix(""))
               for p in CONFIG_DIR.rglob("*.yaml") if not p.name.startswith("Base-")}
    assert set(list_configs()) == on_disk == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_shipped_config_gives_its_official_settings(name):
    cfg = load_config(name)
    s = settings_from_config(cfg)
    depth, num_classes, clip_cls, calibrate, ens, prompts, short, long_, train, test = \
        EXPECTED[name]
    assert s.depth == depth
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == num_classes
    assert s.clip_classification is clip_cls
    assert s.gzero_calibrate == pytest.approx(calibrate)
    assert s.ensembling is ens
    assert s.ensembling_all_cls is False
    assert s.prompt_ensemble_type == prompts
    assert (s.min_size_test, s.max_size_test) == (short, long_)
    assert (s.train_class_json, s.test_class_json) == (train, test)
    # Shared by every released file (Base files and add_mask_former_config defaults).
    assert s.arch == "zegformer"
    assert s.stride_in_1x1 is False  # "torchvision" ResNets; the detectron2 default is True
    assert s.res5_dilation == 1
    assert s.pixel_mean == (123.675, 116.28, 103.53)
    assert s.pixel_std == (58.395, 57.12, 57.375)
    assert s.clip_pixel_mean == (122.7709383, 116.7460125, 104.09373615)
    assert s.size_divisibility == 32  # MASK_FORMER.SIZE_DIVISIBILITY, not INPUT's training crop
    assert s.clip_cls_style == "cropmask"
    assert s.temperature == 0.01
    assert s.ensemble_lambda == pytest.approx(2 / 3)
    assert cfg.INPUT.FORMAT == "RGB"
    if name == "tiny":
        assert (s.clip_name, s.embed_dim, s.hidden_dim, s.num_queries) == ("tiny", 32, 32, 10)
    else:
        assert s.clip_name == "ViT-B/16" and s.clip_open_clip_name == "ViT-B-16"
        assert (s.stem_out_channels, s.res2_out_channels, s.width_per_group) == (64, 256, 64)
        assert (s.conv_dim, s.mask_dim, s.hidden_dim, s.embed_dim) == (256, 256, 256, 512)
        assert (s.num_queries, s.nheads, s.dim_feedforward, s.dec_layers) == (100, 8, 2048, 6)
        assert s.enforce_input_proj is False
    assert isinstance(cfg.INPUT.MIN_SIZE_TRAIN, UnsafeValue)  # every Base file has the eval tag


# ---------------------------------------------------------------- settings_from_config


def test_per_pixel_baseline_settings():
    cfg = load_config(COCO_GZSS, ["MODEL.META_ARCHITECTURE", "SemanticSegmentorGzero",
                                  "MODEL.SEM_SEG_HEAD.NAME", "ZeroshotPerPixelBaselineHead"])
    s = settings_from_config(cfg)
    assert s.arch == "per_pixel_baseline"
    assert s.size_divisibility == 0  # backbone.size_divisibility of a ResNet: no padding
    assert s.clip_classification is False  # no CLIP image branch in the baseline
    assert s.gzero_calibrate == pytest.approx(0.1)  # falls back to MASK_FORMER's value
    apply_opts(cfg, ["MODEL.SEM_SEG_HEAD.GZERO_CALIBRATE", "0.3"])
    assert settings_from_config(cfg).gzero_calibrate == pytest.approx(0.3)


@pytest.mark.parametrize("opts, message", [
    (["MODEL.BACKBONE.NAME", "build_swin_backbone"], "only ResNets"),
    (["MODEL.SEM_SEG_HEAD.NAME", "MaskFormerHead"], "SEM_SEG_HEAD.NAME"),
    (["INPUT.FORMAT", "YUV"], "RGB or BGR"),
    (["MODEL.PIXEL_MEAN", "[1.0, 2.0]"], "3 values"),
])
def test_unsupported_settings_are_config_errors(opts, message):
    with pytest.raises(ConfigError, match=message):
        settings_from_config(load_config(COCO_GZSS, opts))

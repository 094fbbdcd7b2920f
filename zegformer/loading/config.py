"""Official ZegFormer / detectron2 YAML configs without detectron2.

A config is a tree of `CfgNode` (a dict with attribute access). `load_config` merges, in order:
the defaults below (detectron2's and ZegFormer's `add_mask_former_config`, for the keys this
project uses), the `_BASE_` chain of the file, the file itself, then `--opts KEY VALUE` pairs.

Safety: files are parsed with `yaml.SafeLoader`. The official base files contain
`!!python/object/apply:eval ["[int(x * 0.1 * 640) for x in range(5, 16)]"]` (a training-only
key); such a tag is never evaluated: it becomes an `UnsafeValue` placeholder holding the text,
and reading it as a number fails with a clear message. YAML anchors and aliases (`&a`, `*a`) are
refused while parsing (no official config uses them, and a 1 KB "billion laughs" file of nested
aliases would otherwise expand into billions of values); so are files over `MAX_CONFIG_BYTES`
and nesting deeper than `MAX_CONFIG_DEPTH`.
"""
from __future__ import annotations

import ast
import copy
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from .. import resources
from ..errors import ConfigError

CONFIG_DIR = resources.config_dir()
DEFAULT_CONFIG = "zegformer_R101_bs32_60k_vit16_coco-stuff_gzss_eval"  # the app's and CLIs' default
MAX_CONFIG_BYTES = 1_000_000  # the official configs are under 2 KB each
MAX_CONFIG_DEPTH = 50  # nested mappings / lists in one file (the official ones use 5)


class CfgNode(dict):
    """A nested dict with attribute access (`cfg.MODEL.WEIGHTS`), like detectron2's CfgNode."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __deepcopy__(self, memo: dict) -> "CfgNode":
        return CfgNode({k: copy.deepcopy(v, memo) for k, v in self.items()})


class UnsafeValue(str):
    """Text of a YAML tag that asked for code execution; kept as inert text, never evaluated."""


def _to_node(obj: Any) -> Any:
    if isinstance(obj, dict):
        return CfgNode({k: _to_node(v) for k, v in obj.items()})
    if isinstance(obj, list):
        return [_to_node(v) for v in obj]
    return obj


def _c(**kw: Any) -> CfgNode:
    return _to_node(kw)


def default_config() -> CfgNode:
    """The default values of every key the model, predictor and tools read."""
    return _c(
        MODEL=dict(
            META_ARCHITECTURE="MaskFormer",
            WEIGHTS="",
            PIXEL_MEAN=[123.675, 116.28, 103.53],
            PIXEL_STD=[58.395, 57.12, 57.375],
            CLIP_PIXEL_MEAN=[122.7709383, 116.7460125, 104.09373615],
            CLIP_PIXEL_STD=[68.5005327, 66.6321579, 70.323163],
            CLIP_CLS_STYLE="cropmask",
            PROMPT_ENSEMBLE=False,
            PROMPT_ENSEMBLE_TYPE="single",
            DEVICE="cuda",
            BACKBONE=dict(NAME="build_resnet_backbone", FREEZE_AT=2),
            RESNETS=dict(
                DEPTH=50,
                OUT_FEATURES=["res2", "res3", "res4", "res5"],
                NUM_GROUPS=1,
                NORM="FrozenBN",
                WIDTH_PER_GROUP=64,
                STRIDE_IN_1X1=True,
                RES5_DILATION=1,
                RES2_OUT_CHANNELS=256,
                STEM_OUT_CHANNELS=64,
                STEM_TYPE="basic",
                RES5_MULTI_GRID=[1, 1, 1],
            ),
            SEM_SEG_HEAD=dict(
                NAME="ZegFormerHead",
                IN_FEATURES=["res2", "res3", "res4", "res5"],
                IGNORE_VALUE=255,
                NUM_CLASSES=54,
                CONVS_DIM=256,
                COMMON_STRIDE=4,
                NORM="GN",
                LOSS_WEIGHT=1.0,
                MASK_DIM=256,
                TRANSFORMER_ENC_LAYERS=0,
                PIXEL_DECODER_NAME="BasePixelDecoder",
                GZERO_CALIBRATE=-1.0,
                TRAIN_CLASS_JSON="datasets/ADE20K_2021_17_01/ADE20K_847.json",
                TEST_CLASS_JSON="datasets/ADE20K_2021_17_01/ADE20K_847.json",
                TRAIN_CLASS_INDEXES="datasets/coco/coco_stuff/split/seen_indexes.json",
                TEST_CLASS_INDEXES="datasets/coco/coco_stuff/split/unseen_indexes.json",
                CLIP_CLASSIFICATION=False,
                DENSECLIP=False,
                MASKATTENTIONPOOL=False,
                CLIP_PRETRAINED="ViT-B/32",
                CLIP_PRETRAINED_IMG="ViT-B/32",
                CLIP_EMBED_DIM=512,  # this project's key: width of the CLIP joint space
                WORDVEC=False,
                TEMPERATURE=0.01,
            ),
            MASK_FORMER=dict(
                DEEP_SUPERVISION=True,
                NO_OBJECT_WEIGHT=0.1,
                DICE_WEIGHT=1.0,
                MASK_WEIGHT=20.0,
                NHEADS=8,
                DROPOUT=0.1,
                DIM_FEEDFORWARD=2048,
                ENC_LAYERS=0,
                DEC_LAYERS=6,
                PRE_NORM=False,
                HIDDEN_DIM=256,
                NUM_OBJECT_QUERIES=100,
                TRANSFORMER_IN_FEATURE="res5",
                ENFORCE_INPUT_PROJ=False,
                SIZE_DIVISIBILITY=32,
                GZERO_CALIBRATE=-1.0,
                ENSEMBLING=False,
                ENSEMBLING_ALL_CLS=False,
                GZERO_CALIBRATE_BEFORE=-1.0,
                SEMANTIC_QUERY_MULTIPLIER=0.1,  # LR factor of "semantic_query" modules
                TEST=dict(
                    PANOPTIC_ON=False,
                    OBJECT_MASK_THRESHOLD=0.0,
                    OVERLAP_THRESHOLD=0.0,
                    SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE=False,
                ),
            ),
        ),
        INPUT=dict(
            MIN_SIZE_TEST=800,
            MAX_SIZE_TEST=1333,
            FORMAT="BGR",
            SIZE_DIVISIBILITY=-1,
            DATASET_MAPPER_NAME="mask_former_semantic",
        ),
        # ROOT (ours): where official dataset names are looked up; "" = $DETECTRON2_DATASETS,
        # else ./datasets (as detectron2). A name "folder:PATH" is a folder dataset at PATH.
        DATASETS=dict(TRAIN=(), TEST=(), VAL_ALL=("coco_2017_val_all_stuff_sem_seg",), ROOT=""),
        DATALOADER=dict(NUM_WORKERS=4, FILTER_EMPTY_ANNOTATIONS=False),
        OUTPUT_DIR="./output",
        SEED=-1,  # < 0: seed 0 (this trainer is reproducible by default)
        # detectron2's test-time augmentation defaults; the COCO-Stuff and VOC base files set
        # their own (COCO: 320..1120, 4480), ADE20K-Full keeps these.
        TEST=dict(
            EVAL_PERIOD=0,  # training: evaluate every N iterations (0: none in between)
            AUG=dict(
                ENABLED=False,
                MIN_SIZES=[400, 500, 600, 700, 800, 900, 1000, 1100, 1200],
                MAX_SIZE=4000,
                FLIP=True,
            ),
        ),
        # Training: detectron2 defaults, + add_deeplab_config (POLY_LR_*) and
        # add_mask_former_config (OPTIMIZER, BACKBONE_MULTIPLIER, WEIGHT_DECAY_EMBED).
        SOLVER=dict(
            OPTIMIZER="ADAMW",  # ADAMW | SGD
            BASE_LR=0.001,
            MOMENTUM=0.9,  # SGD only
            WEIGHT_DECAY=0.0001,
            WEIGHT_DECAY_NORM=0.0,  # parameters of normalisation layers
            WEIGHT_DECAY_EMBED=0.0,  # nn.Embedding weights (the learned queries)
            BACKBONE_MULTIPLIER=0.1,  # LR factor of parameters under a "backbone" module
            LR_SCHEDULER_NAME="WarmupMultiStepLR",  # the ZegFormer configs all set WarmupPolyLR
            MAX_ITER=40000,
            WARMUP_FACTOR=0.001,
            WARMUP_ITERS=1000,
            WARMUP_METHOD="linear",  # linear | constant
            POLY_LR_POWER=0.9,
            POLY_LR_CONSTANT_ENDING=0.0,
            IMS_PER_BATCH=16,  # global batch (all processes)
            CHECKPOINT_PERIOD=5000,
            CLIP_GRADIENTS=dict(
                ENABLED=False,
                CLIP_TYPE="value",  # full_model | value | norm
                CLIP_VALUE=1.0,
                NORM_TYPE=2.0,
            ),
            AMP=dict(ENABLED=False),
        ),
        VERSION=2,
    )


class _RefusedYaml(yaml.YAMLError):
    """A construct `_SafeLoader` does not read (anchor, alias, too deep); the message says which."""


class _SafeLoader(yaml.SafeLoader):
    """SafeLoader that turns `!!python/...` tags into inert `UnsafeValue` text and refuses
    anchors / aliases and deep nesting before any node is built (no alias is ever expanded)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        line = event.start_mark.line + 1 if event.start_mark is not None else "?"
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _RefusedYaml(f"line {line}: YAML anchors and aliases (&name, *name) are not "
                               "allowed in config files; write the values out")
        depth = getattr(self, "_zf_depth", 0)
        if depth >= MAX_CONFIG_DEPTH:
            raise _RefusedYaml(f"line {line}: nested deeper than {MAX_CONFIG_DEPTH} levels")
        self._zf_depth = depth + 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._zf_depth = depth


def _inert_python_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> UnsafeValue:
    if isinstance(node, yaml.SequenceNode):
        text = " ".join(str(loader.construct_object(n, deep=True)) for n in node.value)
    else:
        text = str(getattr(node, "value", ""))
    return UnsafeValue(f"!!python/{suffix} {text}".strip())


_SafeLoader.add_multi_constructor("tag:yaml.org,2002:python/", _inert_python_tag)


def _read_yaml(path: Path) -> dict:
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config ({e.strerror})") from None
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: config file is too large ({size} bytes; at most "
                          f"{MAX_CONFIG_BYTES})")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=_SafeLoader)  # noqa: S506 - a SafeLoader subclass
    except _RefusedYaml as e:
        raise ConfigError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping at the top level")
    return data


def _merge(base: CfgNode, update: dict, where: str, allow_new: bool) -> None:
    for key, value in update.items():
        if key == "_BASE_":
            continue
        if key not in base:
            if not allow_new:
                raise ConfigError(f"{where}: unknown config key {key!r}")
            base[key] = _to_node(value)
        elif isinstance(base[key], dict) and isinstance(value, dict):
            _merge(base[key], value, f"{where}.{key}", allow_new)
        else:
            base[key] = _to_node(value)


def resolve_config_path(config: str | os.PathLike) -> Path:
    """A config path, or a config name looked up under configs/ (with or without `.yaml`)."""
    path = Path(config)
    if path.is_file():
        return path
    name = path.name if path.suffix in (".yaml", ".yml") else path.name + ".yaml"
    matches = sorted(CONFIG_DIR.rglob(name))
    if not matches and path.parts and (CONFIG_DIR / path).is_file():
        matches = [CONFIG_DIR / path]
    if not matches:
        raise ConfigError(f"config {str(config)!r} not found (see list_configs() or {CONFIG_DIR})")
    return matches[0]


def list_configs() -> list[str]:
    """Names of the configs shipped in configs/ (paths relative to it, without `.yaml`)."""
    return sorted(
        str(p.relative_to(CONFIG_DIR).with_suffix(""))
        for p in CONFIG_DIR.rglob("*.yaml")
        if not p.name.startswith("Base-")
    )


def _load_file(path: Path, depth: int = 0) -> CfgNode:
    if depth > 10:
        raise ConfigError(f"{path}: _BASE_ chain is too deep (a cycle?)")
    data = _read_yaml(path)
    base_name = data.get("_BASE_")
    if base_name is not None and not (path.parent / str(base_name)).is_file():
        raise ConfigError(f"{path}: _BASE_ file {base_name!r} not found")
    cfg = default_config() if base_name is None else _load_file(path.parent / base_name, depth + 1)
    # Keys this project does not know are kept (official files carry training-only keys).
    _merge(cfg, data, path.name, allow_new=True)
    return cfg


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def opt_value(opts: Sequence[str], key: str) -> str | None:
    """The value given for `key` in KEY VALUE overrides (the last one wins), or None."""
    opts = list(opts)
    values = [v for k, v in zip(opts[0::2], opts[1::2]) if k == key]
    return values[-1] if values else None


def split_opt(opts: Sequence[str], key: str) -> tuple[str | None, list[str]]:
    """(value of `key`, the other KEY VALUE pairs): e.g. MODEL.WEIGHTS taken out of --opts."""
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(f"--opts needs KEY VALUE pairs; got an odd number of items: {opts}")
    rest = [x for k, v in zip(opts[0::2], opts[1::2]) if k != key for x in (k, v)]
    return opt_value(opts, key), rest


def apply_opts(cfg: CfgNode, opts: Sequence[str]) -> None:
    """Apply detectron2-style overrides `["MODEL.WEIGHTS", "x.pth", "INPUT.MIN_SIZE_TEST", "512"]`.

    Values are parsed as Python literals where possible (numbers, lists, booleans), else kept as
    strings. Keys must exist, and a value must keep the type of the value it replaces.
    """
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(f"--opts needs KEY VALUE pairs; got an odd number of items: {opts}")
    for key, raw in zip(opts[0::2], opts[1::2]):
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node, dict) or p not in node:
                raise ConfigError(f"--opts: unknown config key {key!r}")
            node = node[p]
        leaf = parts[-1]
        if not isinstance(node, dict) or leaf not in node:
            raise ConfigError(f"--opts: unknown config key {key!r}")
        value = _parse_value(raw) if isinstance(raw, str) else raw
        old = node[leaf]
        if isinstance(old, bool) and not isinstance(value, bool):
            raise ConfigError(f"--opts: {key} expects True or False, got {raw!r}")
        if isinstance(old, (int, float)) and not isinstance(old, bool):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ConfigError(f"--opts: {key} expects a number, got {raw!r}")
            if isinstance(old, int) and isinstance(value, float):
                if not value.is_integer():
                    raise ConfigError(f"--opts: {key} expects an integer, got {raw!r}")
                value = int(value)
            value = type(old)(value) if isinstance(old, float) else value
        if isinstance(old, str) and not isinstance(value, str):
            value = str(raw)
        if isinstance(old, (list, tuple)):
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"--opts: {key} expects a list, got {raw!r}")
            value = type(old)(value)
        node[leaf] = value


def load_config(config: str | os.PathLike, opts: Iterable[str] = ()) -> CfgNode:
    """Load an official-schema YAML config (path or name) with `_BASE_` inheritance and overrides.

    Args:
        config: a path to a YAML file, or a name such as
            "zegformer_R101_bs32_60k_vit16_coco-stuff_gzss_eval" found under configs/.
        opts: flat KEY VALUE list, as detectron2's `--opts`.

    Returns:
        The merged CfgNode; `cfg.CONFIG_FILE` holds the resolved path.
    """
    path = resolve_config_path(config)
    cfg = _load_file(path)
    apply_opts(cfg, list(opts))
    cfg.CONFIG_FILE = str(path)
    return cfg


def config_name(cfg: CfgNode) -> str:
    """Short name of a loaded config (its file stem)."""
    return Path(cfg.get("CONFIG_FILE", "config")).stem

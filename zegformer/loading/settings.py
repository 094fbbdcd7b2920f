"""Frozen dataclasses read from a loaded config: what the builders and the predictor need."""
from __future__ import annotations

from dataclasses import dataclass

from .config import CfgNode, config_name
from ..errors import ConfigError

PIXEL_BASELINE_ARCHS = ("SemanticSegmentorGzero",)


@dataclass(frozen=True)
class TTASettings:
    """The config block TEST.AUG: detectron2's test-time augmentation (see inference/tta.py)."""

    enabled: bool = False  # TEST.AUG.ENABLED: the predictor's default for `tta`
    min_sizes: tuple[int, ...] = (400, 500, 600, 700, 800, 900, 1000, 1100, 1200)  # short sides
    max_size: int = 4000  # cap on the long side of every augmented image
    flip: bool = True  # also run the horizontally flipped copy of every size

    def __post_init__(self) -> None:
        if not self.min_sizes or any(int(v) <= 0 for v in self.min_sizes) or self.max_size <= 0:
            raise ConfigError(f"test-time augmentation needs positive sizes, got min_sizes "
                              f"{self.min_sizes}, max_size {self.max_size}")

    @property
    def n_passes(self) -> int:
        """Forward passes per image: len(min_sizes), doubled with flips."""
        return len(self.min_sizes) * (2 if self.flip else 1)


@dataclass(frozen=True)
class ModelSettings:
    """Architecture, pre-processing and scoring settings of one ZegFormer variant."""

    name: str  # config file stem
    arch: str  # "zegformer" or "per_pixel_baseline"
    depth: int  # ResNet depth
    stem_out_channels: int  # 64
    res2_out_channels: int  # 256 (R50/101)
    width_per_group: int  # 64
    stride_in_1x1: bool  # False for ZegFormer's torchvision-style ResNets
    res5_dilation: int  # 1
    conv_dim: int  # pixel decoder width (256)
    mask_dim: int  # mask feature width (256)
    hidden_dim: int  # transformer width (256)
    num_queries: int  # 100
    nheads: int  # 8
    dim_feedforward: int  # 2048
    dec_layers: int  # 6
    dropout: float  # decoder dropout, training only (0.1)
    enforce_input_proj: bool  # False
    embed_dim: int  # CLIP joint-space width (512 for ViT-B/16)
    temperature: float  # 0.01 -> logit scale 100
    clip_name: str  # "ViT-B/16" (official name) or "tiny"
    pixel_mean: tuple[float, float, float]  # RGB, 0-255 scale
    pixel_std: tuple[float, float, float]
    clip_pixel_mean: tuple[float, float, float]
    clip_pixel_std: tuple[float, float, float]
    min_size_test: int  # shortest edge after resizing (640)
    max_size_test: int  # cap on the long edge (2560)
    size_divisibility: int  # pad to a multiple of this (32); 0 for the per-pixel baseline
    clip_classification: bool  # classify segments with CLIP crops as well
    clip_cls_style: str  # "cropmask", "crop" or "mask"
    ensembling: bool  # geometric ensembling of segment and CLIP probabilities
    ensembling_all_cls: bool  # use the novel-class weights for every class
    ensemble_lambda: float  # 2/3
    gzero_calibrate: float  # subtracted from seen-class scores when > 0
    prompt_ensemble_type: str  # "imagenet_select", "imagenet" or "single"
    train_class_json: str  # official path of the training vocabulary
    test_class_json: str  # official path of the evaluation vocabulary
    tta: TTASettings = TTASettings()  # TEST.AUG (test-time augmentation)

    @property
    def clip_open_clip_name(self) -> str:
        """open_clip's architecture name for the official CLIP name ("ViT-B/16" -> "ViT-B-16")."""
        from .clip import open_clip_arch

        return open_clip_arch(self.clip_name)


def _triple(values, key: str) -> tuple[float, float, float]:
    if len(values) != 3:
        raise ConfigError(f"{key} must have 3 values (R, G, B), got {values}")
    return tuple(float(v) for v in values)  # type: ignore[return-value]


def tta_settings_from_config(cfg: CfgNode) -> TTASettings:
    """Read and check TEST.AUG (ENABLED, MIN_SIZES, MAX_SIZE, FLIP)."""
    aug = cfg.get("TEST", {}).get("AUG", {})
    default = TTASettings()
    enabled, flip = aug.get("ENABLED", default.enabled), aug.get("FLIP", default.flip)
    sizes, max_size = aug.get("MIN_SIZES", default.min_sizes), aug.get("MAX_SIZE", default.max_size)
    for key, value in (("ENABLED", enabled), ("FLIP", flip)):
        if not isinstance(value, bool):
            raise ConfigError(f"TEST.AUG.{key} must be True or False, got {value!r}")
    if isinstance(sizes, int) and not isinstance(sizes, bool):
        sizes = [sizes]
    if not isinstance(sizes, (list, tuple)) or not sizes or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sizes):
        raise ConfigError(f"TEST.AUG.MIN_SIZES must be a non-empty list of positive integers, "
                          f"got {sizes!r}")
    if not isinstance(max_size, int) or isinstance(max_size, bool) or max_size <= 0:
        raise ConfigError(f"TEST.AUG.MAX_SIZE must be a positive integer, got {max_size!r}")
    return TTASettings(enabled=enabled, min_sizes=tuple(sizes), max_size=max_size,
                            flip=flip)


def settings_from_config(cfg: CfgNode) -> ModelSettings:
    """Read the keys this project uses from a loaded official-schema config."""
    m, head, mf = cfg.MODEL, cfg.MODEL.SEM_SEG_HEAD, cfg.MODEL.MASK_FORMER
    arch = "per_pixel_baseline" if m.META_ARCHITECTURE in PIXEL_BASELINE_ARCHS else "zegformer"
    if arch == "zegformer" and head.NAME not in ("ZegFormerHead",):
        raise ConfigError(f"unsupported SEM_SEG_HEAD.NAME {head.NAME!r} for MaskFormer")
    if m.BACKBONE.NAME != "build_resnet_backbone":
        raise ConfigError(f"unsupported backbone {m.BACKBONE.NAME!r}: only ResNets are released")
    if cfg.INPUT.get("FORMAT", "RGB") not in ("RGB", "BGR"):
        raise ConfigError(f"INPUT.FORMAT must be RGB or BGR, got {cfg.INPUT.FORMAT!r}")
    calibrate = float(head.GZERO_CALIBRATE) if arch == "per_pixel_baseline" and \
        float(head.GZERO_CALIBRATE) > 0 else float(mf.GZERO_CALIBRATE)
    return ModelSettings(
        name=config_name(cfg),
        arch=arch,
        depth=int(m.RESNETS.DEPTH),
        stem_out_channels=int(m.RESNETS.STEM_OUT_CHANNELS),
        res2_out_channels=int(m.RESNETS.RES2_OUT_CHANNELS),
        width_per_group=int(m.RESNETS.WIDTH_PER_GROUP),
        stride_in_1x1=bool(m.RESNETS.STRIDE_IN_1X1),
        res5_dilation=int(m.RESNETS.RES5_DILATION),
        conv_dim=int(head.CONVS_DIM),
        mask_dim=int(head.MASK_DIM),
        hidden_dim=int(mf.HIDDEN_DIM),
        num_queries=int(mf.NUM_OBJECT_QUERIES),
        nheads=int(mf.NHEADS),
        dim_feedforward=int(mf.DIM_FEEDFORWARD),
        dec_layers=int(mf.DEC_LAYERS),
        dropout=float(mf.DROPOUT),
        enforce_input_proj=bool(mf.ENFORCE_INPUT_PROJ),
        embed_dim=int(head.get("CLIP_EMBED_DIM", 512)),
        temperature=float(head.TEMPERATURE),
        clip_name=str(head.CLIP_PRETRAINED),
        pixel_mean=_triple(m.PIXEL_MEAN, "MODEL.PIXEL_MEAN"),
        pixel_std=_triple(m.PIXEL_STD, "MODEL.PIXEL_STD"),
        clip_pixel_mean=_triple(m.CLIP_PIXEL_MEAN, "MODEL.CLIP_PIXEL_MEAN"),
        clip_pixel_std=_triple(m.CLIP_PIXEL_STD, "MODEL.CLIP_PIXEL_STD"),
        min_size_test=int(cfg.INPUT.MIN_SIZE_TEST),
        max_size_test=int(cfg.INPUT.MAX_SIZE_TEST),
        size_divisibility=0 if arch == "per_pixel_baseline" else int(mf.SIZE_DIVISIBILITY),
        clip_classification=bool(head.CLIP_CLASSIFICATION) and arch == "zegformer",
        clip_cls_style=str(m.CLIP_CLS_STYLE),
        ensembling=bool(mf.ENSEMBLING),
        ensembling_all_cls=bool(mf.ENSEMBLING_ALL_CLS),
        ensemble_lambda=2.0 / 3.0,
        gzero_calibrate=calibrate,
        prompt_ensemble_type=str(m.PROMPT_ENSEMBLE_TYPE),
        train_class_json=str(head.TRAIN_CLASS_JSON),
        test_class_json=str(head.TEST_CLASS_JSON),
        tta=tta_settings_from_config(cfg),
    )

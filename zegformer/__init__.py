"""ZegFormer in pure PyTorch: official configs and checkpoints, decoupled and pixel-level scoring.

    >>> from zegformer import load_predictor
    >>> predictor = load_predictor("zegformer_R101_bs32_60k_vit16_coco-stuff_gzss_eval",
    ...                            "zegformer_R101_coco-stuff.pth", clip_weights="ViT-B-16.pt")
    >>> result = predictor.predict(image, "cat, sofa, window, plant", mode="decoupled")
    >>> result.label_map, result.classes

Names are imported on first use, so torch-free parts (metrics on saved predictions, label-map
files) do not pay for importing torch, torchvision and open_clip.
"""
from __future__ import annotations

from ._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "build_model": "loading.build", "load_checkpoint": "loading.checkpoint",
    "read_state_dict": "loading.checkpoint",
    "list_configs": "loading.config", "load_config": "loading.config",
    "ConfigError": "errors", "ImageError": "errors", "VocabularyError": "errors",
    "WeightsError": "errors", "ZegFormerError": "errors",
    "DEFAULT_CONFIG": "loading.factory", "load_predictor": "loading.factory",
    "load_random_predictor": "loading.factory",
    "MODES": "inference.predictor", "Predictor": "inference.predictor",
    "UNLABELED": "inference.result", "ClassStat": "inference.result",
    "SegmentationResult": "inference.result", "TTASettings": "loading.settings",
    "parse_classes": "text",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

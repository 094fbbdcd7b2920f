"""ZegFormer in pure PyTorch: official configs and checkpoints, decoupled and pixel-level scoring.

    >>> from zegformer import load_predictor
    >>> predictor = load_predictor("zegformer_R101_bs32_60k_vit16_coco-stuff_gzss_eval",
    ...                            "zegformer_R101_coco-stuff.pth", clip_weights="ViT-B-16.pt")
    >>> result = predictor.predict(image, "cat, sofa, window, plant", mode="decoupled")
    >>> result.label_map, result.classes
"""
from .build import build_model
from .checkpoint import load_checkpoint, read_state_dict
from .config import list_configs, load_config
from .errors import ConfigError, ImageError, VocabularyError, WeightsError, ZegFormerError
from .factory import DEFAULT_CONFIG, load_predictor, load_random_predictor
from .predictor import MODES, Predictor
from .result import UNLABELED, ClassStat, SegmentationResult
from .text import parse_classes

__version__ = "0.1.0"
__all__ = [
    "build_model", "load_checkpoint", "read_state_dict", "list_configs", "load_config",
    "ConfigError", "ImageError", "VocabularyError", "WeightsError", "ZegFormerError",
    "DEFAULT_CONFIG", "load_predictor", "load_random_predictor", "MODES", "Predictor",
    "UNLABELED", "ClassStat", "SegmentationResult", "parse_classes",
]

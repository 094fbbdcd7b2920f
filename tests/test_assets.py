"""Checks on the shipped data: class vocabularies, prompt templates and YAML configs.

No network, no model: these only read files under assets/ and configs/.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
VOCAB_DIR = ROOT / "assets" / "vocabularies"
CONFIG_DIR = ROOT / "configs"
TEMPLATES = ROOT / "assets" / "prompt_templates.json"

# file name -> (number of classes, number of unseen classes)
EXPECTED_COUNTS = {
    "coco_stuff_171.json": (171, 15),
    "pascal_voc_20.json": (20, 5),
    "pascal_voc2_20.json": (20, 5),
    "ade20k_full_847.json": (847, 275),
    "ade20k_150.json": (150, 0),
}

EXPECTED_TEMPLATE_COUNTS = {
    "imagenet_select": 8,
    "imagenet": 80,
    "single": 1,
    "imagenet_select_clip": 32,
}

CLASS_JSON_KEYS = ("TRAIN_CLASS_JSON", "TEST_CLASS_JSON")


class _InertTagLoader(yaml.SafeLoader):
    """SafeLoader that reads detectron2's ``!!python/...`` tags as plain data, never running them."""


def _inert_python_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node):
    if isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:
        value = loader.construct_scalar(node)
    return {"__python_tag__": tag_suffix, "value": value}


_InertTagLoader.add_multi_constructor("tag:yaml.org,2002:python/", _inert_python_tag)


def _load_yaml(path: Path):
    with path.open(encoding="utf-8") as f:
        return yaml.load(f, Loader=_InertTagLoader)


def _load_json(path: Path):
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def _config_files():
    return sorted(CONFIG_DIR.rglob("*.yaml"))


def _walk(node, prefix=""):
    """Yield (dotted_key, value) for every leaf of a nested mapping."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], node


# --------------------------------------------------------------------------- vocabularies


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_vocabulary_file(name):
    data = _load_json(VOCAB_DIR / name)
    assert set(data) >= {"name", "classes", "unseen"}
    assert isinstance(data["name"], str) and data["name"]
    classes, unseen = data["classes"], data["unseen"]
    n_all, n_unseen = EXPECTED_COUNTS[name]
    assert len(classes) == n_all
    assert len(unseen) == n_unseen
    assert all(isinstance(c, str) and c for c in classes)
    assert len(set(classes)) == len(classes), "duplicate class names"
    assert len(set(unseen)) == len(unseen), "duplicate unseen names"
    assert set(unseen) <= set(classes)


def test_vocabulary_files_all_listed():
    shipped = {p.name for p in VOCAB_DIR.glob("*.json")} - {"official_paths.json"}
    assert shipped == set(EXPECTED_COUNTS)


def test_coco_stuff_official_order():
    data = _load_json(VOCAB_DIR / "coco_stuff_171.json")
    classes, unseen = data["classes"], data["unseen"]
    # official all_classnames.json: the 156 seen classes first, then the 15 unseen ones
    assert classes[156:] == unseen
    assert classes[:3] == ["person", "bicycle", "car"]
    assert classes[132] == "sky-other" and classes[155] == "wood"
    assert unseen == [
        "cow", "giraffe", "suitcase", "frisbee", "skateboard", "carrot", "scissors", "cardboard",
        "clouds", "grass", "playingfield", "river", "road", "tree", "wall-concrete",
    ]


def test_voc_split():
    for name in ("pascal_voc_20.json", "pascal_voc2_20.json"):
        data = _load_json(VOCAB_DIR / name)
        assert data["unseen"] == ["potted plant", "sheep", "sofa", "train", "tvmonitor"]
        assert data["classes"][15:] == data["unseen"]


def test_ade_full_keeps_synonyms():
    data = _load_json(VOCAB_DIR / "ade20k_full_847.json")
    classes = data["classes"]
    assert classes[0] == "wall" and classes[-1] == "adding machine, totalizer, totaliser"
    assert "person, individual, someone, somebody, mortal, soul" in classes
    seen = [c for c in classes if c not in set(data["unseen"])]
    assert len(seen) == 572


def test_official_paths():
    mapping = _load_json(VOCAB_DIR / "official_paths.json")
    assert mapping
    for path, entry in mapping.items():
        assert path.startswith("datasets/") and path.endswith(".json")
        assert set(entry) == {"file", "subset"}
        assert entry["subset"] in {"seen", "unseen", "all"}
        assert (VOCAB_DIR / entry["file"]).is_file(), entry["file"]
    sizes = {"seen_classnames": 156, "all_classnames": 171}
    for key, size in sizes.items():
        entry = mapping[f"datasets/coco/coco_stuff/split/{key}.json"]
        data = _load_json(VOCAB_DIR / entry["file"])
        n = {"all": 171, "seen": 171 - len(data["unseen"]), "unseen": len(data["unseen"])}[entry["subset"]]
        assert n == size


# --------------------------------------------------------------------------- templates


def test_prompt_templates():
    data = _load_json(TEMPLATES)
    assert set(data) == set(EXPECTED_TEMPLATE_COUNTS)
    for key, count in EXPECTED_TEMPLATE_COUNTS.items():
        templates = data[key]
        assert len(templates) == count, key
        assert len(set(templates)) == count, f"duplicate template in {key}"
        for t in templates:
            assert isinstance(t, str)
            assert t.count("{}") == 1, (key, t)
            assert t.format("cat").count("cat") >= 1
    assert data["single"] == ["A photo of a {} in the scene"]


def test_imagenet_select_is_the_verified_list():
    # Checked numerically against the official golden text features (tests/test_fidelity.py):
    # the 7 CoOp ImageNet templates plus ZegFormer's scene template, in this order.
    data = _load_json(TEMPLATES)["imagenet_select"]
    assert data[-1] == "A photo of a {} in the scene"
    assert data[:2] == ["itap of a {}.", "a bad photo of the {}."]


# --------------------------------------------------------------------------- configs


def test_configs_present():
    names = {p.relative_to(CONFIG_DIR).as_posix() for p in _config_files()}
    for required in (
        "coco-stuff/Base-COCOStuff-171.yaml",
        "coco-stuff/zegformer_R50_bs32_60k_vit16_coco-stuff.yaml",
        "coco-stuff/zegformer_R101_bs32_60k_vit16_coco-stuff.yaml",
        "coco-stuff/zegformer_R50_bs32_60k_vit16_coco-stuff_gzss_eval.yaml",
        "coco-stuff/zegformer_R101_bs32_60k_vit16_coco-stuff_gzss_eval.yaml",
        "coco-stuff/zegformer_R50_bs32_60k_vit16_coco-stuff_gzss_eval_847_classes.yaml",
        "coco-stuff/zegformer_R101_bs32_60k_vit16_coco-stuff_gzss_eval_847_classes.yaml",
        "pascal_voc/Base-VOC-20.yaml",
        "pascal_voc/zegformer_R101_bs32_10k_vit16_voc_gzss_eval.yaml",
        "ade20k-full-847-freq/Base-ADE20KFull-847.yaml",
        "ade20k-full-847-freq/zegformer_R50_bs32_60k_vit16_ade20k-full-847-freq_gzss_eval.yaml",
        "tiny.yaml",
    ):
        assert required in names, required


@pytest.mark.parametrize("path", _config_files(), ids=lambda p: p.relative_to(CONFIG_DIR).as_posix())
def test_config_parses(path):
    cfg = _load_yaml(path)
    assert isinstance(cfg, dict) and cfg
    base = cfg.get("_BASE_")
    if base is not None:
        assert isinstance(base, str)
        assert (path.parent / base).is_file(), f"missing _BASE_ {base}"
    else:
        assert "MODEL" in cfg
    mapping = _load_json(VOCAB_DIR / "official_paths.json")
    for key, value in _walk(cfg):
        if key.split(".")[-1] in CLASS_JSON_KEYS:
            assert value in mapping, f"{key}: {value}"


def test_eval_tag_is_inert():
    cfg = _load_yaml(CONFIG_DIR / "coco-stuff" / "Base-COCOStuff-171.yaml")
    node = cfg["INPUT"]["MIN_SIZE_TRAIN"]
    assert node == {
        "__python_tag__": "object/apply:eval",
        "value": ["[int(x * 0.1 * 640) for x in range(5, 16)]"],
    }
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load((CONFIG_DIR / "coco-stuff" / "Base-COCOStuff-171.yaml").read_text())


def _resolved(path: Path) -> dict:
    cfg = _load_yaml(path)
    base = cfg.pop("_BASE_", None)
    if base is None:
        return cfg
    merged = _resolved(path.parent / base)

    def merge(dst, src):
        for k, v in src.items():
            if isinstance(v, dict) and isinstance(dst.get(k), dict):
                merge(dst[k], v)
            else:
                dst[k] = v

    merge(merged, cfg)
    return merged


def test_key_values_after_inheritance():
    gz = _resolved(CONFIG_DIR / "coco-stuff" / "zegformer_R101_bs32_60k_vit16_coco-stuff_gzss_eval.yaml")
    assert gz["MODEL"]["RESNETS"]["DEPTH"] == 101
    assert gz["MODEL"]["SEM_SEG_HEAD"]["NUM_CLASSES"] == 171
    assert gz["MODEL"]["PROMPT_ENSEMBLE_TYPE"] == "single"
    assert gz["MODEL"]["MASK_FORMER"]["GZERO_CALIBRATE"] == 0.1
    assert gz["INPUT"]["MIN_SIZE_TEST"] == 640 and gz["INPUT"]["MAX_SIZE_TEST"] == 2560
    tiny = _resolved(CONFIG_DIR / "tiny.yaml")
    assert tiny["MODEL"]["RESNETS"]["DEPTH"] == 18
    assert tiny["MODEL"]["SEM_SEG_HEAD"]["CLIP_PRETRAINED"] == "tiny"
    assert tiny["MODEL"]["MASK_FORMER"]["NUM_OBJECT_QUERIES"] == 10

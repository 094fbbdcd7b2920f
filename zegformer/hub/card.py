"""The model card (README.md with Hugging Face front matter) of a converted checkpoint."""
from __future__ import annotations

from typing import Any

TAGS = ["image-segmentation", "semantic-segmentation", "zero-shot-semantic-segmentation",
        "open-vocabulary", "zegformer", "clip", "safetensors"]


def _front_matter(license: str, source: str) -> str:
    lines = ["---", f"license: {license}"]
    if license == "other":
        lines += ["license_name: zegformer-original-weights",
                  f"license_link: {source or 'https://github.com/dingjiansw101/ZegFormer'}"]
    lines += ["library_name: zegformer-studio", "pipeline_tag: image-segmentation", "tags:"]
    lines += [f"- {t}" for t in TAGS]
    return "\n".join(lines + ["---", ""])


def model_card(info: dict[str, Any], *, repo_id: str, license: str = "other",
               source: str = "") -> str:
    """README.md text for a folder written by `convert_checkpoint` (`info` is its summary)."""
    s = info["settings"]
    kind = "per-pixel baseline" if info["format"] == "per_pixel_baseline" else "ZegFormer"
    config = info["config_name"]
    config_arg = config if info["config_shipped"] else info["config_in_repo"]
    untrained = "tiny" in config.lower() or s.clip_name == "tiny"
    dropped = ", ".join(f"`{k}`" for k in info["dropped"]) or "nothing"
    source_line = f"[{source}]({source})" if source.startswith("http") else (source or "unknown")
    clip_note = (f"The CLIP {s.clip_name} weights are not in this repository: open_clip downloads "
                 "OpenAI's on first use, or set `ZEGFORMER_CLIP_WEIGHTS` to a local copy."
                 if s.clip_name != "tiny" else "The tiny CLIP is built from a fixed seed.")
    warn = ("\n> **Untrained test weights.** This repository holds the tiny model of the test "
            "suite; its segmentations mean nothing.\n" if untrained else "")
    return f"""{_front_matter(license, source)}
# {kind}: {config}
{warn}
Weights of **ZegFormer** ("Decoupling Zero-Shot Semantic Segmentation", Ding, Xue, Xia and Dai,
CVPR 2022) as safetensors, for ZegFormer Studio (a pure-PyTorch re-implementation of the
official code: no detectron2). ZegFormer groups pixels into class-agnostic segments and
classifies each segment against CLIP text embeddings of any class names, so it segments classes
it never saw in training ("zero-shot"). This checkpoint: a ResNet-{s.depth} backbone,
{s.num_queries} segment queries, CLIP {s.clip_name} for the text (and segment crops:
{"on" if s.clip_classification else "off"}), trained on the classes of
`{s.train_class_json}`.

## Files

| file | what |
|---|---|
| `model.safetensors` | {info["n_tensors"]} tensors, {info["n_parameters"]:,} values, official detectron2 key names, no pickle |
| `{info["config_in_repo"]}` | the official config the weights belong to (with its `_BASE_` files) |

Dropped from the original checkpoint (not model weights): {dropped}.

## Use

With ZegFormer Studio installed (see its README):

```python
from zegformer import load_predictor

predictor = load_predictor("{config_arg}", "hf://{repo_id}/model.safetensors")
result = predictor.predict("photo.jpg", "cat, sofa, window, plant", mode="decoupled")
result.label_map, result.classes
```

{clip_note} In a Space (the app), set the variables

```
ZEGFORMER_CONFIG={config_arg}
ZEGFORMER_WEIGHTS=hf://{repo_id}/model.safetensors
```

and the command-line tools take `--opts MODEL.WEIGHTS hf://{repo_id}/model.safetensors`.

## Source

Converted with `python -m zegformer.hub convert {info["source_file"]} OUT_DIR --config-file
{config}` from `{info["source_file"]}` (sha256 `{info["source_sha256"]}`); every tensor is
bit for bit the original's (`model.safetensors` sha256 `{info["weights_sha256"]}`). The original
weights are the ZegFormer authors': {source_line}. Their terms of use apply to this copy.
"""

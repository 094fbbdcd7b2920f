"""The training forward against the official model in training mode (rule weights, salt "pub").

Golden (tests/data/training/train_forward_R101_salt-pub_trim.npz, trimmed from the reference):
the official R101 COCO-Stuff training config with 20 classes and DROPOUT 0 on a padded batch of
two images; every decoder layer's class logits, and every 5th query's mask logits at every 4th
row and column.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fake_weights import KEYS_DIR, save_zegformer_checkpoint

GOLDEN = Path(__file__).parent / "data" / "training" / "train_forward_R101_salt-pub_trim.npz"
CONFIG = "zegformer_R101_bs32_60k_vit16_coco-stuff"


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(GOLDEN))


@pytest.fixture(scope="module")
def official_model(tmp_path_factory):
    from zegformer import build_model, load_checkpoint
    from zegformer.training.forward import prepare_for_training

    tmp = tmp_path_factory.mktemp("weights")
    ckpt = save_zegformer_checkpoint(KEYS_DIR / f"{CONFIG}.txt", tmp / "zegformer.pth", "pub")
    model = build_model(CONFIG, ["MODEL.MASK_FORMER.DROPOUT", "0.0"])
    load_checkpoint(model, ckpt)
    return prepare_for_training(model)


@pytest.fixture(scope="module")
def outputs(official_model, golden):
    from zegformer.training.forward import training_outputs

    torch.set_num_threads(2)
    try:
        return training_outputs(official_model, torch.from_numpy(golden["backbone_input"]),
                                torch.from_numpy(golden["text_features"]))
    finally:
        torch.set_num_threads(1)


def test_training_mode_switches_dropout_and_gradients(official_model):
    assert official_model.training
    named = dict(official_model.named_parameters())
    assert not named["sem_seg_head.predictor.logit_scale"].requires_grad
    assert named["backbone.stem.conv1.weight"].requires_grad
    assert named["sem_seg_head.predictor.bg_feature"].requires_grad
    frozen_bn = [n for n, _ in official_model.named_buffers() if n.endswith("running_var")]
    assert frozen_bn and not any(n.endswith("running_var") for n in named)


def test_every_layer_matches_official(outputs, golden):
    layers = outputs["aux_outputs"] + [{"pred_logits": outputs["pred_logits"],
                                        "pred_masks": outputs["pred_masks"]}]
    assert len(layers) == 6
    for i, layer in enumerate(layers):
        assert layer["pred_logits"].shape == (2, 100, 21)
        assert layer["pred_masks"].shape == (2, 100, 64, 80)
        np.testing.assert_allclose(layer["pred_logits"].detach().numpy(),
                                   golden["pred_logits"][i], atol=2e-4, err_msg=f"layer {i}")
        masks = layer["pred_masks"].detach()[:, ::5, ::4, ::4].numpy()
        scale = np.abs(golden["pred_masks_sub"][i]).max()
        np.testing.assert_allclose(masks, golden["pred_masks_sub"][i], atol=2e-5 * scale,
                                   err_msg=f"layer {i}")


def test_dropout_changes_training_outputs_only_in_train_mode():
    from zegformer import build_model

    model = build_model("tiny", ["MODEL.MASK_FORMER.DROPOUT", "0.5"])
    x, text = torch.randn(1, 3, 64, 64), torch.nn.functional.normalize(torch.randn(3, 32), dim=-1)
    model.train()
    a, b = model(x, text).pred_logits, model(x, text).pred_logits
    assert not torch.allclose(a, b)
    model.eval()
    with torch.no_grad():
        c, d = model(x, text), model(x, text)
    torch.testing.assert_close(c.pred_logits, d.pred_logits)
    assert c.aux_outputs == []
    with torch.no_grad():
        e = model(x, text, aux_outputs=True)
    assert len(e.aux_outputs) == 1  # tiny config: 2 decoder layers
    torch.testing.assert_close(e.pred_logits, c.pred_logits)

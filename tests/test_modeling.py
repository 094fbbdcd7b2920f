"""The nn.Modules: shapes on the tiny config, ResNet feature specs, FrozenBN and the sine
position encoding against their closed forms, classifiers by hand, CLIP dense features."""
from __future__ import annotations

import math

import pytest
import torch

from zegformer import build_model
from zegformer.loading.clip import build_clip
from zegformer.modeling.backbone import FrozenBatchNorm2d, ResNetBackbone, ShapeSpec
from zegformer.modeling.clip_adapter import ClipAdapter
from zegformer.modeling.position_encoding import PositionEmbeddingSine
from zegformer.modeling.transformer_decoder import SegmentDecoder
from zegformer.modeling.zegformer import PerPixelBaseline, PerPixelBaselineHead


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return build_model("tiny")


@pytest.fixture(scope="module")
def tiny_clip():
    return ClipAdapter(build_clip("tiny", seed=0))


# ---------------------------------------------------------------- tiny ZegFormer


def test_tiny_model_output_shapes(tiny_model):
    assert not tiny_model.training and tiny_model.kind == "zegformer"
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out = tiny_model(x)
    # tiny: 10 queries, CLIP_EMBED_DIM 32; masks at stride 4.
    assert out.segment_embeds.shape == (2, 10, 32)
    assert out.pred_masks.shape == (2, 10, 16, 24)
    assert out.pred_logits is None and out.aux_outputs == []
    torch.testing.assert_close(out.segment_embeds.norm(dim=-1), torch.ones(2, 10))
    text = torch.nn.functional.normalize(torch.randn(5, 32), dim=-1)
    logits = tiny_model.classify(out.segment_embeds, text)
    assert logits.shape == (2, 10, 5 + 1)
    # Cosine logits at scale 100 lie in [-100, 100].
    assert logits[..., :5].abs().max() <= 100 + 1e-4


def test_tiny_model_parameters_are_frozen(tiny_model):
    assert all(not p.requires_grad for p in tiny_model.parameters())
    names = set(tiny_model.state_dict())
    assert "sem_seg_head.predictor.logit_scale" in names
    assert "sem_seg_head.predictor.bg_feature" in names
    assert "backbone.stem.conv1.norm.running_var" in names


# ---------------------------------------------------------------- backbone


@pytest.mark.parametrize("depth, kwargs, channels, strides", [
    (50, {}, [256, 512, 1024, 2048], [4, 8, 16, 32]),
    (18, {"res2_out_channels": 64}, [64, 128, 256, 512], [4, 8, 16, 32]),
    (18, {"stem_out_channels": 16, "res2_out_channels": 16}, [16, 32, 64, 128], [4, 8, 16, 32]),
    (50, {"res5_dilation": 2}, [256, 512, 1024, 2048], [4, 8, 16, 16]),
])
def test_backbone_output_shape_matches_outputs(depth, kwargs, channels, strides):
    torch.manual_seed(0)
    net = ResNetBackbone(depth=depth, **kwargs).eval()
    spec = net.output_shape()
    assert list(spec) == ["res2", "res3", "res4", "res5"]
    assert spec == {f"res{i + 2}": ShapeSpec(c, s)
                    for i, (c, s) in enumerate(zip(channels, strides))}
    with torch.no_grad():
        out = net(torch.randn(1, 3, 64, 96))
    assert list(out) == list(spec)
    for name, feat in out.items():
        assert feat.shape[1] == spec[name].channels, name
        assert (64 // feat.shape[2], 96 // feat.shape[3]) == (spec[name].stride,) * 2, name


def test_backbone_layout_follows_detectron2():
    names = set(ResNetBackbone(depth=50).state_dict())
    for key in ["stem.conv1.weight", "stem.conv1.norm.running_mean", "res2.0.shortcut.weight",
                "res2.2.conv3.norm.bias", "res4.5.conv2.weight", "res5.0.shortcut.norm.weight"]:
        assert key in names, key
    assert "res2.1.shortcut.weight" not in names  # shortcut only in each stage's first block
    assert "res4.6.conv1.weight" not in names  # R50 has 6 res4 blocks
    # Stride in the 3x3 conv (STRIDE_IN_1X1 False): res3.0.conv1 is stride 1, conv2 stride 2.
    net = ResNetBackbone(depth=50, stride_in_1x1=False)
    assert net.res3[0].conv1.stride == (1, 1) and net.res3[0].conv2.stride == (2, 2)
    net = ResNetBackbone(depth=50, stride_in_1x1=True)
    assert net.res3[0].conv1.stride == (2, 2) and net.res3[0].conv2.stride == (1, 1)


def test_backbone_rejects_unknown_depth():
    with pytest.raises(ValueError, match="depth"):
        ResNetBackbone(depth=42)


def test_frozen_batchnorm_closed_form():
    torch.manual_seed(0)
    c = 6
    bn = FrozenBatchNorm2d(c, eps=1e-3)
    w, b = torch.randn(c), torch.randn(c)
    mean, var = torch.randn(c), torch.rand(c) + 0.1
    bn.load_state_dict({"weight": w, "bias": b, "running_mean": mean, "running_var": var})
    x = torch.randn(2, c, 5, 7)
    # x * w / sqrt(var + eps) + b - mean * w / sqrt(var + eps), per channel, in float64.
    scale = (w.double() / (var.double() + 1e-3).sqrt())[None, :, None, None]
    shift = b.double()[None, :, None, None] - mean.double()[None, :, None, None] * scale
    expected = x.double() * scale + shift
    torch.testing.assert_close(bn(x).double(), expected, atol=1e-5, rtol=1e-5)
    assert list(dict(bn.named_parameters())) == []  # all four are buffers: never trained
    assert sorted(dict(bn.named_buffers())) == ["bias", "running_mean", "running_var", "weight"]


# ---------------------------------------------------------------- position encoding


def test_position_encoding_matches_the_sine_formula():
    f, temp = 8, 10000.0
    pe = PositionEmbeddingSine(num_pos_feats=f, temperature=temp, normalize=True)
    h, w = 3, 5
    out = pe(torch.zeros(2, 7, h, w))
    assert out.shape == (2, 2 * f, h, w)

    def direct(pos: int, size: int, k: int) -> float:
        # Normalised 1-based position in [0, 2*pi]; channel k: sin (even) or cos (odd) of
        # pos / T^(2 * floor(k / 2) / F).
        p = (pos + 1) / (size + 1e-6) * 2 * math.pi
        v = p / temp ** (2 * (k // 2) / f)
        return math.sin(v) if k % 2 == 0 else math.cos(v)

    for y, x in [(0, 0), (1, 3), (2, 4)]:
        for k in range(f):
            assert out[1, k, y, x].item() == pytest.approx(direct(y, h, k), abs=1e-5)  # rows
            assert out[1, f + k, y, x].item() == pytest.approx(direct(x, w, k), abs=1e-5)
    # The last row / column sits at 2*pi: sin 0 in channel 0 of either half.
    assert out[0, 0, h - 1, 0].item() == pytest.approx(0.0, abs=1e-4)
    assert out[0, f, 0, w - 1].item() == pytest.approx(0.0, abs=1e-4)


# ---------------------------------------------------------------- classifiers by hand


def test_segment_classifier_logits_by_hand():
    dec = SegmentDecoder(in_channels=4, hidden_dim=4, num_queries=2, nheads=1, dim_feedforward=8,
                         dec_layers=1, mask_dim=4, embed_dim=2, temperature=0.01)
    with torch.no_grad():
        dec.bg_feature.copy_(torch.tensor([[0.5, 0.5]]))
    seg = torch.tensor([[[1.0, 0.0], [0.6, 0.8]]])  # B=1 x Q=2 x D=2, unit vectors
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # scale = exp(log(1 / 0.01)) = 100; bg logit = 100 * seg . bg_feature (not normalised):
    # q0: [100 * 1, 100 * 0, 100 * 0.5]; q1: [100 * 0.6, 100 * 0.8, 100 * (0.3 + 0.4)].
    logits = dec.classify(seg, text)
    torch.testing.assert_close(logits, torch.tensor([[[100.0, 0.0, 50.0], [60.0, 80.0, 70.0]]]))


def test_per_pixel_baseline_classifier_by_hand(tiny_model):
    head = PerPixelBaselineHead(tiny_model.sem_seg_head.pixel_decoder, embed_dim=2)
    model = PerPixelBaseline(tiny_model.backbone, head)
    emb = torch.tensor([[1.0, 0.6], [0.0, 0.8]])[None, :, :, None]  # B=1 x D=2 x h=2 x w=1
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    logits = model.classify(emb, text)  # 100 * cos
    torch.testing.assert_close(logits[0, :, :, 0], torch.tensor([[100.0, 60.0], [0.0, 80.0]]))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 2, 16, 16)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(1, 16, 16))


# ---------------------------------------------------------------- CLIP adapter


def test_clip_adapter_properties(tiny_clip):
    assert (tiny_clip.embed_dim, tiny_clip.image_size) == (32, 224)
    assert tiny_clip.logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-4)  # CLIP's init
    with torch.no_grad():
        img = tiny_clip.encode_image(torch.randn(2, 3, 224, 224))
        txt = tiny_clip.encode_text(torch.zeros(3, 77, dtype=torch.long))
    assert img.shape == (2, 32) and txt.shape == (3, 32)


@pytest.mark.parametrize("h, w", [(32, 48), (224, 224), (48, 16)])
def test_dense_features_shape_and_norm(tiny_clip, h, w):
    with torch.no_grad():
        out = tiny_clip.dense_features(torch.randn(2, 3, h, w))
    assert out.shape == (2, 32, h // 16, w // 16)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2, h // 16, w // 16))


def test_position_embedding_at_native_grid_is_unchanged(tiny_clip):
    pe = tiny_clip.clip.visual.positional_embedding
    assert pe.shape[0] == 1 + 14 * 14  # 224 / 16 = 14
    assert tiny_clip._position_embedding(14, 14) is pe


def test_position_embedding_interpolation_non_square():
    clip = ClipAdapter(build_clip("tiny", seed=1))
    pe = clip.clip.visual.positional_embedding
    c = pe.shape[1]
    n = 14
    # Grid whose value depends only on the column (row-major tokens after the class token).
    col = torch.arange(float(n)).repeat(n)  # token r * 14 + c -> c
    with torch.no_grad():
        pe[1:] = col[:, None].expand(-1, c)
        pe[0] = -7.0
        # Resize rows 14 -> 7, columns unchanged: bicubic weights sum to 1, so a grid constant
        # along the rows keeps its values, and columns at scale 1 are copied exactly.
        out = clip._position_embedding(7, 14)
        assert out.shape == (1 + 7 * 14, c)
        assert torch.equal(out[0], torch.full((c,), -7.0))  # class token untouched
        torch.testing.assert_close(out[1:, 0], torch.arange(14.0).repeat(7))
        # Transposed: value = row; resize columns 14 -> 28, rows unchanged.
        pe[1:] = torch.arange(float(n)).repeat_interleave(n)[:, None].expand(-1, c)
        out = clip._position_embedding(14, 28)
        assert out.shape == (1 + 14 * 28, c)
        torch.testing.assert_close(out[1:, 3], torch.arange(14.0).repeat_interleave(28))

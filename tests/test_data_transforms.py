"""The official training mapper: config parsing, resize / crop / colour / flip / pad rules,
masks, determinism, DataLoader workers and DistributedSampler."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from zegformer.data.loader import MappedDataset, collate_semantic
from zegformer.data.transforms import (
    AugmentationSettings,
    SemanticTrainMapper,
    color_aug_ssd,
    crop_window,
    resized_shape,
)
from zegformer.errors import ConfigError
from zegformer.loading.config import load_config

COCO = "zegformer_R101_bs32_60k_vit16_coco-stuff"
ADE = "zegformer_R50_bs32_60k_vit16_ade20k-full-847-freq"
PLAIN = AugmentationSettings(min_size_train=(0,))  # no resize, crop, colour or padding


class _Scripted:
    """A stand-in generator returning scripted draws, to pin each colour step."""

    def __init__(self, draws):
        self.draws = list(draws)

    def integers(self, *args):
        return self.draws.pop(0)

    def uniform(self, *args):
        return self.draws.pop(0)


def test_min_size_train_from_the_official_eval_expressions():
    coco = AugmentationSettings.from_config(load_config(COCO))
    assert coco.min_size_train == (320, 384, 448, 512, 576, 640, 704, 768, 832, 896, 960)
    assert (coco.crop_size, coco.max_size_train, coco.size_divisibility) == ((640, 640), 2560, 640)
    assert coco.crop_enabled and coco.color_aug_ssd and coco.image_format == "RGB"
    assert (coco.ignore_label, coco.crop_ignore_value, coco.single_category_max_area) == (
        255, 255, 1.0)
    ade = AugmentationSettings.from_config(load_config(ADE))
    assert ade.min_size_train == (256, 307, 358, 409, 460, 512, 563, 614, 665, 716, 768, 819,
                                  870, 921, 972, 1024)
    assert ade.ignore_label == 65535 and ade.crop_size == (512, 512)
    cfg = load_config(COCO, ["INPUT.MIN_SIZE_TRAIN", "(512, 640)"])
    assert AugmentationSettings.from_config(cfg).min_size_train == (512, 640)
    for bad in ("!!python/object/apply:eval [__import__('os').getcwd()]",
                "[x for x in range(3)]", "[int(x * 0.1 * 640) for x in range(5, 16)] + [1]"):
        cfg = load_config(COCO, ["INPUT.MIN_SIZE_TRAIN", bad])
        with pytest.raises(ConfigError, match="MIN_SIZE_TRAIN"):
            AugmentationSettings.from_config(cfg)
    with pytest.raises(ConfigError, match="CROP.TYPE"):
        replace(coco, crop_type="random")


def test_resize_follows_detectron2_and_resamples_like_it():
    assert resized_shape(480, 640, 320, 2560) == (320, 427)
    assert resized_shape(100, 1000, 640, 2560) == (256, 2560)  # longer side capped
    assert resized_shape(641, 640, 320, 2560) == (321, 320)  # int(x + 0.5)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (30, 41, 3), dtype=np.uint8)
    lab = rng.integers(0, 9, (30, 41))
    s = replace(PLAIN, min_size_train=(17,), max_size_train=1000)
    out = SemanticTrainMapper(s)(img, lab, index=0)
    assert out["image_size"] == (17, 23)
    ref_img = np.asarray(Image.fromarray(img).resize((23, 17), Image.BILINEAR))
    ref_lab = torch.nn.functional.interpolate(torch.from_numpy(lab).double()[None, None],
                                              (17, 23), mode="nearest")[0, 0].long()
    got_img, got_lab = out["image"].permute(1, 2, 0).numpy(), out["sem_seg"]
    flipped = not np.array_equal(got_img, ref_img)
    if flipped:
        got_img, got_lab = got_img[:, ::-1], got_lab.flip(-1)
    np.testing.assert_array_equal(got_img, ref_img)
    assert torch.equal(got_lab, ref_lab)


def test_padding_values_and_shapes():
    img = np.full((50, 70, 3), 7, np.uint8)
    lab = np.zeros((50, 70), np.int64)
    lab[:, :10] = 3
    for ignore in (255, 65535):
        s = replace(PLAIN, size_divisibility=32, ignore_label=ignore)
        out = SemanticTrainMapper(s)(img, lab, index=1)
        assert out["image"].shape == (3, 64, 96) and out["image"].dtype == torch.uint8
        assert out["sem_seg"].shape == (64, 96) and out["sem_seg"].dtype == torch.int64
        assert out["image_size"] == (50, 70)
        assert (out["image"][:, 50:] == 128).all() and (out["image"][:, :, 70:] == 128).all()
        assert (out["image"][:, :50, :70] == 7).all()
        assert (out["sem_seg"][50:] == ignore).all() and (out["sem_seg"][:, 70:] == ignore).all()
        assert out["instances"]["labels"].tolist() == [0, 3]
        assert not out["instances"]["masks"][:, 50:].any()
    coco = AugmentationSettings.from_config(load_config(COCO))
    big = SemanticTrainMapper(coco, seed=3)(np.zeros((300, 500, 3), np.uint8),
                                            np.zeros((300, 500), np.int64), index=0)
    assert big["image"].shape == (3, 640, 640)  # the official configs: one 640 x 640 canvas


def test_crop_tries_windows_by_the_single_category_rule():
    lab = np.zeros((64, 64), np.int64)
    lab[:, 28:48] = 1
    lab[:20] = 255  # ignore rows: left out of the counts
    s = replace(PLAIN, crop_enabled=True, crop_size=(24, 24), single_category_max_area=0.75,
                crop_ignore_value=255)
    # (0, 0) holds one class only; (0, 15) splits 13 / 11 columns over 4 counted rows.
    assert crop_window(s, lab, _Scripted([0, 0, 0, 15, 99])) == (0, 15, 24, 24)
    # Counting the ignore value (480 of 576 pixels) rejects (0, 15); (30, 15) passes.
    counted = replace(s, crop_ignore_value=None)
    assert crop_window(counted, lab, _Scripted([0, 15, 30, 15, 99])) == (30, 15, 24, 24)
    # Ten failures: the tenth window is kept and no eleventh is drawn.
    draws = _Scripted([0, 0] * 9 + [40, 1, 99])
    assert crop_window(s, lab, draws) == (40, 1, 24, 24) and draws.draws == [99]
    # 1.0 disables the rule: the first window, whatever it holds.
    assert crop_window(replace(s, single_category_max_area=1.0), lab,
                       _Scripted([0, 0, 99])) == (0, 0, 24, 24)
    small = replace(s, crop_size=(100, 30))  # "absolute": never larger than the image
    assert crop_window(small, lab, _Scripted([0, 20]))[2:] == (64, 30)
    out = SemanticTrainMapper(s)(np.zeros((64, 64, 3), np.uint8), lab, index=5)
    assert out["sem_seg"].shape == (24, 24)


def test_flip_moves_image_and_label_together():
    h, w = 8, 20
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.arange(w) * 10  # the column is written into the image ...
    lab = np.tile(np.arange(w) // 4, (h, 1))  # ... and into the label
    mapper = SemanticTrainMapper(PLAIN, seed=11)
    flips = set()
    for i in range(12):
        out = mapper(img, lab, index=i)
        cols = out["image"][0, 0].long() // 10
        assert torch.equal(out["sem_seg"][0], cols // 4)
        flips.add(bool(cols[0] == w - 1))
    assert flips == {True, False}


def test_masks_are_the_classes_present_and_never_cover_ignore():
    rng = np.random.default_rng(2)
    lab = rng.choice([0, 4, 9, 255], size=(40, 40))
    coco = AugmentationSettings.from_config(load_config(COCO))
    s = replace(coco, min_size_train=(40,), crop_size=(32, 32), size_divisibility=48)
    out = SemanticTrainMapper(s, seed=1)(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8),
                                         lab, index=0)
    sem, inst = out["sem_seg"], out["instances"]
    assert inst["labels"].tolist() == sorted(set(sem.unique().tolist()) - {255})
    assert inst["masks"].dtype == torch.bool and inst["masks"].shape == (len(inst["labels"]), 48, 48)
    for c, m in zip(inst["labels"], inst["masks"]):
        assert torch.equal(m, sem == c)
    assert not inst["masks"][:, sem == 255].any()
    assert torch.equal(inst["masks"].any(0), sem != 255)


def test_same_seed_epoch_index_same_sample_and_epochs_differ():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
    lab = rng.integers(0, 5, (60, 80))
    coco = AugmentationSettings.from_config(load_config(COCO))
    s = replace(coco, min_size_train=(40, 50, 60, 70), crop_size=(32, 32), size_divisibility=32)
    a, b = SemanticTrainMapper(s, seed=7), SemanticTrainMapper(s, seed=7)
    for i in range(3):
        x, y = a(img, lab, index=i, epoch=2), b(img, lab, index=i, epoch=2)
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["sem_seg"], y["sem_seg"])
    e0 = [a(img, lab, index=i, epoch=0)["image"] for i in range(3)]
    e1 = [a(img, lab, index=i, epoch=1)["image"] for i in range(3)]
    assert not all(torch.equal(p, q) for p, q in zip(e0, e1))
    other = SemanticTrainMapper(s, seed=8)(img, lab, index=0, epoch=0)["image"]
    assert not torch.equal(other, e0[0])


def test_color_aug_ssd_steps_in_bgr_order():
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 255  # RGB red
    # brightness no; order 1 (contrast, saturation, hue); contrast no; saturation no; hue +60
    out = color_aug_ssd(red, _Scripted([0, 1, 0, 0, 1, 60]), "RGB", hue_delta=60)
    assert out[0, 0].tolist() == [0, 255, 0]  # red + 120 degrees = green (OpenCV hue units)
    img = np.array([[[100, 250, 0]]], np.uint8)
    out = color_aug_ssd(img, _Scripted([1, 10.7, 0, 0, 0, 0]), "RGB")  # brightness only
    assert out[0, 0].tolist() == [110, 255, 10]  # float32, clip, truncate
    out = color_aug_ssd(img, _Scripted([0, 0, 0, 0, 1, 1.5]), "BGR")  # sat, hue, contrast x1.5
    assert out[0, 0].tolist() == [150, 255, 0]
    base = np.random.default_rng(4).integers(0, 255, (16, 16, 3), dtype=np.uint8)

    def changed(settings):  # neither the input nor its mirror image
        outs = [SemanticTrainMapper(settings)(base, np.zeros((16, 16)), index=i)["image"]
                .permute(1, 2, 0).numpy() for i in range(8)]
        return [not (np.array_equal(o, base) or np.array_equal(o, base[:, ::-1])) for o in outs]

    assert any(changed(replace(PLAIN, color_aug_ssd=True))) and not any(changed(PLAIN))


def _files(tmp_path, n=5):
    rng = np.random.default_rng(5)
    pairs = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (30 + i, 40, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png")
        Image.fromarray(rng.choice([1, 2, 255], (30 + i, 40)).astype(np.uint8)).save(
            tmp_path / f"{i}_l.png")
        pairs.append((tmp_path / f"{i}.png", tmp_path / f"{i}_l.png"))
    return pairs


def test_dataloader_workers_and_distributed_sampler_give_the_same_samples(tmp_path):
    coco = AugmentationSettings.from_config(load_config(COCO))
    s = replace(coco, min_size_train=(24, 32), crop_size=(24, 24), size_divisibility=32)
    ds = MappedDataset(_files(tmp_path), SemanticTrainMapper(s, seed=5))
    ds.set_epoch(3)
    direct = {i: ds[i] for i in range(len(ds))}
    assert torch.equal(ds[(3, 2)]["image"], direct[2]["image"])
    seen = {}
    for rank in range(2):
        sampler = torch.utils.data.DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True,
                                                      seed=1)
        sampler.set_epoch(3)
        loader = torch.utils.data.DataLoader(ds, batch_size=2, sampler=sampler, num_workers=2,
                                             collate_fn=lambda b: b)
        for batch in loader:
            for sample in batch:
                seen[sample["index"]] = sample
    assert set(seen) == set(direct)
    for i, sample in seen.items():
        assert torch.equal(sample["image"], direct[i]["image"])
        assert torch.equal(sample["sem_seg"], direct[i]["sem_seg"])


def test_collate_pads_to_the_batch_then_to_the_divisor(tmp_path):
    ds = MappedDataset(_files(tmp_path, 2), SemanticTrainMapper(PLAIN))
    batch = collate_semantic([ds[0], ds[1]], size_divisibility=16, ignore_label=255)
    assert batch["images"].shape == (2, 3, 32, 48) and batch["sem_seg"].shape == (2, 32, 48)
    assert batch["image_sizes"] == [(30, 40), (31, 40)]
    assert (batch["images"][0, :, 30:] == 128).all() and (batch["sem_seg"][0, 30:] == 255).all()
    m = batch["instances"][1]["masks"]
    assert m.shape[1:] == (32, 48) and not m[:, 31:].any()
    assert torch.equal(batch["sem_seg"][1, :31, :40], ds[1]["sem_seg"])

"""`python -m zegformer.train` end to end on CPU: the tiny model on a synthetic folder dataset.

Training learns (the loss falls, the trained model beats the untrained one on held-out images),
its checkpoint loads strictly in `load_predictor`, `--resume` continues bit for bit, and every
mistake the issue lists is one clear line.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from synthetic_shapes import CLASSES, tiny_training_overrides, write_shapes_dataset
from zegformer.training import cli
from zegformer.training.checkpointer import read_training_checkpoint


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return write_shapes_dataset(tmp_path_factory.mktemp("shapes") / "data", n_train=16, n_val=6)


def overrides(data: Path, out: Path, **extra) -> list[str]:
    """Config overrides for a seconds-long run of the tiny config on the shapes dataset."""
    return tiny_training_overrides(data, out, **extra)


def train(data: Path, out: Path, *flags: str, **extra) -> int:
    return cli.main(["--config-file", "tiny", "--no-progress", "--log-period", "1", *flags,
                     *overrides(data, out, **extra)])


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory):
    """150 iterations (about 20 s), with an evaluation before training (the untrained model)."""
    from zegformer.evaluation.distributed import DistInfo
    from zegformer.loading.config import load_config
    from zegformer.training.trainer import TrainOptions, Trainer

    out = tmp_path_factory.mktemp("run")
    cfg = load_config("tiny", overrides(shapes, out, SOLVER__MAX_ITER=150,
                                        SOLVER__CHECKPOINT_PERIOD=100, TEST__EVAL_PERIOD=0))
    trainer = Trainer(cfg, TrainOptions(progress=False, log_period=10), DistInfo())
    before = trainer.evaluate("untrained")[0]
    trainer.train()
    after = json.loads(next((out / "eval" / "final").glob("*/small_target/summary.json"))
                       .read_text())
    return out, before, after


def test_training_loss_falls_clearly(trained):
    out, _, _ = trained
    rows = [r for r in metrics(out) if "total_loss" in r]
    assert [r["iteration"] for r in rows] == list(range(10, 151, 10))
    first = np.mean([r["total_loss"] for r in rows[:2]])
    last = np.mean([r["total_loss"] for r in rows[-4:]])
    assert last < 0.6 * first, (first, last)
    for key in ("loss_ce", "loss_mask", "loss_dice", "loss_ce_0", "lr", "time", "data_time",
                "peak_memory_mb"):
        assert key in rows[-1]
    assert rows[-1]["lr"] < rows[0]["lr"]  # poly decay


def test_trained_model_beats_untrained_on_held_out_images(trained):
    _, before, after = trained
    b, a = before["standard"]["strict"], after["standard"]["strict"]
    assert a["seen_mIoU"] > b["seen_mIoU"] + 0.3, (b["seen_mIoU"], a["seen_mIoU"])
    assert a["mIoU"] > b["mIoU"] + 0.2, (b["mIoU"], a["mIoU"])


def test_outputs_of_a_run(trained):
    from zegformer.loading.config import load_config

    out, _, _ = trained
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    assert {p.name for p in out.glob("model_*.pth")} == {"model_0000099.pth", "model_final.pth"}
    assert list(out.glob("events.out.tfevents.*")), "no TensorBoard event file"
    assert not list(out.glob(".*.tmp"))
    cfg = load_config(out / "config.yaml")
    assert cfg.SOLVER.MAX_ITER == 150 and cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 3
    ckpt = read_training_checkpoint(out / "model_final.pth")
    assert {"model", "optimizer", "scheduler", "scaler", "iteration"} <= set(ckpt)
    assert ckpt["iteration"] == 150 and ckpt["classes"] == ["sky", "grass", "cat"]
    torch.testing.assert_close(ckpt["model"]["criterion.empty_weight"],
                               torch.tensor([1.0, 1.0, 1.0, 0.1]))
    evals = [r for r in metrics(out) if "eval/mIoU" in r]
    assert evals and evals[-1]["iteration"] == 150


def test_checkpoint_loads_strictly_in_load_predictor(trained, shapes):
    from PIL import Image

    from zegformer import load_predictor

    out, _, _ = trained
    p = load_predictor("tiny", out / "model_final.pth", device="cpu")
    image = np.asarray(Image.open(next((shapes / "images" / "val").iterdir())).convert("RGB"))
    result = p.predict(image, ", ".join(CLASSES))
    assert result.label_map.shape == image.shape[:2]
    assert not result.untrained


def test_resume_after_interruption_matches_an_uninterrupted_run(shapes, tmp_path, monkeypatch):
    from zegformer.training.trainer import Trainer

    assert train(shapes, tmp_path / "a") == 0
    original = Trainer.step

    def interrupted(self, batches):
        if self.iteration == 4:  # after the checkpoint at iteration 3, during the 5th step
            raise KeyboardInterrupt
        return original(self, batches)

    monkeypatch.setattr(Trainer, "step", interrupted)
    assert train(shapes, tmp_path / "b") == 130
    assert (tmp_path / "b" / "last_checkpoint").read_text().strip() == "model_0000002.pth"
    monkeypatch.setattr(Trainer, "step", original)
    assert train(shapes, tmp_path / "b", "--resume") == 0
    a = read_training_checkpoint(tmp_path / "a" / "model_final.pth")
    b = read_training_checkpoint(tmp_path / "b" / "model_final.pth")
    assert a["iteration"] == b["iteration"] == 6
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]


def test_gradient_accumulation_runs_the_same_global_batch(shapes, tmp_path):
    assert train(shapes, tmp_path / "acc", "--grad-accum", "2", SOLVER__MAX_ITER=2,
                 SOLVER__CHECKPOINT_PERIOD=0) == 0
    assert read_training_checkpoint(tmp_path / "acc" / "model_final.pth")["iteration"] == 2
    assert train(shapes, tmp_path / "odd", "--grad-accum", "3") == 2  # 2 images in 3 parts


def test_clear_errors(shapes, tmp_path, capsys, monkeypatch):
    def error() -> str:
        return capsys.readouterr().err.strip().splitlines()[-1]

    assert train(shapes, tmp_path / "x", MODEL__WEIGHTS=tmp_path / "nope.pth") == 2
    message = error()
    assert "MODEL.WEIGHTS" in message and "not found" in message
    assert train(tmp_path / "missing", tmp_path / "x") == 2
    assert "does not exist" in error()
    assert train(shapes, tmp_path / "r", SOLVER__MAX_ITER=3) == 0
    assert train(shapes, tmp_path / "r", SOLVER__MAX_ITER=3) == 2
    assert "--resume" in error()
    (tmp_path / "other").mkdir()
    other = write_shapes_dataset(tmp_path / "other" / "data", n_train=2, n_val=1)
    (other / "classes.json").write_text(json.dumps({"classes": ["a", "b", "c", "d"],
                                                    "unseen": ["d"]}))
    assert train(other, tmp_path / "r", "--resume", SOLVER__MAX_ITER=6) == 2
    assert "other classes" in error()

    from zegformer.training.criterion import SetCriterion

    forward = SetCriterion.forward

    def nan_after_3(self, outputs, targets, **kw):
        losses = forward(self, outputs, targets, **kw)
        if nan_after_3.calls >= 4:
            losses["loss_ce"] = losses["loss_ce"] * float("nan")
        nan_after_3.calls += 1
        return losses

    nan_after_3.calls = 0
    monkeypatch.setattr(SetCriterion, "forward", nan_after_3)
    assert train(shapes, tmp_path / "nan") == 2
    message = error()
    assert "nan" in message and "iteration 5" in message and "model_0000002.pth" in message
    assert (tmp_path / "nan" / "last_checkpoint").read_text().strip() == "model_0000002.pth"


def test_eval_only_evaluates_a_checkpoint(trained, shapes, tmp_path):
    out, _, after = trained
    code = cli.main(["--config-file", "tiny", "--no-progress", "--eval-only",
                     *overrides(shapes, tmp_path / "ev", MODEL__WEIGHTS=out / "model_final.pth")])
    assert code == 0
    summary = json.loads(next((tmp_path / "ev" / "eval" / "eval_only")
                              .glob("*/small_target/summary.json")).read_text())
    assert summary["standard"]["strict"]["mIoU"] == pytest.approx(
        after["standard"]["strict"]["mIoU"], abs=1e-6)


def test_fine_tuning_starts_from_a_full_checkpoint(trained, shapes, tmp_path, capsys):
    out, _, _ = trained
    assert train(shapes, tmp_path / "ft", MODEL__WEIGHTS=out / "model_final.pth",
                 SOLVER__MAX_ITER=1, DATASETS__TEST="()") == 0
    printed = capsys.readouterr().out
    assert "model_final.pth (zegformer)" in printed and " 0 start random" in printed


def test_imagenet_backbone_initialisation_says_what_starts_random(shapes, tmp_path, capsys):
    from zegformer import build_model

    backbone = {f"{k}": v for k, v in build_model("tiny").backbone.state_dict().items()}
    torch.save(backbone, tmp_path / "R-18-d2.pth")  # detectron2 backbone naming (stem.*, res2.*)
    assert train(shapes, tmp_path / "bb", MODEL__WEIGHTS=tmp_path / "R-18-d2.pth",
                 SOLVER__MAX_ITER=1, DATASETS__TEST="()") == 0
    printed = capsys.readouterr().out
    assert "(d2_backbone)" in printed and "start random (sem_seg_head" in printed

"""Training under `torchrun --nproc_per_node 2` (gloo, CPU) and with `--num-gpus 2`.

Two processes with one image each take the same optimiser steps as one process with both: the
same images per step (the sampler deals each epoch's order round-robin), the same augmentation
(seeded per image), and gradients averaged by DDP over mask-normalised losses. Only the
cross-entropy's weighted mean is taken per process, hence a small tolerance.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from synthetic_shapes import write_shapes_dataset
from test_eval_distributed import free_port
from test_training_e2e import overrides, train
from zegformer.training.checkpointer import read_training_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
       "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo"}
STEPS = {"SOLVER__MAX_ITER": 3, "SOLVER__CHECKPOINT_PERIOD": 0, "DATASETS__TEST": "()",
         "SOLVER__BASE_LR": 1e-4}


def _train_cmd(*flags: str, out: Path, data: Path) -> list[str]:
    return ["-m", "zegformer.train", "--config-file", "tiny", "--no-progress", *flags,
            *overrides(data, out, **STEPS)]


def test_torchrun_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    data = write_shapes_dataset(tmp_path / "data", n_train=8, n_val=1)
    assert train(data, tmp_path / "one", **STEPS) == 0
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
         "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
         *_train_cmd(out=tmp_path / "two", data=data)],
        capture_output=True, text=True, env=ENV, timeout=480, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    one = read_training_checkpoint(tmp_path / "one" / "model_final.pth")["model"]
    two = read_training_checkpoint(tmp_path / "two" / "model_final.pth")["model"]
    assert one.keys() == two.keys()
    worst = max(float((a - two[key]).abs().max()) for key, a in one.items()
                if a.is_floating_point())
    # 3 AdamW steps at lr 1e-4 move a parameter by up to 3e-4; the two runs agree far closer.
    start = torch.load(tmp_path / "one" / "model_final.pth", weights_only=True)["iteration"]
    assert start == 3
    moved = float((one["sem_seg_head.predictor.query_embed.weight"]
                   - _initial_query_embed()).abs().max())
    assert moved > 0 and worst < 3e-5, worst


def _initial_query_embed() -> torch.Tensor:
    """The tiny model's query embeddings before training (the trainer seeds with SEED 0)."""
    from zegformer import build_model

    torch.manual_seed(0)
    return build_model("tiny").sem_seg_head.predictor.query_embed.weight.detach()


def test_num_gpus_starts_processes_on_one_machine(tmp_path):
    data = write_shapes_dataset(tmp_path / "data", n_train=4, n_val=1)
    proc = subprocess.run([sys.executable, *_train_cmd("--num-gpus", "2", out=tmp_path / "out",
                                                       data=data)],
                          capture_output=True, text=True, env=ENV, timeout=480, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert read_training_checkpoint(tmp_path / "out" / "model_final.pth")["iteration"] == 3

"""The evaluation under `torchrun --nproc_per_node 2` (gloo, CPU) equals one process."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

os.environ["HF_HUB_OFFLINE"] = "1"
torch.set_num_threads(1)

from zegformer.evaluation.cli import main  # noqa: E402
from zegformer.evaluation import synthetic  # noqa: E402
from zegformer.evaluation.distributed import DistInfo, shard  # noqa: E402
from zegformer.evaluation.report import RUN_FIELDS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_round_robin_shards_cover_every_image_once():
    parts = [shard(5, DistInfo(rank=r, world_size=2)) for r in range(2)]
    assert parts == [[0, 2, 4], [1, 3]]
    assert shard(3, DistInfo()) == [0, 1, 2]


def test_torchrun_two_processes_give_the_single_process_result(tmp_path):
    synthetic.write_dataset(tmp_path / "d", "folder", 5)  # 5 images: uneven shards (3 + 2)
    common = ["--dataset", "folder", "--root", str(tmp_path / "d"), "--random-weights",
              "--no-plots", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1",
         "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
         "-m", "zegformer.evaluate", *common, "--output", str(tmp_path / "two")],
        capture_output=True, text=True, env=env, timeout=480, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("pixel metrics (strict)") == 1  # only rank 0 reports
    assert main(common + ["--output", str(tmp_path / "one"), "--no-progress"]) == 0
    one = json.loads((tmp_path / "one/small_target/summary.json").read_text())
    two = json.loads((tmp_path / "two/small_target/summary.json").read_text())
    assert (one["meta"]["world_size"], two["meta"]["world_size"]) == (1, 2)
    for s in (one, two):  # timing / process-count fields are the only allowed differences
        for key in RUN_FIELDS:
            s["meta"].pop(key)
    assert one == two
    assert one["meta"]["n_images"] == 5 and one["buckets"]["abs"]["ALL"]["all"]["n_objects"] > 30
    for name in ("objects", "segments", "bucket_class", "bucket_split", "per_class"):
        a = (tmp_path / f"one/small_target/{name}.csv").read_bytes()
        assert a == (tmp_path / f"two/small_target/{name}.csv").read_bytes(), name
    preds = sorted(p.name for p in (tmp_path / "two/predictions").glob("*.png"))
    assert len(preds) == 5  # both ranks wrote their shard into the shared folder
    for p in preds:
        assert (tmp_path / "one/predictions" / p).read_bytes() == \
            (tmp_path / "two/predictions" / p).read_bytes()

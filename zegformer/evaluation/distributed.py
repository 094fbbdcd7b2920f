"""Sharding an evaluation over processes started by ``torchrun`` (or one process without it).

Under ``torchrun --nproc_per_node N`` the environment holds RANK / WORLD_SIZE / LOCAL_RANK and
the rendezvous address; the process group uses NCCL when the evaluation runs on CUDA and gloo
otherwise. Python objects (the per-object tables) always travel over a gloo group, so that NCCL
never needs to hold pickled bytes. Images are dealt round-robin: rank r takes images r, r+N, ...
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class DistInfo:
    """Where this process stands in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""  # "" when not distributed
    object_group: Any = None  # gloo group for gather_object (None = the default group)
    owns_group: bool = False  # this DistInfo started the process group (and ends it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(use_cuda: bool) -> DistInfo:
    """Join the process group described by the torchrun environment, if any.

    Args:
        use_cuda: True when this process evaluates on CUDA (then the backend is NCCL).

    Returns:
        DistInfo; a single-process DistInfo when WORLD_SIZE is unset or 1.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    owns = not dist.is_initialized()
    if owns:
        backend = "nccl" if use_cuda else "gloo"
        if use_cuda:
            import torch

            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    backend = dist.get_backend()  # a group started by the caller (training) keeps its backend
    group = dist.new_group(backend="gloo") if backend == "nccl" else None
    return DistInfo(rank, world, local_rank, backend, group, owns)


def shard(n_items: int, info: DistInfo) -> list[int]:
    """Indices of the items this process evaluates (round-robin)."""
    return list(range(info.rank, n_items, info.world_size))


def all_reduce_sum(array: np.ndarray, info: DistInfo) -> np.ndarray:
    """Element-wise sum of an int64 array over all processes (exact)."""
    if not info.distributed:
        return array
    import torch
    import torch.distributed as dist

    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))
    if info.backend == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().numpy()


def gather_objects(obj: Any, info: DistInfo) -> list[Any] | None:
    """Collect one picklable object per process on rank 0 (others get None)."""
    if not info.distributed:
        return [obj]
    import torch.distributed as dist

    out: list[Any] | None = [None] * info.world_size if info.is_main else None
    dist.gather_object(obj, out, dst=0, group=info.object_group)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """rank 0's ``obj`` on every process (e.g. an error message)."""
    if not info.distributed:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0, group=info.object_group)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.distributed:
        import torch.distributed as dist

        dist.barrier(group=info.object_group)


def finish(info: DistInfo) -> None:
    """Leave the process group if this DistInfo started it (no-op in a single process)."""
    if info.distributed and info.owns_group:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

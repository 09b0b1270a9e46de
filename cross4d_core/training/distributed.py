"""torch.distributed set-up for ``torchrun`` launches; a no-op for one process.

``torchrun`` exports ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; when ``WORLD_SIZE > 1``
the process group is initialised from those variables (``env://``) with ``nccl`` on CUDA
and ``gloo`` on CPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from cross4d_core.devices import resolve_device


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """More than one rank, or a process group the caller initialised (a world of one
        under ``torchrun`` still runs DDP and its collectives, e.g. to check NCCL on one GPU)."""
        return self.world_size > 1 or (dist.is_available() and dist.is_initialized())


def init_distributed(device: str = "auto") -> DistInfo:
    """Initialise the process group from ``torchrun``'s env vars when ``WORLD_SIZE > 1``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", init_method="env://",
                                world_size=world_size, rank=rank)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``values`` over ranks (identity for one process)."""
    if info.enabled:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= info.world_size
    return values


def all_gather_objects(obj: object, info: DistInfo) -> list:
    """Every rank's ``obj`` (picklable), in rank order."""
    if not info.enabled:
        return [obj]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()

"""Distributed setup for runs started by torchrun (single node or multi-node through its rendezvous arguments).

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them the run is a single process. The backend is NCCL on
CUDA and gloo on CPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List

import torch
import torch.distributed as dist

__all__ = ['DistInfo', 'init_distributed', 'all_reduce_sum', 'all_gather_object', 'barrier', 'cleanup']


@dataclass
class DistInfo:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    device: torch.device = torch.device('cpu')

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = '') -> DistInfo:
    """Join the process group torchrun prepared (if any) and pick this process's device.

    `device`: '' = cuda if available else cpu; 'cpu' forces CPU (gloo) even where CUDA exists.
    """
    use_cuda = torch.cuda.is_available() and device != 'cpu'
    world_size = int(os.environ.get('WORLD_SIZE', 1))
    rank = int(os.environ.get('RANK', 0))
    local_rank = int(os.environ.get('LOCAL_RANK', 0))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dev = torch.device('cuda', local_rank) if use_cuda else torch.device('cpu')
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend='nccl' if dev.type == 'cuda' else 'gloo', device_id=dev if use_cuda else None)
    return DistInfo(world_size, rank, local_rank, dev)


def all_reduce_sum(values: List[float], info: DistInfo) -> List[float]:
    """Sum a few numbers over all processes (float64, so sample counts stay exact)."""
    if not info.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return t.tolist()


def all_gather_object(obj, info: DistInfo) -> list:
    if not info.distributed:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()

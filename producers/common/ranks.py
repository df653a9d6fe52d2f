"""How every producer scales out: started by ``torchrun``, each rank distils its share of the
units (classes, or whatever a method splits by) and rank 0 gathers them and writes the file.
Plain ``torch.distributed``: gloo on CPUs, NCCL on GPUs; one process when ``WORLD_SIZE`` is unset."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

import numpy as np
import torch.distributed as dist

T = TypeVar("T")


def unit_seed(*keys: int) -> int:
    """One seed per unit of work (run seed, class, …), so a unit comes out the same whichever
    rank takes it."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


@contextmanager
def process_group(device: str) -> Iterator[tuple[int, int]]:
    """``(rank, world size)`` of this process: a process group for the block when ``torchrun``
    started it, ``(0, 1)`` otherwise. Every rank waits for the others before the group ends."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield 0, 1
        return
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    try:
        yield dist.get_rank(), dist.get_world_size()
        dist.barrier()
    finally:
        dist.destroy_process_group()


def gather(items: list[Any]) -> list[Any]:
    """Every rank's ``items`` concatenated in rank order on rank 0 (``[]`` on the others)."""
    if not distributed():
        return items
    parts: list | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(items, parts, dst=0)
    return [item for part in parts or [] for item in part]


def rank_zero_first(make: Callable[[], T]) -> T:
    """``make()`` on rank 0 first and then on the others: rank 0 trains and caches what the
    others then read (a teacher, an estimator) instead of every rank training its own."""
    if not distributed():
        return make()
    result = make() if dist.get_rank() == 0 else None
    dist.barrier()
    return result if dist.get_rank() == 0 else make()

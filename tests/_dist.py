"""Run a function in N local processes joined in one process group (for sharding tests).

gloo on CPU (CI); ``backend="nccl"`` runs one process per visible GPU.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.multiprocessing as mp


def _worker(
    rank: int, world_size: int, store_dir: str, backend: str, fn: Callable[..., Any], args: tuple
) -> None:
    os.environ.update(
        {
            "RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(world_size),
        }
    )
    dist.init_process_group(
        backend, init_method=f"file://{store_dir}/store", rank=rank, world_size=world_size
    )
    try:
        result = fn(rank, world_size, *args)
        Path(store_dir, f"result_{rank}.pkl").write_bytes(pickle.dumps(result))
    finally:
        dist.destroy_process_group()


def run_distributed(
    fn: Callable[..., Any], world_size: int, *args: Any, backend: str = "gloo"
) -> list[Any]:
    """``fn(rank, world_size, *args)`` on every rank; returns the per-rank results in order."""
    with tempfile.TemporaryDirectory() as store_dir:
        mp.start_processes(
            _worker,
            args=(world_size, store_dir, backend, fn, args),
            nprocs=world_size,
            start_method="spawn",
        )
        return [
            pickle.loads(Path(store_dir, f"result_{r}.pkl").read_bytes()) for r in range(world_size)
        ]

"""Process-group setup: device and backend chosen from the environment.

* Under torchrun / torchx (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` set):
  joins that group.
* Alone (plain ``python -m torchrec_recsys train``): a world of one on a loopback port, so the
  same DistributedModelParallel code path runs everywhere.
* CUDA present -> ``cuda:LOCAL_RANK`` + NCCL; otherwise CPU + gloo.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process sits and what it computes on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes logs, TensorBoard events, summaries and exports."""
        return self.rank == 0


def pick_device(local_rank: int) -> tuple[torch.device, str]:
    """``(cuda:local_rank, nccl)`` when a GPU is visible, else ``(cpu, gloo)``."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank), "nccl"
    return torch.device("cpu"), "gloo"


def free_loopback_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (for a ``tcp://`` init method)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed() -> DistContext:
    """Initialise (or reuse) the default process group and describe this process."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device, backend = pick_device(local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        if "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ:
            dist.init_process_group(backend=backend)
        else:
            dist.init_process_group(
                backend=backend,
                init_method=f"tcp://127.0.0.1:{free_loopback_port()}",
                rank=0,
                world_size=1,
            )
    return DistContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        device=device,
        backend=backend,
    )


def shutdown_distributed() -> None:
    """Destroy the default process group if one exists."""
    if dist.is_initialized():
        dist.destroy_process_group()

"""Moving weights between a sharded (DMP) model and plain full tensors.

* :func:`load_full_state`: every rank copies its slice of full tensors into its shards
  (DMP on CPU re-initialises tables, so specific weights are loaded after wrapping).
* :func:`gather_full_state`: rank 0 receives every table whole, on CPU (for export).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor


def _slice_for(full: torch.Tensor, offsets: list[int], shape: torch.Size) -> torch.Tensor:
    index = tuple(slice(o, o + s) for o, s in zip(offsets, shape, strict=True))
    return full[index]


@torch.no_grad()
def load_full_state(model: nn.Module, full: Mapping[str, torch.Tensor]) -> None:
    """Copy ``full`` (unsharded tensors keyed like ``model.state_dict()``) into ``model``.

    Raises:
        KeyError: a key of the model's state is missing from ``full``.
    """
    for name, dst in model.state_dict().items():
        if name not in full:
            raise KeyError(f"state key {name!r} is missing from the full state")
        src = full[name]
        if isinstance(dst, ShardedTensor):
            for shard in dst.local_shards():
                offsets = shard.metadata.shard_offsets
                shard.tensor.copy_(_slice_for(src, offsets, shard.tensor.shape))
        else:
            dst.copy_(src)


@torch.no_grad()
def gather_full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full state on CPU at rank 0 (other ranks get an empty dict). Collective call."""
    out: dict[str, torch.Tensor] = {}
    rank0 = dist.get_rank() == 0
    for name, tensor in model.state_dict().items():
        if isinstance(tensor, ShardedTensor):
            # gathered on the shards' device (NCCL gathers CUDA tensors only), kept on CPU
            device = "cuda" if dist.get_backend() == "nccl" else "cpu"
            full = torch.empty(tensor.size(), dtype=tensor.dtype, device=device) if rank0 else None
            tensor.gather(dst=0, out=full)
            if rank0:
                out[name] = full.cpu()
        elif rank0:
            out[name] = tensor.detach().cpu().clone()
    return out

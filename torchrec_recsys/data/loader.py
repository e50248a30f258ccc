"""Per-rank batches over an :class:`ExampleTable`.

Each step takes a *global* batch of ``batch_size x world_size`` examples and gives rank ``r``
the slice ``[r * batch_size, (r + 1) * batch_size)``. Every rank therefore runs the same
number of steps (sharded embeddings need every rank in every collective):

* training shuffles with a seed shared by all ranks and drops the last incomplete global batch;
* evaluation keeps every example once and pads the last global batch with weight-0 rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from torchrec_recsys.data.batch import Batch, build_kjt
from torchrec_recsys.data.dataset import ExampleTable
from torchrec_recsys.data.features import FeatureSpec


@dataclass(frozen=True)
class ShardInfo:
    """This process's place among the data-parallel workers."""

    rank: int = 0
    world_size: int = 1


def make_batch(
    table: ExampleTable, spec: FeatureSpec, rows: torch.Tensor, weights: torch.Tensor
) -> Batch:
    """The :class:`Batch` for ``rows`` (int64 [B]) of ``table``."""
    return Batch(
        dense_features=table.dense[rows],  # [B, num_dense]
        sparse_features=build_kjt(table.sparse, rows, spec.sparse),
        labels=table.labels[rows],  # [B]
        weights=weights,  # [B]
        user_rows=table.user_rows[rows],
        item_rows=table.item_rows[rows],
    )


def num_train_steps(num_examples: int, batch_size: int, shard: ShardInfo) -> int:
    """Steps per training epoch (last incomplete global batch dropped)."""
    return num_examples // (batch_size * shard.world_size)


def num_eval_steps(num_examples: int, batch_size: int, shard: ShardInfo) -> int:
    """Steps per evaluation pass (last global batch padded)."""
    global_batch = batch_size * shard.world_size
    return (num_examples + global_batch - 1) // global_batch


def train_batches(
    table: ExampleTable,
    spec: FeatureSpec,
    batch_size: int,
    shard: ShardInfo,
    seed: int,
    epoch: int,
    start_step: int = 0,
) -> Iterator[Batch]:
    """Shuffled training batches for this rank, from ``start_step`` (for mid-epoch resume)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(table), generator=generator)  # same on every rank
    global_batch = batch_size * shard.world_size
    ones = torch.ones(batch_size)
    for step in range(start_step, num_train_steps(len(table), batch_size, shard)):
        begin = step * global_batch + shard.rank * batch_size
        yield make_batch(table, spec, order[begin : begin + batch_size], ones)


def eval_batches(
    table: ExampleTable, spec: FeatureSpec, batch_size: int, shard: ShardInfo
) -> Iterator[Batch]:
    """Every example once, in order, padded with weight-0 copies of row 0 to full batches."""
    n = len(table)
    global_batch = batch_size * shard.world_size
    for step in range(num_eval_steps(n, batch_size, shard)):
        begin = step * global_batch + shard.rank * batch_size
        rows = torch.arange(begin, begin + batch_size)  # [B]
        real = rows < n
        yield make_batch(table, spec, torch.where(real, rows, 0), real.float())

"""Per-rank batches over an :class:`ExampleTable`.

Each step takes a *global* batch of ``batch_size x world_size`` examples and gives rank ``r``
the slice ``[r * batch_size, (r + 1) * batch_size)``. Every rank therefore runs the same
number of steps (sharded embeddings need every rank in every collective):

* training shuffles with a seed shared by all ranks and drops the last incomplete global batch;
* evaluation keeps every example once and pads the last global batch with weight-0 rows.

The data position of a training epoch is a *sample* offset into that epoch's shuffled order
(``start_sample``), not a step: the order depends only on the seed and the epoch, so an epoch
interrupted after ``s`` samples continues at sample ``s`` with any world size or batch size.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from torchrec_recsys.data.batch import (
    Batch,
    KJTBuilder,
    build_kjt,
    build_kjt_whole,
    check_dense,
)
from torchrec_recsys.data.dataset import ExampleTable
from torchrec_recsys.data.features import FeatureSpec
from torchrec_recsys.errors import DataError


@dataclass(frozen=True)
class ShardInfo:
    """This process's place among the data-parallel workers."""

    rank: int = 0
    world_size: int = 1


def make_batch(
    table: ExampleTable, spec: FeatureSpec, rows: torch.Tensor, weights: torch.Tensor
) -> Batch:
    """The :class:`Batch` for ``rows`` (int64 [B]) of ``table``.

    Raises:
        DataError: a dense value of these rows is NaN or infinite, or an ID is out of range.
    """
    dense = table.dense[rows]  # [B, num_dense]
    check_dense(spec.dense_names(), dense)
    return Batch(
        dense_features=dense,
        sparse_features=build_kjt(table.sparse, rows, spec.sparse),
        labels=table.labels[rows],  # [B]
        weights=weights,  # [B]
        user_rows=table.user_rows[rows],
        item_rows=table.item_rows[rows],
    )


class TableBatcher:
    """:func:`make_batch` for many batches of one table: the same batches, with the table's
    dense values and IDs checked once here instead of in every batch, and the KJT built by a
    :class:`KJTBuilder` (a few tensor ops per batch).

    Raises (at construction):
        DataError: a dense value of the table is NaN or infinite, or an ID is out of range.
    """

    def __init__(self, table: ExampleTable, spec: FeatureSpec) -> None:
        check_dense(spec.dense_names(), table.dense, where="the table")
        self.table = table
        self.kjt = KJTBuilder(table.sparse, spec.sparse)

    def __call__(self, rows: torch.Tensor, weights: torch.Tensor) -> Batch:
        """The :class:`Batch` for ``rows`` (int64 [B]) with ``weights`` [B]."""
        table = self.table
        return Batch(
            dense_features=table.dense[rows],  # [B, num_dense]
            sparse_features=self.kjt(rows),
            labels=table.labels[rows],  # [B]
            weights=weights,  # [B]
            user_rows=table.user_rows[rows],
            item_rows=table.item_rows[rows],
        )


def whole_batch(table: ExampleTable, spec: FeatureSpec) -> Batch:
    """Every row of ``table`` as one :class:`Batch` (weights 1), without gathering rows.

    Raises:
        DataError: a dense value is NaN or infinite, or an ID is out of range.
    """
    check_dense(spec.dense_names(), table.dense)
    n = len(table)
    return Batch(
        dense_features=table.dense,  # [B, num_dense]
        sparse_features=build_kjt_whole(table.sparse, spec.sparse),
        labels=table.labels,  # [B]
        weights=torch.ones(n),  # [B]
        user_rows=table.user_rows,
        item_rows=table.item_rows,
    )


def num_train_steps(
    num_examples: int, batch_size: int, shard: ShardInfo, start_sample: int = 0
) -> int:
    """Steps from sample ``start_sample`` to the epoch end (last incomplete batch dropped)."""
    return max(num_examples - start_sample, 0) // (batch_size * shard.world_size)


def num_eval_steps(num_examples: int, batch_size: int, shard: ShardInfo) -> int:
    """Steps per evaluation pass (last global batch padded)."""
    global_batch = batch_size * shard.world_size
    return (num_examples + global_batch - 1) // global_batch


def epoch_order(num_examples: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of a training epoch: a permutation of ``num_examples`` (int64 [N])
    that depends only on ``seed`` and ``epoch``."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_examples, generator=generator)


def train_rows(
    num_examples: int,
    batch_size: int,
    shard: ShardInfo,
    seed: int,
    epoch: int,
    start_sample: int = 0,
) -> Iterator[torch.Tensor]:
    """This rank's example rows (int64 [batch_size]) of each training step, shuffled.

    Global step ``k`` covers positions ``[start_sample + k * G, start_sample + (k + 1) * G)``
    of the epoch's order (``G = batch_size x world_size``); this rank takes its ``batch_size``
    slice. ``start_sample`` is where a resumed epoch stopped (``TrainerState.samples_in_epoch``),
    so a mid-epoch resume continues exactly at the next unseen example. The one shuffling
    mechanism for every example kind (tables and sequences).

    Raises:
        DataError: ``start_sample`` lies outside ``[0, num_examples]``.
    """
    if not 0 <= start_sample <= num_examples:
        raise DataError(
            f"training position {start_sample} is outside the training split of "
            f"{num_examples} examples"
        )
    order = epoch_order(num_examples, seed, epoch)  # same on every rank
    global_batch = batch_size * shard.world_size
    for step in range(num_train_steps(num_examples, batch_size, shard, start_sample)):
        begin = start_sample + step * global_batch + shard.rank * batch_size
        yield order[begin : begin + batch_size]


def eval_rows(
    num_examples: int, batch_size: int, shard: ShardInfo
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(rows [B], weights [B]) of each evaluation step: every example once, in order, the last
    global batch padded with weight-0 copies of row 0."""
    global_batch = batch_size * shard.world_size
    for step in range(num_eval_steps(num_examples, batch_size, shard)):
        begin = step * global_batch + shard.rank * batch_size
        rows = torch.arange(begin, begin + batch_size)  # [B]
        real = rows < num_examples
        yield torch.where(real, rows, 0), real.float()


def train_batches(
    table: ExampleTable,
    spec: FeatureSpec,
    batch_size: int,
    shard: ShardInfo,
    seed: int,
    epoch: int,
    start_sample: int = 0,
    batcher: TableBatcher | None = None,
) -> Iterator[Batch]:
    """Shuffled training batches of ``table`` for this rank (order: :func:`train_rows`).

    ``batcher``: a :class:`TableBatcher` of ``table`` and ``spec`` made earlier (e.g. kept
    across epochs); by default one is made here, which checks the table once.

    Raises:
        DataError: a dense value of ``table`` is NaN or infinite, or an ID is out of range
            (before the first batch).
    """
    rows_iter = train_rows(len(table), batch_size, shard, seed, epoch, start_sample)
    make = batcher if batcher is not None else TableBatcher(table, spec)
    ones = torch.ones(batch_size)
    for rows in rows_iter:
        yield make(rows, ones)


class TableSource:
    """The training examples of an :class:`ExampleTable` as the trainer's batch source."""

    def __init__(self, table: ExampleTable, spec: FeatureSpec) -> None:
        self.table = table
        self.spec = spec
        self._batcher: TableBatcher | None = None  # made at the first epoch, then kept

    def __len__(self) -> int:
        return len(self.table)

    def order(self, batch_size: int, shard: ShardInfo) -> str:
        """Nothing: the shuffled order depends only on the table's size and the seed."""
        return ""

    def train_batches(
        self, batch_size: int, shard: ShardInfo, seed: int, epoch: int, start_sample: int = 0
    ) -> Iterator[Batch]:
        if self._batcher is None:
            self._batcher = TableBatcher(self.table, self.spec)
        return train_batches(
            self.table, self.spec, batch_size, shard, seed, epoch, start_sample, self._batcher
        )


def eval_batches(
    table: ExampleTable, spec: FeatureSpec, batch_size: int, shard: ShardInfo
) -> Iterator[Batch]:
    """Every example once, in order, padded with weight-0 copies of row 0 to full batches.

    Raises:
        DataError: a dense value of ``table`` is NaN or infinite, or an ID is out of range.
    """
    batcher = TableBatcher(table, spec) if len(table) else None
    for rows, weights in eval_rows(len(table), batch_size, shard):
        assert batcher is not None
        yield batcher(rows, weights)

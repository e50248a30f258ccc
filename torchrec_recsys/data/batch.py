"""The one place that builds ``KeyedJaggedTensor``s, and the ``Batch`` both models read.

A KJT for keys [user_id, user_history, item_genres] and a batch of 3 examples::

                  example 0     example 1       example 2
    user_id       [17]          [4]             [17]
    user_history  [3, 9]        []              [3, 9, 12]
    item_genres   [2]           [2, 5]          [7]

    keys    = ["user_id", "user_history", "item_genres"]
    lengths = [1, 1, 1,   2, 0, 3,   1, 2, 1]          # key-major: len(keys) x B
    values  = [17, 4, 17, 3, 9, 3, 9, 12, 2, 2, 5, 7]  # same order as lengths

Every ID is checked against its table's rows here: TorchRec would silently clamp an
out-of-range ID to row 0 (https://github.com/pytorch/torchrec/issues/575).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
from torchrec.streamable import Pipelineable

from torchrec_recsys.data.features import SparseFeature
from torchrec_recsys.data.jagged import JaggedColumn
from torchrec_recsys.errors import DataError


@dataclass
class Batch(Pipelineable):
    """One step's input for the DLRM and the two-tower alike.

    ``weights`` is 0 for padding rows (added so every rank runs the same number of eval
    steps) and 1 otherwise; losses and metrics are weighted by it.
    """

    dense_features: torch.Tensor  # [B, num_dense] float32
    sparse_features: KeyedJaggedTensor  # keys = FeatureSpec sparse names
    labels: torch.Tensor  # [B] float32
    weights: torch.Tensor  # [B] float32
    user_rows: torch.Tensor  # [B] int64, index into RecDataset.user_ids
    item_rows: torch.Tensor  # [B] int64, index into ItemCatalogue.item_ids

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        return Batch(
            dense_features=self.dense_features.to(device=device, non_blocking=non_blocking),
            sparse_features=self.sparse_features.to(device=device, non_blocking=non_blocking),
            labels=self.labels.to(device=device, non_blocking=non_blocking),
            weights=self.weights.to(device=device, non_blocking=non_blocking),
            user_rows=self.user_rows.to(device=device, non_blocking=non_blocking),
            item_rows=self.item_rows.to(device=device, non_blocking=non_blocking),
        )

    def record_stream(self, stream: torch.Stream) -> None:
        for t in (self.dense_features, self.labels, self.weights, self.user_rows, self.item_rows):
            t.record_stream(stream)
        self.sparse_features.record_stream(stream)

    def pin_memory(self) -> Batch:
        return Batch(
            dense_features=self.dense_features.pin_memory(),
            sparse_features=self.sparse_features.pin_memory(),
            labels=self.labels.pin_memory(),
            weights=self.weights.pin_memory(),
            user_rows=self.user_rows.pin_memory(),
            item_rows=self.item_rows.pin_memory(),
        )


def check_ids(feature: SparseFeature, values: torch.Tensor) -> None:
    """Raise :class:`DataError` if any ID falls outside ``[0, feature.num_embeddings)``."""
    if values.numel() == 0:
        return
    low, high = int(values.min()), int(values.max())
    if low < 0 or high >= feature.num_embeddings:
        bad = low if low < 0 else high
        raise DataError(
            f"feature {feature.name!r} has ID {bad} outside its table {feature.table!r} "
            f"of {feature.num_embeddings} rows (expected 0..{feature.num_embeddings - 1})"
        )


def check_dense(names: Sequence[str], dense: torch.Tensor, where: str = "a batch") -> None:
    """Raise :class:`DataError` unless ``dense`` is [B, len(names)] of finite numbers.

    A single NaN or infinite dense value turns the loss, and then every weight, into NaN.
    ``where`` names what ``dense`` holds in the message (a batch, or a whole table).
    """
    if dense.dim() != 2 or dense.shape[1] != len(names):
        raise DataError(
            f"dense features have shape {tuple(dense.shape)}, expected [batch, {len(names)}] "
            f"for {list(names)}"
        )
    bad = ~torch.isfinite(dense)  # [B, num_dense]
    if bool(bad.any()):
        column = int(bad.any(dim=0).nonzero()[0])
        raise DataError(
            f"dense feature {names[column]!r} has {int(bad[:, column].sum())} NaN or infinite "
            f"value(s) in {where}; expected finite numbers"
        )


def build_kjt(
    columns: Mapping[str, JaggedColumn], rows: torch.Tensor, features: Sequence[SparseFeature]
) -> KeyedJaggedTensor:
    """KJT of ``features`` (in that key order) for examples ``rows`` of ``columns``.

    Args:
        columns: KJT key -> jagged column (one row per example or per item).
        rows: int64 [B], which rows make up the batch.
        features: the spec entries to include; each key must be in ``columns``.
    """
    lengths, values = [], []
    for feature in features:
        if feature.name not in columns:
            raise DataError(f"feature {feature.name!r} has no data column; have {sorted(columns)}")
        feature_lengths, feature_values = columns[feature.name].gather(rows)  # [B], [nnz]
        check_ids(feature, feature_values)
        lengths.append(feature_lengths)
        values.append(feature_values)
    return kjt_from_pieces([f.name for f in features], lengths, values)


class KJTBuilder:
    """Builds the KJT of ``features`` for batches of rows of ``columns``, the same KJT as
    :func:`build_kjt`, with the per-batch work cut to a few tensor ops.

    Everything that does not depend on the rows is done once, here:

    * every ID of every column is checked against its table (so no batch needs a check);
    * the features are cut into runs of consecutive keys (in the given key order) that are
      either all *single-valued* (every row holds exactly one ID) or all *multi-valued*;
    * a single-valued run of S keys becomes one matrix [S, N] (a batch is one column
      gather: [S, B], already key-major);
    * a multi-valued run of M keys becomes one jagged column of M x N segments, key-major
      (segment ``m * N + r`` is row ``r`` of key ``m``), so a batch is one jagged gather of
      the M x B segments ``m * N + rows``, which lands key-major too.

    For keys [user_id, item_id] (single) then [genres, history] (multi), N rows::

        single run   matrix [2, N]          batch: matrix[:, rows]          -> [2 * B]
        multi run    column of 2 * N rows   batch: gather(rows, N + rows)   -> [nnz]
        KJT          values = cat(single, multi), lengths = cat(ones [2 * B], multi lengths)

    Raises (at construction):
        DataError: a feature has no column, or a column holds an ID outside its table.
    """

    def __init__(self, columns: Mapping[str, JaggedColumn], features: Sequence[SparseFeature]):
        self.keys = [f.name for f in features]
        runs: list[tuple[bool, list[JaggedColumn]]] = []  # (single-valued, columns) in order
        num_rows = None
        for feature in features:
            if feature.name not in columns:
                raise DataError(
                    f"feature {feature.name!r} has no data column; have {sorted(columns)}"
                )
            column = columns[feature.name]
            check_ids(feature, column.values)
            num_rows = len(column) if num_rows is None else num_rows
            if len(column) != num_rows:
                raise DataError(
                    f"feature {feature.name!r} has {len(column)} rows, the others {num_rows}"
                )
            single = column.values.numel() == len(column) and bool(
                torch.equal(column.offsets, torch.arange(len(column) + 1))
            )
            if runs and runs[-1][0] == single:
                runs[-1][1].append(column)
            else:
                runs.append((single, [column]))
        self.num_rows = num_rows or 0
        # (True, [S, N] int64 matrix) or (False, jagged column of M * N segments, M)
        self.runs: list[tuple[bool, torch.Tensor | JaggedColumn, int]] = []
        for single, run in runs:
            if single:
                self.runs.append((True, torch.stack([c.values for c in run]), len(run)))
            else:
                merged = JaggedColumn.from_lengths(
                    torch.cat([c.lengths for c in run]), torch.cat([c.values for c in run])
                )
                self.runs.append((False, merged, len(run)))
        # segment offset of each key of a multi-valued run: [M, 1]
        self._bases = {
            m: (torch.arange(m, dtype=torch.int64) * self.num_rows)[:, None]
            for single, _, m in self.runs
            if not single
        }

    def __call__(self, rows: torch.Tensor) -> KeyedJaggedTensor:
        """The KJT of examples ``rows`` (int64 [B]): keys in the features' order, lengths
        [len(keys) * B] int32 key-major, values int64."""
        if not self.runs:  # no sparse features
            empty = torch.zeros(0, dtype=torch.int64)
            return KeyedJaggedTensor.from_lengths_sync(
                keys=[], values=empty, lengths=empty.to(torch.int32)
            )
        values, lengths = [], []
        for single, run, m in self.runs:
            if single:
                assert isinstance(run, torch.Tensor)
                values.append(run.index_select(1, rows).reshape(-1))  # [S * B], key-major
                lengths.append(torch.ones(m * rows.numel(), dtype=torch.int32))
            else:
                assert isinstance(run, JaggedColumn)
                segments = (self._bases[m] + rows[None, :]).reshape(-1)  # [M * B], key-major
                run_lengths, run_values = run.gather(segments)  # [M * B], [nnz]
                values.append(run_values)
                lengths.append(run_lengths.to(torch.int32))
        flat_values = values[0] if len(values) == 1 else torch.cat(values)
        flat_lengths = lengths[0] if len(lengths) == 1 else torch.cat(lengths)
        return KeyedJaggedTensor.from_lengths_sync(
            keys=self.keys, values=flat_values, lengths=flat_lengths
        )


def kjt_from_pieces(
    keys: Sequence[str],
    lengths: Sequence[torch.Tensor | np.ndarray],
    values: Sequence[torch.Tensor | np.ndarray],
) -> KeyedJaggedTensor:
    """The KJT of per-key lengths [B] and values [nnz] (torch or numpy, IDs already checked),
    concatenated key-major: lengths [len(keys) * B] int32, values [sum of all lengths]."""
    if lengths and isinstance(lengths[0], np.ndarray):
        flat_lengths = torch.from_numpy(np.concatenate(lengths).astype(np.int32))
        flat_values = torch.from_numpy(np.concatenate(values).astype(np.int64, copy=False))
    else:
        flat_lengths = torch.cat(list(lengths)).to(torch.int32)  # type: ignore[arg-type]
        flat_values = torch.cat(list(values))  # type: ignore[arg-type]
    return KeyedJaggedTensor.from_lengths_sync(
        keys=list(keys), values=flat_values, lengths=flat_lengths
    )


@dataclass
class SequenceBatch(Pipelineable):
    """One step's input for the sequence models (SASRec, generative retriever).

    ``sparse_features`` holds the history as a jagged sequence of tokens per example (one
    token per item for SASRec, the item's semantic-ID tuple for the generative model) and,
    optionally, a one-token user key; an ``EmbeddingCollection`` embeds it unpooled.
    """

    sparse_features: KeyedJaggedTensor  # keys = the sequence features' names
    targets: torch.Tensor  # [B] int64 catalogue row of the next item
    weights: torch.Tensor  # [B] float32, 0 for padding rows
    user_rows: torch.Tensor  # [B] int64, index into RecDataset.user_ids

    def to(self, device: torch.device, non_blocking: bool = False) -> SequenceBatch:
        return SequenceBatch(
            sparse_features=self.sparse_features.to(device=device, non_blocking=non_blocking),
            targets=self.targets.to(device=device, non_blocking=non_blocking),
            weights=self.weights.to(device=device, non_blocking=non_blocking),
            user_rows=self.user_rows.to(device=device, non_blocking=non_blocking),
        )

    def record_stream(self, stream: torch.Stream) -> None:
        for t in (self.targets, self.weights, self.user_rows):
            t.record_stream(stream)
        self.sparse_features.record_stream(stream)

    def pin_memory(self) -> SequenceBatch:
        return SequenceBatch(
            sparse_features=self.sparse_features.pin_memory(),
            targets=self.targets.pin_memory(),
            weights=self.weights.pin_memory(),
            user_rows=self.user_rows.pin_memory(),
        )


def build_sequence_kjt(
    history: JaggedColumn,
    user_rows: torch.Tensor,
    rows: torch.Tensor,
    item_feature: SparseFeature,
    item_tokens: torch.Tensor,
    user_feature: SparseFeature | None = None,
    user_tokens: torch.Tensor | None = None,
) -> KeyedJaggedTensor:
    """KJT of a batch of item sequences, each item spelled as ``T`` tokens.

    History rows ``rows`` [B] of ``history`` (catalogue rows per example), items mapped through
    ``item_tokens`` [I, T] and flattened in order; with ``user_feature``, one more key holding
    ``user_tokens[user_rows[rows]]``. For 2 examples with histories [a, b] and [c], T = 2
    (item a = tokens a1 a2) and a user key::

        history_tokens  [a1, a2, b1, b2]   [c1, c2]
        user_token      [u0]               [u1]

        lengths = [4, 2,   1, 1]                  # key-major: len(keys) x B
        values  = [a1, a2, b1, b2, c1, c2, u0, u1]
    """
    item_lengths, items = history.gather(rows)  # [B], [nnz] catalogue rows
    tokens_per_item = item_tokens.shape[1]
    values = [item_tokens[items].reshape(-1)]  # [nnz * T]
    lengths = [item_lengths * tokens_per_item]  # [B]
    check_ids(item_feature, values[0])
    keys = [item_feature.name]
    if user_feature is not None and user_tokens is not None:
        user_values = user_tokens[user_rows[rows]]  # [B]
        check_ids(user_feature, user_values)
        keys.append(user_feature.name)
        values.append(user_values)
        lengths.append(torch.ones_like(item_lengths))
    return KeyedJaggedTensor.from_lengths_sync(
        keys=keys,
        values=torch.cat(values),
        lengths=torch.cat(lengths).to(torch.int32),  # [len(keys) * B], key-major
    )


def build_kjt_whole(
    columns: Mapping[str, JaggedColumn], features: Sequence[SparseFeature]
) -> KeyedJaggedTensor:
    """KJT of *every* row of ``columns`` in order: ``build_kjt`` without the row gather, for a
    table that already is the batch (e.g. one request's features at serving time)."""
    lengths, values = [], []
    for feature in features:
        if feature.name not in columns:
            raise DataError(f"feature {feature.name!r} has no data column; have {sorted(columns)}")
        column = columns[feature.name]
        check_ids(feature, column.values)
        lengths.append(column.lengths)  # [B]
        values.append(column.values)  # [nnz]
    return kjt_from_pieces([f.name for f in features], lengths, values)

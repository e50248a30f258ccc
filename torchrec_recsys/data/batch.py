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
out-of-range ID to row 0 (TorchRec issue #575).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

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


def check_dense(names: Sequence[str], dense: torch.Tensor) -> None:
    """Raise :class:`DataError` unless ``dense`` is [B, len(names)] of finite numbers.

    A single NaN or infinite dense value turns the loss, and then every weight, into NaN.
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
            f"value(s) in a batch; expected finite numbers"
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
    return KeyedJaggedTensor.from_lengths_sync(
        keys=[f.name for f in features],
        values=torch.cat(values),  # [sum of all lengths]
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
    return KeyedJaggedTensor.from_lengths_sync(
        keys=[f.name for f in features],
        values=torch.cat(values),  # [sum of all lengths]
        lengths=torch.cat(lengths).to(torch.int32),  # [len(keys) * B], key-major
    )

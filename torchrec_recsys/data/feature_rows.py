"""One tower's features for every user (or catalogue item), laid out for per-request gathers.

The offline path builds a request's features as tables (``RecDataset.user_table`` /
``pair_table`` -> ``JaggedColumn.select`` -> ``whole_batch``): a dozen small tensor ops and
validations per feature, per request. A server answering one user at a time cannot afford
that, so it takes those tables ONCE for all rows (``TowerRows.from_table``: the features are
the offline path's own, their IDs and dense values validated once) and assembles each
request's batch with a few numpy slices:

    query batch, 1 row                 pair batch, C rows (user u, candidate items i_1..i_C)
    user keys  <- users row u          user keys  <- users row u, repeated C times
    item keys  <- empty                item keys  <- items rows i_1..i_C
    dense      <- users dense row u    dense      <- user columns from u, item columns from i_c

For keys [user_id, item_genres], u = 17 and candidates with genres [2] and [2, 5]::

    keys    = ["user_id", "item_genres"]
    lengths = [1, 1,   1, 2]        # key-major: len(keys) x C
    values  = [17, 17, 2, 2, 5]

which is exactly what ``whole_batch(pair_table(...))`` holds (``tests/data/test_feature_rows``
compares them key by key).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_recsys.data.batch import check_dense, check_ids, kjt_from_pieces
from torchrec_recsys.data.dataset import ExampleTable
from torchrec_recsys.data.features import ITEM, USER, FeatureSpec

_EMPTY = np.zeros(0, dtype=np.int64)


@dataclass
class TowerRows:
    """The ``tower`` keys and dense columns of every row of one table, as numpy arrays.

    offsets: key -> int64 [N + 1]; values: key -> int64 [nnz], every ID inside its table;
    dense: float32 [N, num_dense] (this tower's columns set, the others 0, as in the table).
    """

    spec: FeatureSpec
    tower: str
    offsets: dict[str, np.ndarray]
    values: dict[str, np.ndarray]
    dense: np.ndarray
    _padded: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_table(cls, table: ExampleTable, spec: FeatureSpec, tower: str) -> TowerRows:
        """Take ``table``'s ``tower`` features (e.g. ``data.user_table(all rows)`` or
        ``data.catalogue_table()``), checking every ID and dense value once.

        Raises:
            DataError: an ID outside its table, or a NaN / infinite dense value.
        """
        features = spec.sparse_features(tower)
        for feature in features:
            check_ids(feature, table.sparse[feature.name].values)
        check_dense(spec.dense_names(), table.dense)
        rows = cls(
            spec=spec,
            tower=tower,
            offsets={f.name: table.sparse[f.name].offsets.numpy() for f in features},
            values={f.name: table.sparse[f.name].values.numpy() for f in features},
            dense=np.ascontiguousarray(table.dense.numpy(), dtype=np.float32),
        )
        if tower == ITEM:  # items are gathered many rows at a time: pad them now, not mid-request
            for feature in features:
                rows._padded_key(feature.name)
        return rows

    def __len__(self) -> int:
        return self.dense.shape[0]

    def row(self, key: str, row: int) -> np.ndarray:
        """The values of ``key`` for one row. int64 [len]"""
        offsets = self.offsets[key]
        return self.values[key][offsets[row] : offsets[row + 1]]

    def gather(self, key: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lengths [B] and concatenated values [sum(lengths)] of ``key`` for ``rows``."""
        padded, lengths = self._padded_key(key)
        taken = lengths[rows]  # [B]
        mask = np.arange(padded.shape[1]) < taken[:, None]  # [B, L]
        return taken, padded[rows][mask]  # row-major: each row's values in order

    def _padded_key(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """``key`` as a padded matrix [N, max length] + lengths [N], built on first use."""
        if key not in self._padded:
            offsets, values = self.offsets[key], self.values[key]
            lengths = np.diff(offsets)  # [N]
            width = int(lengths.max(initial=0))
            padded = np.zeros((len(lengths), max(width, 1)), dtype=np.int64)  # [N, L]
            padded[np.arange(width) < lengths[:, None]] = values
            self._padded[key] = (padded, lengths)
        return self._padded[key]


def query_batch(users: TowerRows, row: int) -> tuple[torch.Tensor, KeyedJaggedTensor]:
    """User ``row`` as a one-row batch: dense [1, num_dense] and the KJT of every spec key
    (item keys empty), as ``whole_batch(data.user_table([row]))`` holds them."""
    user_keys = set(users.offsets)
    lengths, values = [], []
    for key in users.spec.sparse_names():
        value = users.row(key, row) if key in user_keys else _EMPTY
        lengths.append(np.array([len(value)], dtype=np.int64))
        values.append(value)
    dense = torch.from_numpy(users.dense[row : row + 1].copy())  # [1, num_dense]
    return dense, kjt_from_pieces(users.spec.sparse_names(), lengths, values)


def pair_batch(
    users: TowerRows, row: int, items: TowerRows, item_rows: np.ndarray
) -> tuple[torch.Tensor, KeyedJaggedTensor]:
    """(user ``row``, item ``item_rows[c]``) pairs: dense [C, num_dense] and the KJT of every
    spec key, as ``whole_batch(data.pair_table(user_table([row]), zeros(C), item_rows))``."""
    if users.tower != USER or items.tower != ITEM:
        raise ValueError(f"pair_batch needs user and item rows, got {users.tower}, {items.tower}")
    n = len(item_rows)
    lengths, values = [], []
    for key in users.spec.sparse_names():
        if key in items.offsets:
            key_lengths, key_values = items.gather(key, item_rows)  # [C], [nnz]
        else:  # a user key (any other key is empty in the user's table too)
            value = users.row(key, row) if key in users.offsets else _EMPTY
            key_lengths, key_values = np.full(n, len(value), dtype=np.int64), np.tile(value, n)
        lengths.append(key_lengths)
        values.append(key_values)
    item_columns = users.spec.dense_indices(ITEM)
    dense = np.repeat(users.dense[row : row + 1], n, axis=0)  # [C, num_dense]
    dense[:, item_columns] = items.dense[item_rows][:, item_columns]
    return torch.from_numpy(dense), kjt_from_pieces(users.spec.sparse_names(), lengths, values)

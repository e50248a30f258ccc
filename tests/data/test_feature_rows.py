"""Feature rows for serving: the assembled batches equal the offline tables' batches."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from _configs import dataset_configs
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_recsys.data.dataset import RecDataset, build_dataset
from torchrec_recsys.data.feature_rows import TowerRows, pair_batch, query_batch
from torchrec_recsys.data.features import ITEM, USER
from torchrec_recsys.data.loader import whole_batch
from torchrec_recsys.data.readers import RawData
from torchrec_recsys.errors import DataError


def _dataset() -> RecDataset:
    inter = pd.DataFrame(
        {
            "user_id": ["a"] * 5 + ["b"] * 4 + ["c"] * 3,
            "item_id": ["1", "2", "3", "4", "5", "2", "6", "7", "1", "3", "6", "5"],
            "rating": [5.0, 1.0, 4.0, 2.0, 5.0, 4.0, 3.0, 5.0, 4.0, 3.0, 2.0, 5.0],
            "timestamp": [30.0, 10.0, 20.0, 50.0, 40.0, 5.0, 6.0, 7.0, 8.0, 1.0, 2.0, 3.0],
        }
    )
    items = pd.DataFrame(
        {
            "item_id": ["1", "2", "3", "4", "5", "6", "7", "8"],
            "title": list("abcdefgh"),
            "genres": ["x|y", "y", "", "z", "x", "y|z|x", "x", "y"],  # 0 to 3 values per item
        }
    )
    users = pd.DataFrame({"user_id": ["a", "b", "c"], "gender": ["F", "M", "F"]})
    configs = dataset_configs(
        item_categorical_columns=["genres"],
        user_categorical_columns=["gender"],
        history_length=3,
        embedding_dim=4,
    )
    return build_dataset(RawData(inter, items, users, "toy"), *configs)  # type: ignore[arg-type]


def _assert_same_kjt(got: KeyedJaggedTensor, want: KeyedJaggedTensor) -> None:
    keys = want.keys()
    assert got.keys() == keys
    for key in keys:
        assert torch.equal(got[key].lengths(), want[key].lengths()), key
        assert torch.equal(got[key].values(), want[key].values()), key


def test_query_batch_equals_the_offline_user_table_batch() -> None:
    data = _dataset()
    users = TowerRows.from_table(data.user_table(torch.arange(len(data.user_ids))), data.spec, USER)
    assert len(users) == 3
    for row in range(len(data.user_ids)):
        dense, sparse = query_batch(users, row)
        want = whole_batch(data.user_table(torch.tensor([row])), data.spec)
        assert torch.equal(dense, want.dense_features)
        _assert_same_kjt(sparse, want.sparse_features)
        assert sum(len(users.row(k, row)) for k in users.offsets) > 0  # not all empty
    cold = TowerRows.from_table(data.cold_user_table(["3", "nope"]), data.spec, USER)
    dense, sparse = query_batch(cold, 0)
    want = whole_batch(data.cold_user_table(["3", "nope"]), data.spec)
    assert torch.equal(dense, want.dense_features)
    _assert_same_kjt(sparse, want.sparse_features)


def test_pair_batch_equals_the_offline_pair_table_batch() -> None:
    data = _dataset()
    users = TowerRows.from_table(data.user_table(torch.arange(len(data.user_ids))), data.spec, USER)
    items = TowerRows.from_table(data.catalogue_table(), data.spec, ITEM)
    candidates = np.array([5, 2, 0, 7, 5, 3], dtype=np.int64)  # repeats, an empty genre list
    for row in range(len(data.user_ids)):
        dense, sparse = pair_batch(users, row, items, candidates)
        table = data.pair_table(
            data.user_table(torch.tensor([row])),
            torch.zeros(len(candidates), dtype=torch.int64),
            torch.from_numpy(candidates),
        )
        want = whole_batch(table, data.spec)
        assert dense.shape == (len(candidates), len(data.spec.dense))
        assert torch.equal(dense, want.dense_features)
        _assert_same_kjt(sparse, want.sparse_features)
    genres = sparse["item_genres"].lengths().tolist()
    assert genres == [3, 0, 2, 1, 3, 1]  # the padded gather keeps every item's own length


def test_tower_rows_refuse_out_of_range_ids() -> None:
    data = _dataset()
    table = data.catalogue_table()
    table.sparse["item_genres"].values[0] = 10_000
    with pytest.raises(DataError, match="item_genres"):
        TowerRows.from_table(table, data.spec, ITEM)

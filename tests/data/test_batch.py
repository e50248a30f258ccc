"""KJT construction, ID validation, and per-rank batching."""

from __future__ import annotations

import pytest
import torch
from _configs import dataset_configs

from torchrec_recsys.data.batch import build_kjt
from torchrec_recsys.data.dataset import build_dataset
from torchrec_recsys.data.features import SparseFeature
from torchrec_recsys.data.jagged import JaggedColumn
from torchrec_recsys.data.loader import (
    ShardInfo,
    eval_batches,
    num_eval_steps,
    num_train_steps,
    train_batches,
)
from torchrec_recsys.data.readers import read_files
from torchrec_recsys.errors import DataError


def _feature(name: str, rows: int) -> SparseFeature:
    return SparseFeature(
        name=name,
        table=f"t_{name}",
        num_embeddings=rows,
        embedding_dim=4,
        pooling="sum",
        tower="user",
    )


def test_kjt_matches_the_picture_in_the_docstring() -> None:
    columns = {
        "user_id": JaggedColumn.from_lists([[17], [4], [17]]),
        "user_history": JaggedColumn.from_lists([[3, 9], [], [3, 9, 12]]),
        "item_genres": JaggedColumn.from_lists([[2], [2, 5], [7]]),
    }
    features = [_feature("user_id", 20), _feature("user_history", 20), _feature("item_genres", 8)]
    kjt = build_kjt(columns, torch.tensor([0, 1, 2]), features)
    assert kjt.keys() == ["user_id", "user_history", "item_genres"]
    assert kjt.lengths().tolist() == [1, 1, 1, 2, 0, 3, 1, 2, 1]
    assert kjt.values().tolist() == [17, 4, 17, 3, 9, 3, 9, 12, 2, 2, 5, 7]
    assert kjt["user_history"].to_dense()[2].tolist() == [3, 9, 12]
    # gathering rows in another order reorders examples
    kjt = build_kjt(columns, torch.tensor([2, 0]), features)
    assert kjt["user_history"].lengths().tolist() == [3, 2]


@pytest.mark.parametrize("bad", [20, -1])
def test_out_of_range_id_is_an_error_not_row_zero(bad: int) -> None:
    columns = {"user_id": JaggedColumn.from_lists([[1], [bad]])}
    with pytest.raises(
        DataError, match=f"feature 'user_id' has ID {bad} outside its table 't_user_id' of 20 rows"
    ):
        build_kjt(columns, torch.tensor([0, 1]), [_feature("user_id", 20)])


def test_ranks_get_disjoint_slices_and_equal_step_counts(synthetic_paths) -> None:  # type: ignore[no-untyped-def]
    raw = read_files(
        str(synthetic_paths.interactions),
        str(synthetic_paths.items),
        str(synthetic_paths.users),
        ["genres", "decade"],
        ["gender"],
    )
    ds = build_dataset(raw, *dataset_configs(["genres", "decade"], ["gender"], embedding_dim=4))
    train = ds.splits["train"]
    world = 2
    seen: list[list[int]] = []
    for rank in range(world):
        batches = list(train_batches(train, ds.spec, 16, ShardInfo(rank, world), seed=1, epoch=0))
        assert len(batches) == num_train_steps(len(train), 16, ShardInfo(rank, world))
        seen.append([int(x) for b in batches for x in b.item_rows * 10_000 + b.user_rows])
    assert not set(seen[0]) & set(seen[1])
    # a different epoch shuffles differently
    e0 = next(train_batches(train, ds.spec, 16, ShardInfo(), seed=1, epoch=0)).user_rows
    e1 = next(train_batches(train, ds.spec, 16, ShardInfo(), seed=1, epoch=1)).user_rows
    assert not torch.equal(e0, e1)

    test = ds.splits["test"]  # 60 examples; 2 ranks x 16 -> 2 steps, 4 padding rows
    weights = []
    for rank in range(world):
        batches = list(eval_batches(test, ds.spec, 16, ShardInfo(rank, world)))
        assert len(batches) == num_eval_steps(len(test), 16, ShardInfo(rank, world)) == 2
        weights.append(torch.cat([b.weights for b in batches]))
    assert float(sum(w.sum() for w in weights)) == len(test)

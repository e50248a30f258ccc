"""KJT construction, ID validation, and per-rank batching."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from _configs import dataset_configs

from torchrec_recsys.data.batch import Batch, KJTBuilder, build_kjt
from torchrec_recsys.data.dataset import build_dataset
from torchrec_recsys.data.features import SparseFeature
from torchrec_recsys.data.jagged import JaggedColumn
from torchrec_recsys.data.loader import (
    ShardInfo,
    TableBatcher,
    eval_batches,
    eval_rows,
    make_batch,
    num_eval_steps,
    num_train_steps,
    train_batches,
    train_rows,
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


def _synthetic_dataset(synthetic_paths):  # type: ignore[no-untyped-def]
    """The synthetic files as a dataset with genre/decade item and gender user features."""
    raw = read_files(
        str(synthetic_paths.interactions),
        str(synthetic_paths.items),
        str(synthetic_paths.users),
        ["genres", "decade"],
        ["gender"],
    )
    return build_dataset(raw, *dataset_configs(["genres", "decade"], ["gender"], embedding_dim=4))


def test_ranks_get_disjoint_slices_and_equal_step_counts(synthetic_paths) -> None:  # type: ignore[no-untyped-def]
    ds = _synthetic_dataset(synthetic_paths)
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


def _same_batch(a: Batch, b: Batch) -> None:
    """Equal KJT keys / values / lengths (and dtypes, per-key lengths, stride) and tensors."""
    ka, kb = a.sparse_features, b.sparse_features
    assert ka.keys() == kb.keys()
    assert torch.equal(ka.values(), kb.values()) and ka.values().dtype == kb.values().dtype
    assert torch.equal(ka.lengths(), kb.lengths()) and ka.lengths().dtype == kb.lengths().dtype
    assert ka.length_per_key() == kb.length_per_key() and ka.stride() == kb.stride()
    for name in ("dense_features", "labels", "weights", "user_rows", "item_rows"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_kjt_builder_matches_build_kjt_for_any_mix_of_keys() -> None:
    """Single-valued and multi-valued keys interleaved (runs of each), empty rows and an
    all-empty key: the builder's KJT equals the per-key construction, in any row order."""
    columns = {
        "a": JaggedColumn.from_lists([[1], [2], [3], [4]]),  # single-valued
        "b": JaggedColumn.from_lists([[5], [6], [7], [0]]),  # single-valued
        "c": JaggedColumn.from_lists([[1, 2], [], [3], [4, 5, 6]]),
        "d": JaggedColumn.from_lists([[], [], [], []]),  # every row empty
        "e": JaggedColumn.from_lists([[9], [8], [7], [6]]),  # single-valued after multi
        "f": JaggedColumn.from_lists([[1], [], [2], [3]]),  # at most one: multi-valued
    }
    features = [_feature(name, 10) for name in columns]
    builder = KJTBuilder(columns, features)
    assert [single for single, _, _ in builder.runs] == [True, False, True, False]
    for rows in ([0, 1, 2, 3], [3, 1], [2, 2, 0], [1]):
        index = torch.tensor(rows)
        old, new = build_kjt(columns, index, features), builder(index)
        assert old.keys() == new.keys()
        assert torch.equal(old.values(), new.values()) and torch.equal(old.lengths(), new.lengths())
        assert old.lengths().dtype == new.lengths().dtype == torch.int32
        assert old.length_per_key() == new.length_per_key()


def test_kjt_builder_checks_every_id_once_up_front() -> None:
    columns = {"user_id": JaggedColumn.from_lists([[1], [20]])}
    with pytest.raises(DataError, match="feature 'user_id' has ID 20 outside its table"):
        KJTBuilder(columns, [_feature("user_id", 20)])
    with pytest.raises(DataError, match="feature 'item_id' has no data column"):
        KJTBuilder(columns, [_feature("item_id", 20)])


def test_table_batches_equal_the_per_batch_construction(synthetic_paths) -> None:  # type: ignore[no-untyped-def]
    """train_batches / eval_batches (one TableBatcher per table) give exactly the batches
    make_batch gives for the same rows: same KJT keys, values, lengths, same labels."""
    ds = _synthetic_dataset(synthetic_paths)
    train, shard = ds.splits["train"], ShardInfo()
    rows = list(train_rows(len(train), 16, shard, seed=1, epoch=0))
    batches = list(train_batches(train, ds.spec, 16, shard, seed=1, epoch=0))
    assert len(batches) == len(rows)
    for index, batch in zip(rows, batches, strict=True):
        _same_batch(make_batch(train, ds.spec, index, torch.ones(16)), batch)
    test = ds.splits["test"]
    expected = [
        make_batch(test, ds.spec, index, weights)
        for index, weights in eval_rows(len(test), 16, shard)
    ]
    for old, new in zip(expected, eval_batches(test, ds.spec, 16, shard), strict=True):
        _same_batch(old, new)


def test_table_batcher_checks_the_table_before_the_first_batch(synthetic_paths) -> None:  # type: ignore[no-untyped-def]
    ds = _synthetic_dataset(synthetic_paths)
    train = ds.splits["train"]
    dense = train.dense.clone()
    dense[-1, 0] = float("nan")
    broken = dataclasses.replace(train, dense=dense)
    with pytest.raises(DataError, match="has 1 NaN or infinite value\\(s\\) in the table"):
        TableBatcher(broken, ds.spec)

"""Encoding: temporal split, vocabularies with OOV, history without leakage, FeatureSpec."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from _configs import dataset_configs

from torchrec_recsys.data.dataset import ItemTokens, RecDataset, build_dataset
from torchrec_recsys.data.readers import RawData
from torchrec_recsys.data.splits import TEST, TRAIN, VAL, leave_last_out, temporal_order
from torchrec_recsys.data.vocab import OOV_INDEX, Vocabulary
from torchrec_recsys.errors import DataError


def _raw() -> RawData:
    # user a: items 1..5 at t=10..50; user b: items 2,6 (too few to split -> all train)
    inter = pd.DataFrame(
        {
            "user_id": ["a"] * 5 + ["b"] * 2,
            "item_id": ["1", "2", "3", "4", "5", "2", "6"],
            "rating": [5.0, 1.0, 4.0, 2.0, 5.0, 4.0, 3.0],
            "timestamp": [30.0, 10.0, 20.0, 50.0, 40.0, 5.0, 6.0],
        }
    )
    items = pd.DataFrame(
        {
            "item_id": ["1", "2", "3", "4", "5", "6", "7"],
            "title": list("abcdefg"),
            "genres": ["x|y", "y", "", "z", "x", "y|z", "x"],
        }
    )
    users = pd.DataFrame({"user_id": ["a", "b"], "gender": ["F", "M"]})
    return RawData(inter, items, users, "toy")


def _build(raw: RawData, tokens: ItemTokens | None = None, **kw: object) -> RecDataset:
    base: dict[str, object] = dict(
        item_categorical_columns=["genres"],
        user_categorical_columns=["gender"],
        history_length=2,
        embedding_dim=4,
    )
    return build_dataset(raw, *dataset_configs(**{**base, **kw}), tokens)  # type: ignore[arg-type]


def test_leave_last_out_is_temporal() -> None:
    ordered = temporal_order(_raw().interactions)
    split = leave_last_out(ordered, val_per_user=1, test_per_user=1)
    a = ordered["user_id"] == "a"
    # user a ordered by time: 2(t10), 3(t20), 1(t30), 5(t40), 4(t50)
    assert list(ordered["item_id"][a]) == ["2", "3", "1", "5", "4"]
    assert list(split[a.to_numpy()]) == [TRAIN, TRAIN, TRAIN, VAL, TEST]
    assert set(split[~a.to_numpy()]) == {TRAIN}  # b has 2 <= 1 + 1 interactions


def test_vocabulary_reserves_oov() -> None:
    vocab = Vocabulary("v", ["p", "q", "p"])
    assert vocab.size == 3
    assert list(vocab.encode(["q", "unknown", "p"])) == [2, OOV_INDEX, 1]


def test_dataset_splits_history_and_oov() -> None:
    ds = _build(_raw())
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 5, "val": 1, "test": 1}
    # items 4 (test) and 5 (val) never appear in train -> their item_id is OOV
    item_vocab = ds.vocabs["item_id"]
    assert "4" not in item_vocab and "5" not in item_vocab
    test = ds.splits["test"]
    assert test.sparse["item_id"].values.tolist() == [OOV_INDEX]
    # the test example's history is the 2 items right before it in time: 1 (t30), 5 (t40)
    expected = item_vocab.encode(["1"]).tolist() + [OOV_INDEX]
    assert test.sparse["user_history"].values.tolist() == expected
    # the first training interaction of a user has an empty history
    train = ds.splits["train"]
    first_a = int(torch.nonzero(train.item_rows == 1)[0])  # item "2" row 1, user a at t10
    assert train.user_rows[first_a] == ds.user_ids.index("a")
    assert int(train.sparse["user_history"].lengths[first_a]) == 0
    # labels: rating >= 4
    assert test.labels.tolist() == [0.0]  # item 4 rated 2


def test_history_never_contains_future_items() -> None:
    ds = _build(_raw(), history_length=10)
    item_vocab = ds.vocabs["item_id"]
    raw = temporal_order(_raw().interactions)
    time_of = {(u, i): t for u, i, t in zip(raw.user_id, raw.item_id, raw.timestamp, strict=True)}
    for split in ds.splits.values():
        hist = split.sparse["user_history"]
        for row in range(len(split)):
            user = ds.user_ids[int(split.user_rows[row])]
            item = ds.items.item_ids[int(split.item_rows[row])]
            now = time_of[(user, item)]
            start, end = int(hist.offsets[row]), int(hist.offsets[row + 1])
            earlier = {
                item_vocab.encode([i])[0] for (u, i), t in time_of.items() if u == user and t < now
            }
            assert set(hist.values[start:end].tolist()) <= earlier


def test_feature_spec_is_derived_from_data() -> None:
    ds = _build(_raw())
    spec = ds.spec
    assert spec.sparse_names() == [
        "user_id",
        "user_gender",
        "item_id",
        "item_genres",
        "user_history",
    ]
    assert spec.feature("user_history").table == spec.feature("item_id").table == "t_item_id"
    assert spec.feature("item_genres").num_embeddings == 4  # x, y, z + OOV
    configs = {c.name: c for c in spec.embedding_bag_configs()}
    assert configs["t_item_id"].feature_names == ["item_id", "user_history"]
    assert spec.sparse_names("user") == ["user_id", "user_gender", "user_history"]
    # the catalogue keeps never-interacted item 7 with its genre
    assert ds.items.item_ids[-1] == "7"
    assert (
        ds.items.sparse["item_genres"].values[-1].item()
        == ds.vocabs["item_genres"].encode(["x"])[0]
    )


def test_unknown_item_in_interactions_is_an_error() -> None:
    raw = _raw()
    raw.interactions.loc[0, "item_id"] = "999"
    with pytest.raises(DataError, match="1 interaction\\(s\\) reference item ids missing.*'999'"):
        _build(raw)


def test_missing_configured_column_is_an_error() -> None:
    expected = r"lacks column\(s\) 'year' named by data.item_categorical_columns"
    with pytest.raises(DataError, match=expected):
        _build(_raw(), item_categorical_columns=["year"])


def test_random_split_is_seeded_and_sized() -> None:
    from torchrec_recsys.data.splits import random_split

    first = random_split(10_000, val_fraction=0.1, test_fraction=0.2, seed=3)
    assert (first == random_split(10_000, 0.1, 0.2, seed=3)).all()
    assert not (first == random_split(10_000, 0.1, 0.2, seed=4)).all()
    assert abs((first == TEST).mean() - 0.2) < 0.02 and abs((first == VAL).mean() - 0.1) < 0.02


def test_cold_items_have_no_training_interactions(synthetic_paths) -> None:  # type: ignore[no-untyped-def]
    from torchrec_recsys.data.readers import read_files

    raw = read_files(
        str(synthetic_paths.interactions),
        str(synthetic_paths.items),
        str(synthetic_paths.users),
        ["genres"],
        [],
    )
    ds = build_dataset(raw, *dataset_configs(["genres"], [], cold_item_fraction=0.3, split_seed=1))
    cold = ds.items.cold
    assert 0 < int(cold.sum()) < len(cold)
    assert not cold[ds.splits["train"].item_rows].any()
    assert int(ds.items.train_counts[cold].sum()) == 0
    # cold items still reach the test split, with their item_id out of vocabulary
    test = ds.splits["test"]
    cold_test = cold[test.item_rows]
    assert cold_test.any()
    assert (test.sparse["item_id"].values[cold_test] == OOV_INDEX).all()


def test_item_token_features_share_tables_with_history() -> None:
    import numpy as np

    tokens = np.array([1, 2, 1, 3, 2, 3, 1])  # one token per catalogue row (7 items)
    ds = _build(_raw(), ItemTokens({"sid_l1": (tokens, 4)}))
    spec = ds.spec
    assert spec.feature("item_sid_l1").table == spec.feature("user_history_sid_l1").table
    test = ds.splits["test"]
    assert test.sparse["item_sid_l1"].values.tolist() == [int(tokens[test.item_rows[0]])]
    # history tokens are the tokens of the history items (items 1 and 5 -> rows 0 and 4)
    assert test.sparse["user_history_sid_l1"].values.tolist() == [1, 2]

"""Bad inputs of the sequence models: each a one-line error naming the value."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from _sequence_data import chain_split, item_id_features

from torchrec_recsys.app.builders import check_cold_items_have_text, check_sid_table_shape
from torchrec_recsys.config import load_config
from torchrec_recsys.data.sequences import make_sequence_batch
from torchrec_recsys.errors import ConfigError, DataError
from torchrec_recsys.models.sasrec import SASRec
from torchrec_recsys.semantic_ids.store import SIDTable
from torchrec_recsys.semantic_ids.tokenizer import build_tokenizer


def _table(codes: list[list[int]], sizes: list[int]) -> SIDTable:
    ids = [f"i{k}" for k in range(len(codes))]
    return SIDTable(ids, np.array(codes), sizes, np.zeros((1, max(sizes), 2), np.float32))


def test_sid_table_must_cover_the_catalogue() -> None:
    table = _table([[0, 1, 0], [1, 0, 0]], [2, 2, 1])
    with pytest.raises(DataError, match=r"does not cover the catalogue: item 'x9' and 1 other"):
        build_tokenizer(table, ["i0", "x9", "i1", "x10"])


def test_duplicate_tuples_without_collision_level() -> None:
    table = _table([[0, 1], [1, 0], [0, 1]], [2, 2])
    with pytest.raises(DataError, match=r"SID tuple \(0, 1\) is shared by items 'i0' and 'i2'"):
        build_tokenizer(table, ["i0", "i1", "i2"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--sequence.beam_width=5"], r"sequence.beam_width = 5 is smaller than K = .* 10"),
        (
            ["--data.history_length=80"],
            r"data.history_length = 80 is longer than the model's context sequence.max_history",
        ),
        (["--sequence.heads=5"], r"sequence.heads = 5 must divide features.embedding_dim"),
    ],
)
def test_config_errors_name_the_value(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("configs/ml100k_generative.toml", overrides)


def test_history_longer_than_the_context_is_refused() -> None:
    features = item_id_features(10, 8)
    model = SASRec(features.item_feature, 10, 3, 1, 2, 16, 0.0, "cpu", "cpu")
    split = chain_split(4, 10, 6, seed=0)
    batch = make_sequence_batch(split, features, torch.arange(4), torch.ones(4))
    with pytest.raises(
        DataError, match=r"history of \d+ tokens is longer than the model's context of 3"
    ):
        model(batch.sparse_features)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--sequence.cold_share=1.5"], r"sequence.cold_share must be in \[0, 1\], got 1.5"),
        (["--sequence.cold_share=-0.2"], r"sequence.cold_share must be in \[0, 1\], got -0.2"),
        (
            ["--sequence.generative_input=bag"],
            r"sequence.generative_input = 'bag' is not one of tokens, summed",
        ),
    ],
)
def test_generative_keys_out_of_range_are_refused(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("configs/ml100k_generative.toml", overrides)


def test_sid_table_shape_must_match_the_config() -> None:
    table = _table([[0, 1, 0], [1, 0, 0]], [2, 2, 1])  # 2 quantizer levels + collision
    check_sid_table_shape(table, levels=2, codebook_size=2)  # agrees: no error
    with pytest.raises(DataError, match=r"2 quantizer level\(s\) of sizes \[2, 2\].*levels = 3"):
        check_sid_table_shape(table, levels=3, codebook_size=64)
    wide = _table([[0, 5, 0], [1, 0, 0]], [2, 8, 1])
    with pytest.raises(DataError, match=r"sizes \[2, 8\].*codebook_size = 4"):
        check_sid_table_shape(wide, levels=2, codebook_size=4)


def test_cold_items_need_text() -> None:
    items = SimpleNamespace(
        train_counts=torch.tensor([3, 0, 0, 1]),
        texts=["Toy Story", "", " ", ""],
        item_ids=["a", "b", "c", "d"],
    )
    data = SimpleNamespace(items=items)
    with pytest.raises(DataError, match=r"item 'b' and 1 other\(s\) has no training .* no text"):
        check_cold_items_have_text(data, ["title"])  # type: ignore[arg-type]
    items.texts = ["Toy Story", "Heat", "Fargo", ""]  # the warm item 'd' may lack text
    check_cold_items_have_text(data, ["title"])  # type: ignore[arg-type]

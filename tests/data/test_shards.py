"""Preprocess -> Parquet shards -> streamed batches; mismatched or truncated shards fail.

Criteo-format shards (one ID per feature), and shards of an in-memory source (the tiny
synthetic files source: user history, genres ... as list columns)."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest
import torch
from conftest import tiny_overrides

from torchrec_recsys.app.builders import build_data
from torchrec_recsys.config import CriteoConfig, load_config
from torchrec_recsys.data.criteo import build_criteo_dataset, write_synthetic_criteo
from torchrec_recsys.data.dataset import RecDataset
from torchrec_recsys.data.loader import ShardInfo, eval_batches, train_batches
from torchrec_recsys.data.shards import (
    ShardSource,
    expected_vocab_hash,
    preprocess_criteo,
    preprocess_examples,
    worker_batches,
)
from torchrec_recsys.data.synthetic import SyntheticPaths
from torchrec_recsys.data.vocab import Vocabulary
from torchrec_recsys.errors import DataError


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> CriteoConfig:
    path = write_synthetic_criteo(tmp_path_factory.mktemp("c") / "d.tsv", 1000, cardinality=300)
    return CriteoConfig(
        path=str(path), hash_rows=500, chunk_rows=256, val_fraction=0.1, test_fraction=0.15
    )


@pytest.fixture(scope="module")
def shard_dir(settings: CriteoConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    manifest = preprocess_criteo(settings, out, rows_per_shard=300, progress=False)
    splits = manifest["splits"]
    assert [s["rows"] for s in splits["train"]["shards"]] == [300, 300, 150]
    assert (splits["val"]["rows"], splits["test"]["rows"]) == (100, 150)
    return out


def _cat(batches: list, field: str) -> torch.Tensor:
    return torch.cat([getattr(b, field) for b in batches])


def test_streamed_splits_equal_the_in_memory_ones(settings: CriteoConfig, shard_dir: Path) -> None:
    memory = build_criteo_dataset(settings, embedding_dim=4)
    source = ShardSource(shard_dir, 4, expected_hash=expected_vocab_hash(settings))
    train = list(source.train_batches(128, ShardInfo(), seed=0, epoch=0))
    assert len(train) == 750 // 128  # whole batches only
    rows = 128 * len(train)
    assert torch.equal(_cat(train, "labels"), memory.splits["train"].labels[:rows])
    assert torch.equal(_cat(train, "dense_features"), memory.splits["train"].dense[:rows])
    first = train[1].sparse_features.to_dict()["cat_3"].values()
    assert torch.equal(first, memory.splits["train"].sparse["cat_3"].values[128:256])
    for split in ("val", "test"):
        batches = list(source.eval_batches(split, 64, ShardInfo()))
        weights = _cat(batches, "weights")
        real = weights > 0
        assert int(real.sum()) == len(memory.splits[split])
        assert torch.equal(_cat(batches, "labels")[real], memory.splits[split].labels)


def test_ranks_get_equal_steps_and_every_eval_example_once(shard_dir: Path) -> None:
    source = ShardSource(shard_dir, 4, workers=2)
    train, val = [], []
    for rank in range(3):
        shard = ShardInfo(rank, 3)
        train.append(list(source.train_batches(64, shard, seed=0, epoch=0)))
        val.append(list(source.eval_batches("val", 16, shard)))
    assert [len(t) for t in train] == [750 // (64 * 3)] * 3
    assert len({len(v) for v in val}) == 1  # same number of eval steps on every rank
    assert sum(int(_cat(v, "weights").sum()) for v in val) == 100


def test_worker_batches_continue_the_round_robin_after_a_resume() -> None:
    """The DataLoader's round-robin over workers, simulated: a resume after k batches yields
    exactly the rest of the uninterrupted order, for any number of workers."""

    def order(steps: int, first: int, workers: int) -> list[int]:
        runs = [list(range(*worker_batches(steps, first, workers, s))) for s in range(workers)]
        out = []
        for rnd in itertools.zip_longest(*runs):
            out += [b for b in rnd if b is not None]
        return out

    for steps, workers in [(10, 1), (10, 3), (7, 4), (3, 5)]:
        full = order(steps, 0, workers)
        assert sorted(full) == list(range(steps))
        for first in range(steps + 1):
            assert order(steps, first, workers) == full[first:]


def test_resumed_stream_skips_exactly_the_consumed_batches(shard_dir: Path) -> None:
    source = ShardSource(shard_dir, 4, workers=2)
    full = list(source.train_batches(50, ShardInfo(), seed=0, epoch=0))
    rest = list(source.train_batches(50, ShardInfo(), seed=0, epoch=0, start_sample=5 * 50))
    assert len(rest) == len(full) - 5
    assert torch.equal(_cat(rest, "dense_features"), _cat(full[5:], "dense_features"))
    with pytest.raises(DataError, match="not a multiple of the global batch"):
        source.train_batches(50, ShardInfo(), seed=0, epoch=0, start_sample=70)


def test_shards_from_another_preprocess_fail(settings: CriteoConfig, shard_dir: Path) -> None:
    other = CriteoConfig(path=settings.path, hash_rows=999)
    with pytest.raises(DataError, match="made by another preprocess"):
        ShardSource(shard_dir, 4, expected_hash=expected_vocab_hash(other))


def _copy(shard_dir: Path, to: Path) -> Path:
    to.mkdir()
    for f in shard_dir.iterdir():
        (to / f.name).write_bytes(f.read_bytes())
    return to


def test_truncated_shard_fails_before_any_step(shard_dir: Path, tmp_path: Path) -> None:
    broken = _copy(shard_dir, tmp_path / "broken")
    victim = broken / "train-00001.parquet"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(DataError, match="train-00001.parquet.*cannot be read"):
        ShardSource(broken, 4)


def test_shard_replaced_by_a_shorter_one_fails(shard_dir: Path, tmp_path: Path) -> None:
    broken = _copy(shard_dir, tmp_path / "short")
    (broken / "val-00000.parquet").write_bytes((shard_dir / "test-00000.parquet").read_bytes())
    with pytest.raises(DataError, match="val-00000.parquet' holds 150 rows; the manifest says 100"):
        ShardSource(broken, 4)


# --- shards of an in-memory source (multi-valued features in list columns) ---


@pytest.fixture(scope="module")
def tiny_data(synthetic_paths: SyntheticPaths, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    cfg = load_config(None, tiny_overrides(synthetic_paths, tmp_path_factory.mktemp("runs")))
    return build_data(cfg)


@pytest.fixture(scope="module")
def example_shards(tiny_data: RecDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("example_shards")
    manifest = preprocess_examples(tiny_data, out, rows_per_shard=500, seed=3, progress=False)
    sizes = {split: len(tiny_data.splits[split]) for split in ("train", "val", "test")}
    assert {split: manifest["splits"][split]["rows"] for split in sizes} == sizes
    assert len(manifest["splits"]["train"]["shards"]) == -(-sizes["train"] // 500)
    return out


def _same_batches(streamed: list, memory: list) -> None:
    assert len(streamed) == len(memory)
    for got, want in zip(streamed, memory, strict=True):
        real = want.weights > 0
        assert torch.equal(got.weights, want.weights)
        assert torch.equal(got.labels[real], want.labels[real])
        assert torch.equal(got.dense_features[real], want.dense_features[real])
        assert torch.equal(got.item_rows[real], want.item_rows[real])
        assert got.sparse_features.keys() == want.sparse_features.keys()
        g, w = got.sparse_features.to_dict(), want.sparse_features.to_dict()
        for key in w:
            lengths = w[key].lengths()[real]
            assert torch.equal(g[key].lengths()[real], lengths)
            assert torch.equal(
                g[key].values()[: int(lengths.sum())], w[key].values()[: int(lengths.sum())]
            )


def test_example_shards_stream_the_in_memory_batches(
    tiny_data: RecDataset, example_shards: Path
) -> None:
    """Jagged features (history, genres) come back as written; the training stream is the
    in-memory path's first epoch for the preprocess seed, evaluation the same examples."""
    source = ShardSource(example_shards, 8, workers=1)
    assert source.spec == tiny_data.spec
    assert source.dataset().vocabs["item_id"].tokens == tiny_data.vocabs["item_id"].tokens
    assert any(f.name == "user_history" for f in source.spec.sparse)
    train = tiny_data.splits["train"]
    streamed = list(source.train_batches(64, ShardInfo(), seed=0, epoch=0))
    _same_batches(streamed, list(train_batches(train, tiny_data.spec, 64, ShardInfo(), 3, 0)))
    lengths = streamed[0].sparse_features.to_dict()["user_history"].lengths()
    assert len(set(lengths.tolist())) > 1  # really jagged
    test = tiny_data.splits["test"]
    _same_batches(
        list(source.eval_batches("test", 32, ShardInfo())),
        list(eval_batches(test, tiny_data.spec, 32, ShardInfo())),
    )


def test_example_shards_fingerprint_the_vocabularies_and_order(
    tiny_data: RecDataset, example_shards: Path, tmp_path: Path
) -> None:
    written = ShardSource(example_shards, 8).vocab_hash
    other_seed = preprocess_examples(tiny_data, tmp_path / "a", 500, seed=4, progress=False)
    assert other_seed["vocab_hash"] != written
    vocabs = dict(tiny_data.vocabs)
    vocabs["item_genres"] = Vocabulary("item_genres", ["x", *vocabs["item_genres"].tokens[1:]])
    renamed = dataclasses.replace(tiny_data, vocabs=vocabs)
    assert preprocess_examples(renamed, tmp_path / "b", 500, 3, False)["vocab_hash"] != written
    with pytest.raises(DataError, match="made by another preprocess"):
        ShardSource(tmp_path / "a", 8, expected_hash=written)

"""Preprocess -> Parquet shards -> streaming batches; mismatched or truncated shards fail."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from torchrec_recsys.config import CriteoConfig
from torchrec_recsys.data.criteo import build_criteo_dataset, write_synthetic_criteo
from torchrec_recsys.data.shards import (
    ShardedExamples,
    expected_vocab_hash,
    preprocess_criteo,
    stream_batches,
)
from torchrec_recsys.errors import DataError


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> CriteoConfig:
    path = write_synthetic_criteo(tmp_path_factory.mktemp("c") / "d.tsv", 1000, cardinality=300)
    return CriteoConfig(path=str(path), hash_rows=500, chunk_rows=256)


@pytest.fixture(scope="module")
def shard_dir(settings: CriteoConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    manifest = preprocess_criteo(settings, out, rows_per_shard=300, progress=False)
    assert [s["rows"] for s in manifest["shards"]] == [300, 300, 300, 100]
    return out


def test_streamed_examples_equal_the_in_memory_ones(
    settings: CriteoConfig, shard_dir: Path
) -> None:
    memory = build_criteo_dataset(
        CriteoConfig(path=settings.path, hash_rows=500, val_fraction=0.0, test_fraction=0.001),
        embedding_dim=4,
    )
    dataset = ShardedExamples(shard_dir, 128, expected_hash=expected_vocab_hash(settings))
    batches = list(stream_batches(dataset))
    labels = torch.cat([b.labels for b in batches])
    dense = torch.cat([b.dense_features for b in batches])
    assert len(labels) == 1000
    train = memory.splits["train"]  # the first 999 rows
    assert torch.equal(labels[:999], train.labels)
    assert torch.equal(dense[:999], train.dense)
    first = batches[0].sparse_features.to_dict()["cat_3"].values()
    assert torch.equal(first, train.sparse["cat_3"].values[:128])


def test_ranks_and_workers_split_the_shards(shard_dir: Path) -> None:
    counts = []
    for rank in range(2):
        dataset = ShardedExamples(shard_dir, 100, rank=rank, world_size=2)
        counts.append(sum(len(b.labels) for b in stream_batches(dataset, num_workers=2)))
    assert counts == [600, 400]


def test_shards_from_another_preprocess_fail(settings: CriteoConfig, shard_dir: Path) -> None:
    other = CriteoConfig(path=settings.path, hash_rows=999)
    with pytest.raises(DataError, match="made by another preprocess"):
        ShardedExamples(shard_dir, 128, expected_hash=expected_vocab_hash(other))


def test_truncated_shard_fails_and_never_shortens_the_epoch(
    shard_dir: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in shard_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    victim = broken / "part-00001.parquet"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(DataError, match="part-00001.parquet"):
        list(stream_batches(ShardedExamples(broken, 128)))

"""Parquet shards of encoded Criteo-format examples, and a streaming dataset over them.

``preprocess`` turns a Criteo TSV into a folder, once::

    shards/
      manifest.json        format, vocab_hash, table_rows, [{file, rows}] per shard, total rows
      part-00000.parquet   label, int_0..int_12 (float32, log1p), cat_0..cat_25 (int64 table rows)
      part-00001.parquet   ...

:class:`ShardedExamples` (a ``torch.utils.data.IterableDataset``) streams them: each rank, and
each DataLoader worker within it, reads its own shards (round-robin) in record batches of
``batch_size`` rows, so memory holds a few batches, never the file. Memory does not grow with
the number of examples.

Bad input is an error, never a shorter epoch:

* a manifest whose ``vocab_hash`` differs from the run's (shards from another preprocess);
* a shard that cannot be opened (truncated mid-file) or holds fewer rows than the manifest says.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from torchrec_recsys.config import CriteoConfig
from torchrec_recsys.data.batch import Batch
from torchrec_recsys.data.criteo import (
    DENSE_NAMES,
    NUM_SPARSE,
    SPARSE_NAMES,
    FrequencyVocab,
    criteo_spec,
    hash_rows,
    one_hot_columns,
    read_criteo,
)
from torchrec_recsys.data.dataset import ExampleTable
from torchrec_recsys.data.features import FeatureSpec
from torchrec_recsys.data.loader import make_batch
from torchrec_recsys.errors import DataError
from torchrec_recsys.files import atomic_write_text, publish_file

MANIFEST = "manifest.json"
FORMAT = "torchrec_recsys-criteo-shards-v1"


def vocab_hash(table_rows: Sequence[int], scheme: dict[str, Any]) -> str:
    """Fingerprint of how IDs were mapped to rows (scheme + table sizes + kept values)."""
    text = json.dumps({"table_rows": list(map(int, table_rows)), **scheme}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_shards(
    chunks: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]],
    out_dir: str | Path,
    table_rows: Sequence[int],
    fingerprint: str,
    rows_per_shard: int,
) -> dict[str, Any]:
    """Write ``(labels [N], dense [N, 13], rows [N, 26])`` chunks as Parquet shards + manifest.

    Each shard is written under a temporary name and renamed when complete; the manifest is
    written last (atomically), so a folder with a manifest is a finished preprocess.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, Any]] = []
    writer: pq.ParquetWriter | None = None
    in_shard = 0

    def close() -> None:
        nonlocal writer
        if writer is not None:
            writer.close()
            name = f"part-{len(shards):05d}.parquet"
            publish_file(out / f"{name}.tmp", out / name)
            shards.append({"file": name, "rows": in_shard})
            writer = None

    for labels, dense, rows in chunks:
        begin = 0
        while begin < len(labels):
            if writer is None:
                in_shard = 0
                writer = pq.ParquetWriter(
                    out / f"part-{len(shards):05d}.parquet.tmp", _schema(), compression="zstd"
                )
            take = min(rows_per_shard - in_shard, len(labels) - begin)
            end = begin + take
            columns = {"label": labels[begin:end].astype(np.float32)}
            columns |= {
                n: dense[begin:end, j].astype(np.float32) for j, n in enumerate(DENSE_NAMES)
            }
            columns |= {n: rows[begin:end, j].astype(np.int64) for j, n in enumerate(SPARSE_NAMES)}
            writer.write_table(pa.table(columns, schema=_schema()))
            in_shard += take
            begin = end
            if in_shard == rows_per_shard:
                close()
    close()
    manifest = {
        "format": FORMAT,
        "vocab_hash": fingerprint,
        "table_rows": list(map(int, table_rows)),
        "shards": shards,
        "total_rows": sum(s["rows"] for s in shards),
    }
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2))
    return manifest


def _schema() -> pa.Schema:
    return pa.schema(
        [("label", pa.float32())]
        + [(n, pa.float32()) for n in DENSE_NAMES]
        + [(n, pa.int64()) for n in SPARSE_NAMES]
    )


def read_manifest(shard_dir: str | Path, expected_hash: str | None = None) -> dict[str, Any]:
    """The folder's manifest, checked.

    Raises:
        DataError: no manifest, another format, or a ``vocab_hash`` other than ``expected_hash``.
    """
    path = Path(shard_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"{str(shard_dir)!r} has no {MANIFEST}: run 'preprocess' first")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise DataError(f"{str(path)!r} is not a {FORMAT} manifest")
    if expected_hash is not None and manifest["vocab_hash"] != expected_hash:
        raise DataError(
            f"shards in {str(shard_dir)!r} were made by another preprocess (vocabulary hash "
            f"{manifest['vocab_hash']}, this run expects {expected_hash}): preprocess again"
        )
    return manifest


class ShardedExamples(IterableDataset):
    """Batches of this rank's shards, streamed (one ``Batch`` per item; use batch_size=None).

    Shard ``s`` goes to rank ``s % world_size``; within a rank, to DataLoader worker
    ``(s // world_size) % num_workers``. Every batch has ``batch_size`` rows except the last
    of each shard.
    """

    def __init__(
        self,
        shard_dir: str | Path,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        expected_hash: str | None = None,
        embedding_dim: int = 16,
    ) -> None:
        super().__init__()
        self.shard_dir = Path(shard_dir)
        self.manifest = read_manifest(shard_dir, expected_hash)
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.spec: FeatureSpec = criteo_spec(self.manifest["table_rows"], embedding_dim)

    def my_shards(self) -> list[dict[str, Any]]:
        """This rank's (and this worker's) shards."""
        mine = self.manifest["shards"][self.rank :: self.world_size]
        worker = get_worker_info()
        if worker is not None:
            mine = mine[worker.id :: worker.num_workers]
        return mine

    def __iter__(self) -> Iterator[Batch]:
        for shard in self.my_shards():
            yield from self._read(shard)

    def _read(self, shard: dict[str, Any]) -> Iterator[Batch]:
        path = self.shard_dir / shard["file"]
        try:
            parquet = pq.ParquetFile(path)
        except (OSError, pa.ArrowException) as e:
            raise DataError(f"shard {str(path)!r} cannot be read (truncated?): {e}") from None
        if parquet.metadata.num_rows != shard["rows"]:
            raise DataError(
                f"shard {str(path)!r} holds {parquet.metadata.num_rows} rows; the manifest "
                f"says {shard['rows']}: it is incomplete or from another preprocess"
            )
        seen = 0
        try:
            for record in parquet.iter_batches(batch_size=self.batch_size):
                seen += record.num_rows
                yield self._batch(record)
        except (OSError, pa.ArrowException) as e:
            raise DataError(f"shard {str(path)!r} is damaged after {seen} rows: {e}") from None
        if seen != shard["rows"]:
            raise DataError(f"shard {str(path)!r} ended after {seen} of {shard['rows']} rows")

    def _batch(self, record: pa.RecordBatch) -> Batch:
        n = record.num_rows
        dense = np.stack([record.column(name).to_numpy() for name in DENSE_NAMES], axis=1)
        rows = np.stack([record.column(name).to_numpy() for name in SPARSE_NAMES], axis=1)
        table = ExampleTable(
            sparse=one_hot_columns(rows),  # [N, 26] -> 26 one-ID columns
            dense=torch.from_numpy(dense),  # [N, 13]
            labels=torch.from_numpy(record.column("label").to_numpy().copy()),  # [N]
            user_rows=torch.zeros(n, dtype=torch.int64),
            item_rows=torch.zeros(n, dtype=torch.int64),
        )
        return make_batch(table, self.spec, torch.arange(n), torch.ones(n))


def stream_batches(
    dataset: ShardedExamples, num_workers: int = 0, pin_memory: bool = False
) -> DataLoader:
    """A DataLoader over ``dataset`` (already batched); pinned memory for GPU copies."""
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
    )


def preprocess_criteo(
    settings: CriteoConfig, out_dir: str | Path, rows_per_shard: int, progress: bool = True
) -> dict[str, Any]:
    """Criteo TSV -> Parquet shards of table rows, streaming (memory ~ one chunk).

    The hashing scheme needs one pass; the frequency scheme (``min_count > 0``) a counting
    pass first. A tqdm bar follows the bytes of the file read.
    """
    path = Path(settings.path)
    if settings.min_count > 0:
        vocab = FrequencyVocab.fit(read_criteo(path, settings.chunk_rows), settings.min_count)
        table_rows = vocab.table_rows()
        scheme: dict[str, Any] = {
            "scheme": "frequency",
            "min_count": settings.min_count,
            "kept": hashlib.sha256(b"".join(k.tobytes() for k in vocab.kept)).hexdigest(),
        }
        encode = vocab.rows
    else:
        table_rows = list(settings.table_rows) or [settings.hash_rows] * NUM_SPARSE
        scheme = {"scheme": "hashing"}

        def encode(raw: np.ndarray) -> np.ndarray:
            return hash_rows(raw, table_rows)

    bar = tqdm(
        total=path.stat().st_size if path.is_file() else None,
        unit="B",
        unit_scale=True,
        desc="preprocess",
        disable=not progress,
    )

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        for chunk in read_criteo(path, settings.chunk_rows):
            bar.update(chunk.num_bytes)
            yield chunk.labels.numpy(), chunk.dense.numpy(), encode(chunk.raw_sparse)

    manifest = write_shards(
        chunks(), out_dir, table_rows, vocab_hash(table_rows, scheme), rows_per_shard
    )
    bar.close()
    return manifest


def expected_vocab_hash(settings: CriteoConfig) -> str | None:
    """The hashing scheme's fingerprint for ``settings`` (None for the frequency scheme,
    whose fingerprint depends on the data: the manifest's own is used)."""
    if settings.min_count > 0:
        return None
    table_rows = list(settings.table_rows) or [settings.hash_rows] * NUM_SPARSE
    return vocab_hash(table_rows, {"scheme": "hashing"})

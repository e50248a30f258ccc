"""Parquet shards of encoded examples, and the streaming source that trains on them.

``preprocess`` turns a Criteo TSV (or synthetic rows), or the splits of an in-memory dataset
(MovieLens, the files source: :func:`preprocess_examples`), into a folder, once::

    shards/
      manifest.json        format, vocab_hash, the FeatureSpec (no embedding dimensions),
                           per split: rows + [{file, rows}]
      vocab.json           the vocabularies (in-memory sources only)
      train-00000.parquet  label, one column per dense feature (float32), one per sparse
      ...                  feature: int64 (one ID per example, Criteo) or list<int64>
      val-00000.parquet    (jagged: user history, genres, SID tokens ...); in-memory
      test-00000.parquet   sources also _user_row, _item_row (int64)

Criteo: the last rows of the input (``data.criteo.val_fraction``, then ``test_fraction``)
are the validation and test shards, the in-memory path's splits. In-memory sources: the
training examples in the order of the in-memory path's first epoch (``train.seed``), the
validation and test examples in their order.

:class:`ShardSource` is the trainer's source over such a folder (``data.source = "shards"``).
Each split is one stream of rows (its shards in order); memory holds a few batches, never a
file. Per epoch every rank runs the same number of steps (sharded embeddings need every rank
in every collective):

* training: ``S = rows // (batch_size x world_size)`` steps; rank ``r`` reads the contiguous
  rows ``[r S B, (r + 1) S B)`` (the remainder is dropped), in file order (no shuffle, like
  the reference DLRM's day order);
* evaluation: rank ``r`` reads its ``ceil(rows / world_size)`` contiguous rows, the last batch
  padded with weight-0 rows, so every example counts once.

A rank's batches are read by a DataLoader (``data.loader_workers`` processes, pinned memory on
CUDA): worker ``w`` reads its own contiguous run of the rank's batches, and the DataLoader
hands them out round-robin, so the order depends on the world size, the batch size and the
number of workers (:meth:`ShardSource.order`; a mid-epoch resume needs the same ones). A
resume after ``k`` batches starts each worker at its share of the first ``k`` (nothing
consumed is read again).

Bad input is an error, never a shorter epoch:

* a manifest whose ``vocab_hash`` differs from the run's (shards from another preprocess);
* a shard that cannot be opened (truncated mid-file) or holds fewer rows than the manifest
  says: every shard's footer is checked when the source is opened, before any step;
* a shard that is damaged inside, when its rows are read.
"""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import multiprocessing.context
import random
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pydantic
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from torchrec_recsys.config import CriteoConfig
from torchrec_recsys.data.batch import Batch
from torchrec_recsys.data.criteo import (
    DENSE_NAMES,
    SPARSE_NAMES,
    CriteoChunk,
    FrequencyVocab,
    count_lines,
    criteo_spec,
    examples_only_dataset,
    hash_rows,
    hashing_table_rows,
    read_criteo,
    split_sizes,
)
from torchrec_recsys.data.dataset import ExampleTable, RecDataset
from torchrec_recsys.data.features import FeatureSpec
from torchrec_recsys.data.jagged import JaggedColumn
from torchrec_recsys.data.loader import ShardInfo, epoch_order, make_batch
from torchrec_recsys.data.vocab import load_vocabularies, save_vocabularies
from torchrec_recsys.errors import ConfigError, DataError
from torchrec_recsys.files import atomic_write_text, publish_file, read_json, validated
from torchrec_recsys.observability.progress import Progress

MANIFEST = "manifest.json"
VOCAB_FILE = "vocab.json"
FORMAT = "torchrec_recsys-shards-v3"
SPLITS = ("train", "val", "test")
HASHING_SCHEME: dict[str, Any] = {"scheme": "hashing"}
"""The fingerprinted description of the hashing scheme (its table rows are hashed beside)."""
LABEL, USER_ROW, ITEM_ROW = "label", "_user_row", "_item_row"
"""Column names besides the features' own."""


def vocab_hash(table_rows: Sequence[int], scheme: dict[str, Any]) -> str:
    """Fingerprint of how IDs were mapped to rows (scheme + table sizes + kept values)."""
    text = json.dumps({"table_rows": list(map(int, table_rows)), **scheme}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stored_spec(spec: FeatureSpec) -> dict[str, Any]:
    """``spec`` as the manifest stores it: without embedding dimensions (the run sets them)."""
    out = spec.to_dict()
    out["sparse"] = [{k: v for k, v in f.items() if k != "embedding_dim"} for f in out["sparse"]]
    return out


def criteo_table(labels: np.ndarray, dense: np.ndarray, rows: np.ndarray) -> pa.Table:
    """Shard rows of Criteo examples: ``labels`` [N], ``dense`` [N, 13], table rows [N, 26]
    (one int64 column per sparse feature)."""
    columns = {LABEL: labels.astype(np.float32)}
    columns |= {n: dense[:, j].astype(np.float32) for j, n in enumerate(DENSE_NAMES)}
    columns |= {n: rows[:, j].astype(np.int64) for j, n in enumerate(SPARSE_NAMES)}
    return pa.table(columns)


def examples_table(table: ExampleTable, spec: FeatureSpec) -> pa.Table:
    """Shard rows of encoded examples: one ``list<int64>`` column per sparse feature of
    ``spec`` (its jagged values), one float32 column per dense feature, the label, and the
    examples' user and catalogue rows."""
    columns: dict[str, pa.Array] = {LABEL: pa.array(table.labels.numpy())}
    for j, name in enumerate(spec.dense_names()):
        columns[name] = pa.array(table.dense[:, j].contiguous().numpy())
    for name in spec.sparse_names():
        column = table.sparse[name]
        offsets = (column.offsets - column.offsets[0]).to(torch.int32).numpy()  # [N + 1]
        values = column.values[int(column.offsets[0]) : int(column.offsets[-1])]
        columns[name] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.numpy()))
    columns[USER_ROW] = pa.array(table.user_rows.numpy())
    columns[ITEM_ROW] = pa.array(table.item_rows.numpy())
    return pa.table(columns)


class _SplitWriter:
    """Writes one split's rows as ``<split>-NNNNN.parquet`` shards of ``rows_per_shard``."""

    def __init__(self, out: Path, split: str, rows_per_shard: int) -> None:
        self.out, self.split, self.rows_per_shard = out, split, rows_per_shard
        self.shards: list[dict[str, Any]] = []
        self.writer: pq.ParquetWriter | None = None
        self.in_shard = 0

    def _name(self) -> str:
        return f"{self.split}-{len(self.shards):05d}.parquet"

    def write(self, table: pa.Table) -> None:
        begin = 0
        while begin < table.num_rows:
            if self.writer is None:
                self.in_shard = 0
                self.writer = pq.ParquetWriter(
                    self.out / f"{self._name()}.tmp", table.schema, compression="zstd"
                )
            end = begin + min(self.rows_per_shard - self.in_shard, table.num_rows - begin)
            self.writer.write_table(table.slice(begin, end - begin))
            self.in_shard += end - begin
            begin = end
            if self.in_shard == self.rows_per_shard:
                self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            name = self._name()
            publish_file(self.out / f"{name}.tmp", self.out / name)
            self.shards.append({"file": name, "rows": self.in_shard})
            self.writer = None

    def entry(self) -> dict[str, Any]:
        return {"rows": sum(s["rows"] for s in self.shards), "shards": self.shards}


def write_shards(
    tables: Iterable[pa.Table],
    out_dir: str | Path,
    spec: FeatureSpec,
    fingerprint: str,
    rows_per_shard: int,
    sizes: dict[str, int],
) -> dict[str, Any]:
    """Write consecutive example tables (:func:`criteo_table`, :func:`examples_table`) as
    Parquet shards + manifest, split by position: the first ``sizes["train"]`` rows are
    training shards, the next ``sizes["val"]`` validation, the last ``sizes["test"]`` test.

    Each shard is written under a temporary name and renamed when complete; the manifest is
    written last (atomically), so a folder with a manifest is a finished preprocess.

    Raises:
        DataError: the tables hold another number of rows than ``sizes`` adds up to.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    writers = {split: _SplitWriter(out, split, rows_per_shard) for split in SPLITS}
    bounds, begin = {}, 0
    for split in SPLITS:
        bounds[split] = (begin, begin + sizes[split])
        begin += sizes[split]
    position = 0
    for table in tables:
        for split, (low, high) in bounds.items():
            a, b = max(low - position, 0), min(high - position, table.num_rows)
            if a < b:
                writers[split].write(table.slice(a, b - a))
        position += table.num_rows
    if position != begin:
        raise DataError(
            f"preprocess read {position} examples but expected {begin} (the input changed "
            f"while it was read?)"
        )
    for writer in writers.values():
        writer.close()
    manifest = {
        "format": FORMAT,
        "vocab_hash": fingerprint,
        "spec": stored_spec(spec),
        "splits": {split: writer.entry() for split, writer in writers.items()},
        "total_rows": position,
    }
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2))
    return manifest


_Rows = Annotated[int, pydantic.Field(ge=0)]


class _Shard(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    file: Annotated[str, pydantic.StringConstraints(pattern=r"^(train|val|test)-\d{5,}\.parquet$")]
    """A file name in the folder (no path: nothing outside the folder is read)."""
    rows: _Rows


class _Split(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    rows: _Rows
    shards: list[_Shard]

    @pydantic.model_validator(mode="after")
    def _sum(self) -> _Split:
        total = sum(s.rows for s in self.shards)
        if total != self.rows:
            raise ValueError(f"rows is {self.rows} but its shards hold {total}")
        return self


class _Splits(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    train: _Split
    val: _Split
    test: _Split


class _ShardManifest(pydantic.BaseModel):
    """The shape of a shard folder's ``manifest.json`` (:func:`write_shards`)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    format: Literal["torchrec_recsys-shards-v3"]
    vocab_hash: Annotated[str, pydantic.StringConstraints(pattern=r"^[0-9a-f]{16}$")]
    spec: dict[str, Any]
    splits: _Splits
    total_rows: _Rows

    @pydantic.model_validator(mode="after")
    def _total(self) -> _ShardManifest:
        total = self.splits.train.rows + self.splits.val.rows + self.splits.test.rows
        if total != self.total_rows:
            raise ValueError(f"total_rows is {self.total_rows} but the splits hold {total}")
        for split in SPLITS:
            for shard in getattr(self.splits, split).shards:
                if not shard.file.startswith(f"{split}-"):
                    raise ValueError(f"split {split!r} lists shard {shard.file!r}")
        return self


def read_manifest(shard_dir: str | Path, expected_hash: str | None = None) -> dict[str, Any]:
    """The folder's manifest, its shape checked (shard files are plain names in the folder).

    Raises:
        DataError: no manifest, another format, a wrong shape (one line naming the field), or
            a ``vocab_hash`` other than ``expected_hash``.
    """
    path = Path(shard_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"{str(shard_dir)!r} has no {MANIFEST}: run 'preprocess' first")
    manifest = read_json(path, "shard manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise DataError(
            f"{str(path)!r} is not a {FORMAT} manifest (format {found!r}): run 'preprocess' again"
        )
    where = f"shard manifest {str(path)!r}"
    validated(_ShardManifest, manifest, where)
    try:
        FeatureSpec.from_dict(manifest["spec"], embedding_dim=1)
    except (KeyError, TypeError, ValueError, AttributeError, ConfigError) as exc:
        raise DataError(f"{where}: field 'spec' is not a FeatureSpec ({exc})") from None
    if expected_hash is not None and manifest["vocab_hash"] != expected_hash:
        raise DataError(
            f"shards in {str(shard_dir)!r} were made by another preprocess (vocabulary hash "
            f"{manifest['vocab_hash']}, this run expects {expected_hash}): preprocess again"
        )
    return manifest


def _open(path: Path, rows: int) -> pq.ParquetFile:
    """The shard's Parquet file, its row count checked against the manifest's ``rows``."""
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"shard {str(path)!r} cannot be read (truncated?): {e}") from None
    if parquet.metadata.num_rows != rows:
        raise DataError(
            f"shard {str(path)!r} holds {parquet.metadata.num_rows} rows; the manifest says "
            f"{rows}: it is incomplete or from another preprocess"
        )
    return parquet


def check_shards(shard_dir: str | Path, manifest: dict[str, Any]) -> None:
    """Open every shard's footer and compare its rows with the manifest (cheap: no data read).

    Raises:
        DataError: a missing, truncated or short shard, named.
    """
    for entry in manifest["splits"].values():
        for shard in entry["shards"]:
            _open(Path(shard_dir) / shard["file"], shard["rows"])


def _shard_rows(path: Path, rows: int, low: int, high: int, batch_size: int) -> Iterator[pa.Table]:
    """Rows ``[low, high)`` of one shard, in pieces of at most ``batch_size`` rows; only the
    row groups that hold them are read."""
    parquet = _open(path, rows)
    groups, first, at = [], None, 0
    for g in range(parquet.metadata.num_row_groups):
        n = parquet.metadata.row_group(g).num_rows
        if at < high and at + n > low:
            groups.append(g)
            first = at if first is None else first
        at += n
    position = first or 0
    try:
        for record in parquet.iter_batches(batch_size=batch_size, row_groups=groups):
            a, b = max(low - position, 0), min(high - position, record.num_rows)
            position += record.num_rows
            if a < b:
                yield pa.Table.from_batches([record.slice(a, b - a)])
            if position >= high:
                return
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"shard {str(path)!r} is damaged after row {position}: {e}") from None
    raise DataError(f"shard {str(path)!r} ended after {position} of {rows} rows")


def read_rows(
    shard_dir: Path, shards: Sequence[dict[str, Any]], start: int, stop: int, batch_size: int
) -> Iterator[pa.Table]:
    """Rows ``[start, stop)`` of the concatenation of ``shards``, as tables of
    ``batch_size`` rows (the last one may be shorter)."""
    pending: list[pa.Table] = []
    pending_rows, offset = 0, 0
    for shard in shards:
        low, high = max(start - offset, 0), min(stop - offset, shard["rows"])
        offset += shard["rows"]
        if low >= high:
            continue
        path = shard_dir / shard["file"]
        for piece in _shard_rows(path, shard["rows"], low, high, batch_size):
            pending.append(piece)
            pending_rows += piece.num_rows
            if pending_rows >= batch_size:
                table = pa.concat_tables(pending)
                yield table.slice(0, batch_size)
                rest = table.slice(batch_size)
                pending, pending_rows = ([rest] if rest.num_rows else []), rest.num_rows
        if offset >= stop:
            break
    if pending_rows:
        yield pa.concat_tables(pending)


def worker_batches(steps: int, first: int, num_workers: int, slot: int) -> tuple[int, int]:
    """Batch indices ``[begin, end)`` that DataLoader worker ``slot`` of ``num_workers`` reads
    when a rank's ``steps`` batches are handed out round-robin from batch ``first`` on.

    Worker ``w`` owns the contiguous batches ``[a_w, a_w + n_w)`` (``n_w = steps // W``, one
    more for the first ``steps % W`` workers); position ``p`` of the epoch's order is worker
    ``p % W``'s batch ``a_w + p // W``. A resume at ``first`` rotates the slots (slot ``s``
    plays worker ``(s + first) % W``, so the DataLoader's round-robin continues where it
    stopped) and skips each worker's share of the first ``first`` positions.
    """
    worker = (slot + first) % num_workers
    share, extra = divmod(steps, num_workers)
    begin = worker * share + min(worker, extra)
    count = share + (worker < extra)
    done = first // num_workers + (worker < first % num_workers)
    return begin + done, begin + count


class ShardStream(IterableDataset):
    """Batches ``[first, steps)`` of a rank's rows: batch ``j`` is rows
    ``[start + j B, start + (j + 1) B)`` of a split's stream; rows at or after ``real_stop``
    are weight-0 padding (zeros). Each DataLoader worker reads its :func:`worker_batches`.
    """

    def __init__(
        self,
        shard_dir: Path,
        shards: Sequence[dict[str, Any]],
        spec: FeatureSpec,
        batch_size: int,
        start: int,
        real_stop: int,
        steps: int,
        first: int = 0,
    ) -> None:
        super().__init__()
        self.shard_dir, self.shards, self.spec = shard_dir, list(shards), spec
        self.batch_size, self.start, self.real_stop = batch_size, start, real_stop
        self.steps, self.first = steps, first

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        workers, slot = (1, 0) if info is None else (info.num_workers, info.id)
        begin, end = worker_batches(self.steps, self.first, workers, slot)
        low = self.start + begin * self.batch_size
        high = min(self.start + end * self.batch_size, self.real_stop)
        made = 0
        if high > low:
            for table in read_rows(self.shard_dir, self.shards, low, high, self.batch_size):
                yield self._batch(table)
                made += 1
        for _ in range(made, end - begin):
            yield self._batch(None)  # padding only

    def _batch(self, record: pa.Table | None) -> Batch:
        table = shard_examples(record, self.spec, self.batch_size)
        n = 0 if record is None else record.num_rows
        weights = (torch.arange(self.batch_size) < n).float()  # [B], 0 = padding
        return make_batch(table, self.spec, torch.arange(self.batch_size), weights)


def _ints(column: pa.Array) -> torch.Tensor:
    return torch.from_numpy(column.to_numpy(zero_copy_only=False).astype(np.int64))


def shard_examples(record: pa.Table | None, spec: FeatureSpec, size: int) -> ExampleTable:
    """Shard rows as ``size`` examples: ``record``'s rows, then padding (label 0, dense 0,
    no IDs in any sparse feature). An int64 column is one ID per example, a list column
    that example's IDs.

    A ``list<int64>`` column of rows [[3, 9], [], [4]] becomes the jagged column
    ``lengths = [2, 0, 1], values = [3, 9, 4]`` (padding rows add lengths 0)."""
    n = 0 if record is None else record.num_rows
    dense = np.zeros((size, len(spec.dense)), dtype=np.float32)  # [B, num_dense]
    labels = np.zeros(size, dtype=np.float32)  # [B]
    user_rows = torch.zeros(size, dtype=torch.int64)  # [B]
    item_rows = torch.zeros(size, dtype=torch.int64)  # [B]
    one_each = torch.clamp(torch.arange(size + 1), max=n)  # [B + 1] offsets: 1 ID per real row
    sparse = {}
    for feature in spec.sparse:
        if not n:  # padding only: every row empty
            sparse[feature.name] = JaggedColumn(one_each, torch.zeros(0, dtype=torch.int64))
            continue
        column = record.column(feature.name).combine_chunks()
        if pa.types.is_list(column.type):
            lengths = torch.zeros(size, dtype=torch.int64)  # [B]
            lengths[:n] = _ints(column.value_lengths())
            sparse[feature.name] = JaggedColumn.from_lengths(lengths, _ints(column.flatten()))
        else:
            sparse[feature.name] = JaggedColumn(one_each, _ints(column))
    if n:
        for j, name in enumerate(spec.dense_names()):
            dense[:n, j] = record.column(name).to_numpy()
        labels[:n] = record.column(LABEL).to_numpy()
        if USER_ROW in record.column_names:
            user_rows[:n] = _ints(record.column(USER_ROW).combine_chunks())
            item_rows[:n] = _ints(record.column(ITEM_ROW).combine_chunks())
    return ExampleTable(
        sparse=sparse,
        dense=torch.from_numpy(dense),
        labels=torch.from_numpy(labels),
        user_rows=user_rows,
        item_rows=item_rows,
    )


def _one_line(batches: Iterable[Batch]) -> Iterator[Batch]:
    """``batches``, with a :class:`DataError` raised in a DataLoader worker (which arrives
    with the worker's traceback in its message) cut back to its own one-line message."""
    try:
        yield from batches
    except DataError as e:
        lines = [line for line in str(e).splitlines() if line.strip()]
        last = lines[-1] if lines else str(e)
        raise DataError(last.split("DataError: ", 1)[-1]) from None


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed Python's and NumPy's generators in the worker from
    its torch seed (which the loader's seeded generator fixes), as torch seeds only its own."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


@functools.cache
def _worker_context() -> multiprocessing.context.BaseContext:
    """Where DataLoader workers start: a forkserver that has already imported this module.

    Workers are never forked from the training process itself: a fork of a process whose
    pyarrow / gloo / OpenMP threads are running can segfault in the child. The server imports
    torch and this module once, so each worker forks from it ready to read (no per-worker import).
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


class ShardSource:
    """The trainer's source over a shard folder: training batches (resumable), and padded
    evaluation batches of the validation and test shards."""

    def __init__(
        self,
        shard_dir: str | Path,
        embedding_dim: int,
        workers: int = 0,
        pin_memory: bool = False,
        expected_hash: str | None = None,
    ) -> None:
        """Reads the manifest and checks every shard's footer.

        Raises:
            DataError: see :func:`read_manifest` and :func:`check_shards`.
        """
        self.shard_dir = Path(shard_dir)
        self.manifest = read_manifest(shard_dir, expected_hash)
        check_shards(shard_dir, self.manifest)
        self.spec = FeatureSpec.from_dict(self.manifest["spec"], embedding_dim)
        self.workers, self.pin_memory = workers, pin_memory

    @property
    def vocab_hash(self) -> str:
        return self.manifest["vocab_hash"]

    def dataset(self) -> RecDataset:
        """The run's :class:`RecDataset`: the shards' FeatureSpec, and empty in-memory splits
        (the examples are streamed by :meth:`train_batches` / :meth:`eval_batches`)."""
        empty = {split: shard_examples(None, self.spec, 0) for split in SPLITS}
        data = examples_only_dataset(self.spec, empty, f"shards:{self.shard_dir}", len(self))
        if (self.shard_dir / VOCAB_FILE).is_file():
            data.vocabs = load_vocabularies(self.shard_dir / VOCAB_FILE)
        return data

    def rows(self, split: str) -> int:
        """Examples of ``split`` (``train``, ``val`` or ``test``)."""
        return int(self.manifest["splits"][split]["rows"])

    def __len__(self) -> int:
        return self.rows("train")

    def order(self, batch_size: int, shard: ShardInfo) -> str:
        """What the epoch's example order depends on (compared on a mid-epoch resume)."""
        return (
            f"shards {self.vocab_hash} read by {shard.world_size} process(es) x "
            f"{self.workers} loader worker(s), batch {batch_size}"
        )

    def _loader(self, stream: ShardStream) -> Iterator[Batch]:
        """A DataLoader over ``stream``, its workers started now, in the calling thread
        (TorchRec's eval pipeline pulls batches from a thread of its own while it FX-traces
        the model; a worker forked then would inherit the tracing state)."""
        context = _worker_context() if self.workers > 0 else None
        loader = DataLoader(
            stream,
            batch_size=None,
            num_workers=self.workers,
            pin_memory=self.pin_memory,
            multiprocessing_context=context,
            # fixed worker seeds: a worker's generators start the same in every run
            generator=torch.Generator().manual_seed(0),
            worker_init_fn=seed_worker,
        )
        return _one_line(iter(loader))

    def _stream(
        self, split: str, batch_size: int, start: int, stop: int, steps: int, first: int
    ) -> ShardStream:
        shards = self.manifest["splits"][split]["shards"]
        return ShardStream(self.shard_dir, shards, self.spec, batch_size, start, stop, steps, first)

    def train_batches(
        self, batch_size: int, shard: ShardInfo, seed: int, epoch: int, start_sample: int = 0
    ) -> Iterator[Batch]:
        """This rank's training batches from sample ``start_sample`` (all ranks together; a
        multiple of the global batch). ``seed`` and ``epoch`` do not change the order.

        Raises:
            DataError: ``start_sample`` is not a whole number of global batches.
        """
        global_batch = batch_size * shard.world_size
        if start_sample % global_batch:
            raise DataError(
                f"training position {start_sample} is not a multiple of the global batch "
                f"{global_batch}: resume streamed shards with the batch size and number of "
                f"processes that wrote the checkpoint"
            )
        steps = len(self) // global_batch
        start = shard.rank * steps * batch_size
        first = min(start_sample // global_batch, steps)
        stream = self._stream("train", batch_size, start, start + steps * batch_size, steps, first)
        return self._loader(stream)

    def eval_batches(self, split: str, batch_size: int, shard: ShardInfo) -> Iterator[Batch]:
        """Every example of ``split`` once: rank ``r`` its contiguous ``ceil(N / world)``
        rows, padded with weight-0 rows to the same number of steps on every rank."""
        n = self.rows(split)
        per_rank = -(-n // shard.world_size)
        steps = -(-per_rank // batch_size)
        start = min(shard.rank * per_rank, n)
        stop = min(start + per_rank, n)
        return self._loader(self._stream(split, batch_size, start, stop, steps, 0))


def preprocess_criteo(
    settings: CriteoConfig, out_dir: str | Path, rows_per_shard: int, progress: bool = True
) -> dict[str, Any]:
    """Criteo TSV -> Parquet shards of table rows, streaming (memory ~ one chunk).

    A first pass counts the lines (to place the validation and test rows at the end, as
    ``data.criteo.val_fraction`` / ``test_fraction`` do in memory); the frequency scheme
    (``min_count > 0``) also counts values over the training rows. Progress follows the
    bytes of the file read.
    """
    path = Path(settings.path)
    sizes = split_sizes(count_lines(path), settings)
    if settings.min_count > 0:
        vocab = FrequencyVocab.fit(
            _head(read_criteo(path, settings.chunk_rows), sizes["train"]), settings.min_count
        )
        table_rows = vocab.table_rows()
        scheme: dict[str, Any] = {
            "scheme": "frequency",
            "min_count": settings.min_count,
            "kept": hashlib.sha256(b"".join(k.tobytes() for k in vocab.kept)).hexdigest(),
        }
        encode = vocab.rows
    else:
        table_rows = hashing_table_rows(settings)
        scheme = HASHING_SCHEME

        def encode(raw: np.ndarray) -> np.ndarray:
            return hash_rows(raw, table_rows)

    bar = Progress(total=path.stat().st_size, desc="preprocess", enabled=progress, units="bytes")

    def tables() -> Iterator[pa.Table]:
        for chunk in read_criteo(path, settings.chunk_rows):
            bar.update(chunk.num_bytes)
            yield criteo_table(chunk.labels.numpy(), chunk.dense.numpy(), encode(chunk.raw_sparse))

    spec = criteo_spec(table_rows, embedding_dim=1)  # the dimension is not stored
    fingerprint = vocab_hash(table_rows, scheme)
    manifest = write_shards(tables(), out_dir, spec, fingerprint, rows_per_shard, sizes)
    bar.close()
    return manifest


def _head(chunks: Iterator[CriteoChunk], rows: int) -> Iterator[CriteoChunk]:
    """The first ``rows`` examples of ``chunks`` (the last chunk cut short)."""
    seen = 0
    for chunk in chunks:
        if seen >= rows:
            return
        take = min(len(chunk), rows - seen)
        if take < len(chunk):
            chunk = CriteoChunk(chunk.labels[:take], chunk.dense[:take], chunk.raw_sparse[:take])
        seen += take
        yield chunk


def expected_vocab_hash(settings: CriteoConfig) -> str | None:
    """The hashing scheme's fingerprint for ``settings`` (None for the frequency scheme,
    whose fingerprint depends on the data: the manifest's own is used)."""
    if settings.min_count > 0:
        return None
    return vocab_hash(hashing_table_rows(settings), HASHING_SCHEME)


def preprocess_examples(
    data: RecDataset, out_dir: str | Path, rows_per_shard: int, seed: int, progress: bool = True
) -> dict[str, Any]:
    """The splits of an encoded in-memory dataset (``build_dataset``) -> Parquet shards with
    list columns for jagged features, the FeatureSpec and the vocabularies.

    The training examples are written in the order of the in-memory path's first epoch with
    ``train.seed = seed`` (:func:`~torchrec_recsys.data.loader.epoch_order`), once: a
    streamed run reads that order every epoch. Validation and test keep their order. The
    fingerprint covers the spec, the vocabularies, the item-side feature values and
    ``seed``. Progress follows the examples written.
    """
    spec = data.spec
    sizes = {split: len(data.splits[split]) for split in SPLITS}
    items = hashlib.sha256()
    for name in sorted(data.items.sparse):
        column = data.items.sparse[name]
        items.update(name.encode() + column.offsets.numpy().tobytes())
        items.update(column.values.numpy().tobytes())
    vocabs = json.dumps({k: v.to_dict() for k, v in data.vocabs.items()}, sort_keys=True)
    scheme = {
        "scheme": "vocabularies",
        "spec": stored_spec(spec),
        "vocabularies": hashlib.sha256(vocabs.encode()).hexdigest(),
        "item_features": items.hexdigest(),
        "train_order_seed": seed,
    }
    fingerprint = vocab_hash([f.num_embeddings for f in spec.sparse], scheme)
    chunk = max(1, min(rows_per_shard, 65_536))
    bar = Progress(total=sum(sizes.values()), desc="preprocess", enabled=progress, units="examples")

    def tables() -> Iterator[pa.Table]:
        for split in SPLITS:
            examples = data.splits[split]
            n = len(examples)
            order = epoch_order(n, seed, epoch=0) if split == "train" else torch.arange(n)
            for begin in range(0, n, chunk):
                rows = order[begin : begin + chunk]
                bar.update(len(rows))
                yield examples_table(examples.select(rows), spec)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_vocabularies(out / VOCAB_FILE, data.vocabs)
    manifest = write_shards(tables(), out, spec, fingerprint, rows_per_shard, sizes)
    bar.close()
    return manifest

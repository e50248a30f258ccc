"""Criteo-format click logs (Kaggle Display Advertising / Terabyte), the DLRM benchmark shape.

One example per line, 40 tab-separated columns, any of the feature fields may be empty::

    label \\t I1 .. I13 \\t C1 .. C26
    1     \\t 5 \\t \\t 3 ... \\t 68fd1e64 \\t \\t 0b153874 ...

* label: 0 or 1 (click).
* I1..I13: integer counts (may be negative or missing); like the reference DLRM they become
  dense features ``log(1 + max(x, 0))``, missing = 0.
* C1..C26: 32-bit categorical values as 8 hex digits (missing = empty); each maps to a row
  of its own table ``t_cat_<i>``, by one of the reference DLRM's two schemes:

      hashing    row = int(hex, 16) mod table_rows[i]        (one pass, fixed sizes)
      frequency  row = 1 + rank among values seen >= min_count times in the training rows,
                 0 for the rest (a first pass counts; the table is as large as needed)

:func:`write_synthetic_criteo` writes files in exactly this format (the real ones cannot be
downloaded here), with clicks that depend on a few features so a model can learn.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pa_compute
import pyarrow.csv as pa_csv
import torch

from torchrec_recsys.config import CriteoConfig
from torchrec_recsys.data.dataset import ExampleTable, ItemCatalogue, RecDataset, UserTable
from torchrec_recsys.data.features import USER, DenseFeature, FeatureSpec, SparseFeature
from torchrec_recsys.data.jagged import JaggedColumn
from torchrec_recsys.errors import DataError

NUM_DENSE = 13
NUM_SPARSE = 26
NUM_COLUMNS = 1 + NUM_DENSE + NUM_SPARSE
DENSE_NAMES = [f"int_{i}" for i in range(NUM_DENSE)]
SPARSE_NAMES = [f"cat_{i}" for i in range(NUM_SPARSE)]


@dataclass
class CriteoChunk:
    """Consecutive examples of a Criteo file, encoded."""

    labels: torch.Tensor  # [N] float32
    dense: torch.Tensor  # [N, 13] float32, log(1 + max(x, 0))
    raw_sparse: np.ndarray  # [N, 26] int64, the 32-bit values (-1 = missing)
    num_bytes: int = 0
    """Bytes of the file the chunk was parsed from (for progress bars)."""

    def __len__(self) -> int:
        return len(self.labels)


_NIBBLE = np.full(256, -1, dtype=np.int16)
_NIBBLE[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_NIBBLE[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16)
_NIBBLE[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)


def _decode_hex(
    data: np.ndarray, start: np.ndarray, width: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Cells of at most 8 hex digits, cell i being the bytes ``data[start[i]:][:width[i]]``
    -> (int64 values, -1 for an empty cell; bool mask of cells with a non-hex character).
    [bytes], [N], [N] -> [N], [N]"""
    last = len(data) - 1
    value = np.zeros(len(width), dtype=np.int64)  # [N]
    bad = np.zeros(len(width), dtype=bool)  # [N]
    for k in range(8):  # digit k of every cell at once: value = 16 * value + digit
        present = width > k  # [N]
        if not present.any():
            break
        digit = _NIBBLE[data[np.minimum(start + k, last)]]  # [N], -1 = not hex
        bad |= present & (digit < 0)
        value = np.where(present, (value << 4) | np.maximum(digit, 0), value)
    return np.where(width == 0, -1, value), bad


def parse_hex(cells: np.ndarray) -> np.ndarray:
    """Hex strings of up to 8 digits -> int64 (empty -> -1); vectorised. [N] -> [N]

    Raises:
        ValueError: a cell longer than 8 characters or with a non-hex character.
    """
    fixed = np.asarray(cells, dtype="S9")  # [N], NUL-padded
    digits = fixed.view(np.uint8).reshape(len(fixed), 9)  # [N, 9]
    width = (digits != 0).sum(axis=1)  # [N]
    if (width > 8).any():
        raise ValueError(f"categorical value {cells[int(np.argmax(width > 8))]!r} is not 8 hex")
    value, bad = _decode_hex(digits.reshape(-1), 9 * np.arange(len(fixed)), width)
    if bad.any():
        raise ValueError(f"categorical value {cells[int(np.argmax(bad))]!r} is not hexadecimal")
    return value


_ARROW_PARSE = pa_csv.ParseOptions(delimiter="\t", quote_char=False, escape_char=False)
_ARROW_CONVERT = pa_csv.ConvertOptions(
    column_types={
        "0": pa.int8(),
        **{str(1 + i): pa.int64() for i in range(NUM_DENSE)},
        **{str(1 + NUM_DENSE + j): pa.binary() for j in range(NUM_SPARSE)},
    },
    null_values=[""],
    strings_can_be_null=False,  # an empty categorical stays b"" (missing), not null
)
_LABELS = pa.array([0, 1], pa.int8())
_ARROW_READ = pa_csv.ReadOptions(
    column_names=[str(i) for i in range(NUM_COLUMNS)], use_threads=False
)


def _hex_column(column: pa.ChunkedArray) -> np.ndarray | None:
    """Hex cells of an arrow binary column -> int64 (empty -> -1), straight from its buffers;
    None when a cell is longer than 8 characters or not hexadecimal. [N] -> [N]"""
    array = column.combine_chunks()
    _, offsets_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32)[
        array.offset : array.offset + len(array) + 1
    ]  # [N + 1]
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer else np.zeros(1, np.uint8)
    width = np.diff(offsets)  # [N]
    if (width > 8).any():
        return None
    value, bad = _decode_hex(data, offsets[:-1], width)
    return None if bad.any() else value


def _parse_arrow(data: bytes, rows: int) -> CriteoChunk | None:
    """The fast path of :func:`_parse_lines` (pyarrow's CSV reader, hex decoded from the
    column buffers) over ``rows`` lines of ``data``; None when anything in the chunk is off,
    so the careful path can name it."""
    try:
        table = pa_csv.read_csv(
            pa.py_buffer(data),
            read_options=_ARROW_READ,
            parse_options=_ARROW_PARSE,
            convert_options=_ARROW_CONVERT,
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != rows:  # e.g. an empty line, which the reader skips
        return None
    labels = table.column(0)
    if labels.null_count or not pa_compute.all(pa_compute.is_in(labels, _LABELS)).as_py():
        return None
    dense = np.stack(
        [table.column(1 + i).fill_null(0).to_numpy() for i in range(NUM_DENSE)], axis=1
    )  # [N, 13]
    sparse = []
    for j in range(NUM_SPARSE):
        values = _hex_column(table.column(1 + NUM_DENSE + j))
        if values is None:
            return None
        sparse.append(values)
    return CriteoChunk(
        labels=torch.from_numpy(labels.to_numpy().astype(np.float32)),
        dense=torch.from_numpy(encode_dense(dense.astype(np.int64))),
        raw_sparse=np.stack(sparse, axis=1),  # [N, 26]
        num_bytes=len(data),
    )


def _parse_lines(lines: Sequence[bytes], first_line: int, where: str) -> CriteoChunk:
    """Parse ``lines`` (line numbers from ``first_line``, 1-based) into a chunk: pyarrow's
    reader first; when anything is off, the careful path finds and names the first bad line.

    Raises:
        DataError: a line that is not UTF-8 or without 40 columns, a label other than 0/1, or
            a non-number field.
    """
    data = b"".join(lines)
    fast = _parse_arrow(data, len(lines))
    if fast is not None:
        return fast
    text: list[str] = []
    for number, line in enumerate(lines, start=first_line):
        try:
            text.append(line.decode())
        except UnicodeDecodeError:
            raise DataError(f"{where} line {number} is not UTF-8 text") from None
    tabs = np.fromiter((line.count("\t") for line in text), dtype=np.int64, count=len(text))
    if (tabs != NUM_COLUMNS - 1).any():
        bad = int(np.nonzero(tabs != NUM_COLUMNS - 1)[0][0])
        raise DataError(
            f"{where} line {first_line + bad} has {int(tabs[bad]) + 1} tab-separated columns; "
            f"a Criteo line has {NUM_COLUMNS} (label, {NUM_DENSE} integer, {NUM_SPARSE} "
            f"categorical)"
        )
    return _parse_pandas(text, first_line, where)


def _parse_pandas(lines: Sequence[str], first_line: int, where: str) -> CriteoChunk:
    """The careful path of :func:`_parse_lines`: slower, and it names the first bad field.

    Raises:
        DataError: a label other than 0/1, or a non-number field.
    """
    frame = pd.read_csv(
        io.StringIO("".join(lines)),
        sep="\t",
        header=None,
        names=list(range(NUM_COLUMNS)),
        dtype=str,
        keep_default_na=False,
        na_filter=False,
        engine="c",
    )
    table = frame.to_numpy()  # [N, 40] str
    try:
        labels = table[:, 0]
        if not np.isin(labels, ("0", "1")).all():
            bad = int(np.nonzero(~np.isin(labels, ("0", "1")))[0][0])
            raise ValueError(f"label {labels[bad]!r} is not 0 or 1")
        ints = table[:, 1 : 1 + NUM_DENSE]  # [N, 13]
        dense = np.where(ints == "", "0", ints).astype(np.int64)
        sparse = np.stack(
            [parse_hex(table[:, 1 + NUM_DENSE + j]) for j in range(NUM_SPARSE)], axis=1
        )  # [N, 26]
    except ValueError as e:
        raise DataError(f"{where} lines {first_line}..{first_line + len(lines) - 1}: {e}") from None
    return CriteoChunk(
        labels=torch.from_numpy(labels.astype(np.float32)),
        dense=torch.from_numpy(encode_dense(dense)),
        raw_sparse=sparse,
        num_bytes=sum(len(line.encode()) for line in lines),
    )


def read_criteo(path: str | Path, chunk_rows: int = 65_536) -> Iterator[CriteoChunk]:
    """Stream a Criteo TSV file in chunks of at most ``chunk_rows`` examples.

    Raises:
        DataError: the file is missing or a line is malformed (its number is named).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Criteo file {str(path)!r} does not exist")
    first = 1
    with path.open("rb") as f:
        while lines := list(itertools.islice(f, chunk_rows)):
            yield _parse_lines(lines, first, str(path))
            first += len(lines)


def hashing_table_rows(settings: CriteoConfig) -> list[int]:
    """Rows of each of the 26 tables under the hashing scheme: ``data.criteo.table_rows``,
    or ``hash_rows`` for every table when that list is empty."""
    return list(settings.table_rows) or [settings.hash_rows] * NUM_SPARSE


def hash_rows(raw: np.ndarray, table_rows: Sequence[int]) -> np.ndarray:
    """Hashing scheme: ``raw mod rows`` per column (missing -> 0). int64 [N, 26]"""
    sizes = np.asarray(table_rows, dtype=np.int64)[None, :]  # [1, 26]
    return np.where(raw < 0, 0, raw % sizes)


@dataclass
class FrequencyVocab:
    """Frequency-threshold scheme: per column, sorted values kept (row = 1 + position)."""

    kept: list[np.ndarray]  # 26 x [V_i] sorted int64

    @classmethod
    def fit(cls, chunks: Iterator[CriteoChunk], min_count: int) -> FrequencyVocab:
        """Keep values seen at least ``min_count`` times (missing never counts)."""
        counts: list[dict[int, int]] = [{} for _ in range(NUM_SPARSE)]
        for chunk in chunks:
            for j in range(NUM_SPARSE):
                values, n = np.unique(chunk.raw_sparse[:, j], return_counts=True)
                table = counts[j]
                for v, c in zip(values.tolist(), n.tolist(), strict=True):
                    if v >= 0:
                        table[v] = table.get(v, 0) + c
        kept = [
            np.array(sorted(v for v, c in table.items() if c >= min_count), dtype=np.int64)
            for table in counts
        ]
        return cls(kept)

    def table_rows(self) -> list[int]:
        """Rows per table: kept values + the shared row 0 for rare and missing ones."""
        return [len(k) + 1 for k in self.kept]

    def rows(self, raw: np.ndarray) -> np.ndarray:
        """Rows of ``raw`` [N, 26] (0 = rare or missing). int64 [N, 26]"""
        out = np.zeros_like(raw)
        for j, kept in enumerate(self.kept):
            if kept.size == 0:
                continue
            at = np.minimum(np.searchsorted(kept, raw[:, j]), kept.size - 1)  # [N]
            out[:, j] = np.where(kept[at] == raw[:, j], at + 1, 0)
        return out


def criteo_spec(
    table_rows: Sequence[int], embedding_dim: int, names: Sequence[str] = SPARSE_NAMES
) -> FeatureSpec:
    """13 dense features and one one-value sparse feature per name (default the 26 of
    Criteo; benchmarks pass other counts), one table ``t_<name>`` each."""
    if len(table_rows) != len(names):
        raise DataError(f"Criteo needs {len(names)} table sizes, got {len(table_rows)}")
    return FeatureSpec(
        sparse=tuple(
            SparseFeature(name, f"t_{name}", int(rows), embedding_dim, "sum", USER)
            for name, rows in zip(names, table_rows, strict=True)
        ),
        dense=tuple(DenseFeature(name, USER) for name in DENSE_NAMES),
    )


def one_hot_columns(
    rows: np.ndarray, names: Sequence[str] = SPARSE_NAMES
) -> dict[str, JaggedColumn]:
    """One ID per example per feature: ``rows`` [N, len(names)] -> KJT key -> jagged column."""
    n = rows.shape[0]
    offsets = torch.arange(n + 1, dtype=torch.int64)  # [N + 1], every length 1
    return {
        name: JaggedColumn(offsets, torch.from_numpy(np.ascontiguousarray(rows[:, j])))
        for j, name in enumerate(names)
    }


MISSING_INT = np.iinfo(np.int64).min
"""Marks a missing integer field in :func:`synthetic_criteo_blocks`."""


def synthetic_criteo_blocks(
    num_rows: int,
    seed: int = 0,
    cardinality: int = 100_000,
    missing_rate: float = 0.05,
    block: int = 100_000,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Blocks of synthetic examples: ``(labels [n], ints [n, 13], raw values [n, 26])``.

    Missing integers are :data:`MISSING_INT`, missing categoricals -1. Clicks depend on
    I1, I2, C1 and C2; categorical values are Zipf-distributed over ``cardinality`` random
    32-bit values per column.
    """
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 2**32, size=(NUM_SPARSE, cardinality), dtype=np.int64)
    effect = rng.normal(0, 1.0, size=(2, cardinality))
    for begin in range(0, num_rows, block):
        n = min(block, num_rows - begin)
        ints = rng.poisson(3.0, size=(n, NUM_DENSE)).astype(np.int64)  # [n, 13]
        ints[rng.random((n, NUM_DENSE)) < 0.01] = -1
        # Zipf(1.2) ranks in [0, cardinality): inverse CDF of the continuous power law
        u = rng.random((n, NUM_SPARSE))  # [n, 26]
        x = ((cardinality ** (1 - 1.2) - 1) * u + 1) ** (1 / (1 - 1.2))  # in [1, cardinality]
        ranks = np.minimum(x.astype(np.int64) - 1, cardinality - 1)
        logit = (
            -1.2
            + 0.5 * (ints[:, 0] - 3)
            - 0.4 * (ints[:, 1] - 3)
            + effect[0, ranks[:, 0]]
            + effect[1, ranks[:, 1]]
        )  # [n]
        labels = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
        raw = values[np.arange(NUM_SPARSE)[None, :], ranks]  # [n, 26]
        missing = rng.random((n, NUM_DENSE + NUM_SPARSE)) < missing_rate
        ints[missing[:, :NUM_DENSE]] = MISSING_INT
        raw[missing[:, NUM_DENSE:]] = -1
        yield labels, ints, raw


def encode_dense(ints: np.ndarray) -> np.ndarray:
    """Integer fields -> dense features ``log(1 + max(x, 0))`` (missing -> 0). float32"""
    return np.log1p(np.maximum(ints, 0)).astype(np.float32)


def write_synthetic_criteo(
    path: str | Path,
    num_rows: int,
    seed: int = 0,
    cardinality: int = 100_000,
    missing_rate: float = 0.05,
) -> Path:
    """Write ``num_rows`` Criteo-format lines from :func:`synthetic_criteo_blocks`.

    Categorical values are written as 8 hex digits; integer fields are Poisson counts
    (sometimes -1, as in the real data); each feature field is empty with probability
    ``missing_rate``. Written in blocks of 100k rows, so memory does not grow with
    ``num_rows``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for labels, ints, raw in synthetic_criteo_blocks(num_rows, seed, cardinality, missing_rate):
            cells = np.concatenate(
                [ints.astype(str), np.char.mod("%08x", np.maximum(raw, 0))], axis=1
            ).astype(object)  # [n, 39]
            cells[np.concatenate([ints == MISSING_INT, raw < 0], axis=1)] = ""
            frame = pd.DataFrame(np.concatenate([labels.astype(str)[:, None], cells], axis=1))
            frame.to_csv(f, sep="\t", header=False, index=False)
    return path


def split_sizes(num_rows: int, settings: CriteoConfig) -> dict[str, int]:
    """Rows of each split of a file of ``num_rows`` examples: train first, then the last rows
    as validation and test (``val_fraction``, ``test_fraction``), as the reference DLRM holds
    out the last day.

    Raises:
        DataError: too few rows to leave any for training.
    """
    n_test = int(num_rows * settings.test_fraction)
    n_val = int(num_rows * settings.val_fraction)
    n_train = num_rows - n_val - n_test
    if n_train <= 0:
        raise DataError(
            f"Criteo data {settings.path!r} has {num_rows} examples: too few for val_fraction "
            f"{settings.val_fraction} and test_fraction {settings.test_fraction}"
        )
    return {"train": n_train, "val": n_val, "test": n_test}


def count_lines(path: str | Path) -> int:
    """Lines of a text file (a last line without a newline counts), read in 16 MiB blocks.

    Raises:
        DataError: the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Criteo file {str(path)!r} does not exist")
    lines, last = 0, b"\n"
    with path.open("rb") as f:
        while block := f.read(1 << 24):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


def build_criteo_dataset(settings: CriteoConfig, embedding_dim: int) -> RecDataset:
    """Read a Criteo file into train / val / test tables (the last rows are val, then test,
    as the reference DLRM holds out the last day); no users or items: one placeholder each.

    Raises:
        DataError: a malformed file or too few rows for the requested splits.
    """
    chunks = list(read_criteo(settings.path, settings.chunk_rows))
    if not chunks:
        raise DataError(f"Criteo file {settings.path!r} has no examples")
    labels = torch.cat([c.labels for c in chunks])  # [N]
    dense = torch.cat([c.dense for c in chunks])  # [N, 13]
    raw = np.concatenate([c.raw_sparse for c in chunks])  # [N, 26]
    n = len(labels)
    sizes = split_sizes(n, settings)
    n_train, n_val = sizes["train"], sizes["val"]
    if settings.min_count > 0:
        vocab = FrequencyVocab.fit(
            iter([CriteoChunk(labels[:n_train], dense[:n_train], raw[:n_train])]),
            settings.min_count,
        )
        table_rows, rows = vocab.table_rows(), vocab.rows(raw)
    else:
        table_rows = hashing_table_rows(settings)
        rows = hash_rows(raw, table_rows)
    spec = criteo_spec(table_rows, embedding_dim)
    bounds = {
        "train": (0, n_train),
        "val": (n_train, n_train + n_val),
        "test": (n_train + n_val, n),
    }
    splits = {
        name: ExampleTable(
            sparse=one_hot_columns(rows[begin:end]),
            dense=dense[begin:end],
            labels=labels[begin:end],
            user_rows=torch.zeros(end - begin, dtype=torch.int64),
            item_rows=torch.zeros(end - begin, dtype=torch.int64),
        )
        for name, (begin, end) in bounds.items()
    }
    return examples_only_dataset(spec, splits, f"criteo:{Path(settings.path).name}", n_train)


def examples_only_dataset(
    spec: FeatureSpec, splits: dict[str, ExampleTable], name: str, train_examples: int
) -> RecDataset:
    """A :class:`RecDataset` of examples without users or items (one placeholder each), as
    Criteo data is; ``splits`` may be empty tables when the examples are streamed."""
    empty = JaggedColumn.from_lists([[]])
    return RecDataset(
        spec=spec,
        vocabs={},
        splits=splits,
        items=ItemCatalogue(
            item_ids=["-"],
            texts=[""],
            sparse={},
            dense=torch.zeros(1, 0),
            train_counts=torch.tensor([train_examples]),
            cold=torch.zeros(1, dtype=torch.bool),
        ),
        users=UserTable(sparse={}, dense=torch.zeros(1, 0), train_items=empty),
        user_ids=["-"],
        name=name,
    )

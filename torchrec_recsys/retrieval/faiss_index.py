"""FAISS retrieval index over item-tower embeddings: build, save, load, search, lookup.

The two-tower retriever scores a (query, item) pair by inner product (or cosine, which is
inner product of L2-normalised vectors). Every index built here therefore uses
``faiss.METRIC_INNER_PRODUCT``; an L2 index would rank items differently and is never built.

An exported index is a folder of three files, written atomically::

    <folder>/
      index.faiss      faiss.write_index output; row r holds the embedding of item_ids[r]
      item_ids.json    ["item_a", "item_b", ...]   row -> item id, len == index.ntotal
      metadata.json    dim, metric, kind, item_count, build_seconds, checkpoint_path,
                       faiss_version, index_sha256, spec (IndexSpec fields), extra (caller's)

Typical use::

    spec = IndexSpec(kind="hnsw", metric="cosine")
    index = build_index(item_embeddings, spec)                    # [N, D] float32
    save_index(folder, index, item_ids, spec, {}, checkpoint_path=ckpt, build_seconds=t)
    loaded = load_index(folder, expected_dim=D, expected_metric="cosine")
    scores, ids = search(loaded, query_embeddings, k=100, exclude=seen_items)  # [Q, D]

Library code: typed arguments only, no config reading. Bad input raises
:class:`~torchrec_recsys.errors.DataError` / :class:`~torchrec_recsys.errors.UserError`
with one sentence naming the bad value and what was expected.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

from torchrec_recsys.errors import DataError, UserError
from torchrec_recsys.files import atomic_directory, fsync_path

IndexKind = Literal["flat", "ivf", "hnsw"]
Metric = Literal["inner_product", "cosine"]

INDEX_KINDS: tuple[str, ...] = ("flat", "ivf", "hnsw")
METRICS: tuple[str, ...] = ("inner_product", "cosine")

INDEX_FILE = "index.faiss"
ITEM_IDS_FILE = "item_ids.json"
METADATA_FILE = "metadata.json"
FORMAT_VERSION = 1

_HASH_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class IndexSpec:
    """Which FAISS index to build and how to search it. Scores are always inner products."""

    kind: IndexKind = "flat"
    """``flat``: exact brute force; ``ivf``: inverted file (k-means cells, approximate);
    ``hnsw``: graph search (approximate, no training)."""

    metric: Metric = "inner_product"
    """``inner_product``: raw dot product, as the two-tower trains with a dot-product score;
    ``cosine``: items and queries are L2-normalised, then dot product."""

    ivf_nlist: int = 1024
    """IVF only: number of k-means cells; must not exceed the number of items
    (rule of thumb ~4*sqrt(N), with >= 39 items per cell for stable training)."""

    ivf_nprobe: int = 16
    """IVF only: cells visited per query (1..nlist); higher = better recall, slower search."""

    hnsw_m: int = 32
    """HNSW only: graph neighbours per node (faiss ``M``); memory grows ~ 2*M*4 bytes/item."""

    hnsw_ef_construction: int = 200
    """HNSW only: candidate list size while building (faiss ``efConstruction``)."""

    hnsw_ef_search: int = 128
    """HNSW only: candidate list size while searching (faiss ``efSearch``); raised to k when
    a search asks for more than this many neighbours."""

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise UserError(f"index kind {self.kind!r} is unknown; expected one of {INDEX_KINDS}")
        if self.metric not in METRICS:
            raise UserError(f"index metric {self.metric!r} is unknown; expected one of {METRICS}")
        for name in ("ivf_nlist", "ivf_nprobe", "hnsw_m", "hnsw_ef_construction", "hnsw_ef_search"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"index spec {name}={value!r} is invalid; expected an int >= 1")
        if self.ivf_nprobe > self.ivf_nlist:
            raise UserError(
                f"index spec ivf_nprobe={self.ivf_nprobe} exceeds ivf_nlist={self.ivf_nlist}; "
                "expected nprobe <= nlist"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, stored in ``metadata.json`` under ``spec``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> IndexSpec:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise DataError(
                f"index spec has unknown keys {unknown}; expected keys from {sorted(names)}"
            )
        return cls(**values)


@dataclass
class LoadedIndex:
    """A searchable index with its row -> item id map (from :func:`load_index` or built in memory).

    ``LoadedIndex(build_index(emb, spec), item_ids, spec)`` is the in-memory equivalent of a
    save/load round trip.
    """

    index: faiss.Index
    """The FAISS index; row r of the index is item ``item_ids[r]``."""

    item_ids: list[str]
    """Row -> item id, ``len(item_ids) == index.ntotal``, ids unique."""

    spec: IndexSpec
    """The spec the index was built with (metric decides whether queries are normalised)."""

    metadata: dict[str, Any] = field(default_factory=dict)
    """Contents of ``metadata.json`` (empty for an index that was never saved)."""

    row_of: dict[str, int] = field(init=False, repr=False)
    """Item id -> row, derived from ``item_ids``."""

    def __post_init__(self) -> None:
        _check_ids(self.item_ids, int(self.index.ntotal), what="item id map")
        self.row_of = {item_id: row for row, item_id in enumerate(self.item_ids)}
        _apply_search_params(self.index, self.spec)

    @property
    def dim(self) -> int:
        """Embedding dimension D of the index."""
        return int(self.index.d)

    @property
    def ntotal(self) -> int:
        """Number of items N in the index."""
        return int(self.index.ntotal)


# --------------------------------------------------------------------------- build


def build_index(embeddings: np.ndarray, spec: IndexSpec) -> faiss.Index:
    """Build an inner-product FAISS index over item embeddings.

    Args:
        embeddings: ``[N, D]`` item embeddings (converted to contiguous float32); row r
            becomes index row r. For ``cosine`` they are L2-normalised (a copy; the
            caller's array is not modified).
        spec: which index to build. IVF is trained on ``embeddings`` itself.

    Returns:
        A ``faiss.Index`` with ``metric_type == faiss.METRIC_INNER_PRODUCT`` and
        ``ntotal == N``, search parameters (nprobe / efSearch) already set.

    Raises:
        DataError: embeddings are not a finite non-empty 2-D array, a cosine row has zero
            norm, or IVF ``nlist`` exceeds the number of items.
    """
    x = _as_matrix(embeddings, what="item embeddings")  # [N, D]
    n, d = x.shape
    if spec.metric == "cosine":
        x = _l2_normalise(x, what="item embeddings")  # [N, D], unit rows

    if spec.kind == "flat":
        index: faiss.Index = faiss.IndexFlatIP(d)
    elif spec.kind == "ivf":
        if spec.ivf_nlist > n:
            raise DataError(
                f"IVF ivf_nlist={spec.ivf_nlist} exceeds the number of items N={n}; "
                f"expected nlist <= N (about 4*sqrt(N) = {max(1, round(4 * n**0.5))})"
            )
        quantizer = faiss.IndexFlatIP(d)
        # the faiss Python wrapper keeps a reference to the quantizer inside the index
        index = faiss.IndexIVFFlat(quantizer, d, spec.ivf_nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(x)  # spherical k-means (faiss sets cp.spherical for inner product)
    else:  # hnsw
        index = faiss.IndexHNSWFlat(d, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = spec.hnsw_ef_construction
    index.add(x)
    _apply_search_params(index, spec)
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:  # guard against a future edit above
        raise AssertionError(f"built index has metric_type {index.metric_type}, not inner product")
    return index


# --------------------------------------------------------------------------- save / load


def save_index(
    folder: str | Path,
    index: faiss.Index,
    item_ids: Sequence[str],
    spec: IndexSpec,
    metadata: Mapping[str, Any],
    *,
    checkpoint_path: str | Path | None = None,
    build_seconds: float | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``index.faiss``, ``item_ids.json`` and ``metadata.json`` into ``folder`` atomically.

    Files are written into a temporary folder next to ``folder`` (same parent, so the same
    file system) and moved into place with ``os.replace``: a reader sees either the old
    export or the complete new one, never a half-written folder.

    Args:
        folder: destination folder (created; its parent is created too).
        index: index from :func:`build_index`; ``ntotal`` must equal ``len(item_ids)``.
        item_ids: row -> item id, unique strings.
        spec: the spec the index was built with.
        metadata: extra JSON-serialisable caller information, stored under ``extra``.
        checkpoint_path: the model checkpoint the item embeddings came from.
        build_seconds: wall time :func:`build_index` took, as measured by the caller.
        overwrite: replace an existing ``folder``; otherwise an existing folder is an error.

    Returns:
        The folder path.

    Raises:
        DataError: ids do not match the index, or metadata is not JSON-serialisable.
        UserError: ``folder`` exists and ``overwrite`` is False, or is a file.
    """
    folder = Path(folder)
    ids = list(item_ids)
    _check_ids(ids, int(index.ntotal), what="item_ids")
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise DataError(
            f"index metric_type {index.metric_type} is not inner product "
            f"({faiss.METRIC_INNER_PRODUCT}); expected an index from build_index"
        )
    if folder.exists() and not folder.is_dir():
        raise UserError(f"index folder {str(folder)!r} exists and is not a folder")
    if folder.exists() and not overwrite:
        raise UserError(
            f"index folder {str(folder)!r} already exists; expected a new path or overwrite=True"
        )
    try:
        extra = json.loads(json.dumps(dict(metadata)))
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"index metadata is not JSON-serialisable ({exc}); expected plain values"
        ) from exc

    with atomic_directory(folder) as tmp:
        faiss.write_index(index, str(tmp / INDEX_FILE))
        meta = {
            "format_version": FORMAT_VERSION,
            "dim": int(index.d),
            "metric": spec.metric,
            "kind": spec.kind,
            "item_count": len(ids),
            "build_seconds": None if build_seconds is None else float(build_seconds),
            "checkpoint_path": None if checkpoint_path is None else str(checkpoint_path),
            "faiss_version": faiss.__version__,
            "index_sha256": _sha256(tmp / INDEX_FILE),
            "created_unix": time.time(),
            "spec": spec.to_dict(),
            "extra": extra,
        }
        _write_json(tmp / ITEM_IDS_FILE, ids)
        _write_json(tmp / METADATA_FILE, meta)
        fsync_path(tmp / INDEX_FILE)
    return folder


def load_index(
    folder: str | Path,
    expected_dim: int | None = None,
    expected_metric: str | None = None,
) -> LoadedIndex:
    """Load and verify a folder written by :func:`save_index`.

    Checks, in order: the folder and its three files exist; ``metadata.json`` and
    ``item_ids.json`` parse; the metadata dim/metric match ``expected_dim`` /
    ``expected_metric``; the sha256 of ``index.faiss`` matches the metadata (a truncated or
    corrupt file is reported here, before faiss reads it); the index's dim, metric and
    ``ntotal`` agree with the metadata and the id map.

    Args:
        folder: folder written by :func:`save_index`.
        expected_dim: the query-tower embedding dim the caller will search with.
        expected_metric: ``inner_product`` or ``cosine``, what the caller's model trained with.

    Returns:
        The :class:`LoadedIndex`, search parameters applied from the stored spec.

    Raises:
        DataError: any check above fails; the message names the path or both values.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(
            f"index folder {str(folder)!r} does not exist; expected a save_index folder"
        )
    for name in (INDEX_FILE, ITEM_IDS_FILE, METADATA_FILE):
        if not (folder / name).is_file():
            raise DataError(f"index file {str(folder / name)!r} does not exist")
    if expected_metric is not None and expected_metric not in METRICS:
        raise UserError(
            f"expected_metric {expected_metric!r} is unknown; expected one of {METRICS}"
        )

    meta = _read_json(folder / METADATA_FILE)
    if not isinstance(meta, dict):
        raise DataError(
            f"{str(folder / METADATA_FILE)!r} holds {type(meta).__name__}; expected an object"
        )
    required = ("dim", "metric", "kind", "item_count", "index_sha256", "spec")
    missing = [key for key in required if key not in meta]
    if missing:
        raise DataError(
            f"{str(folder / METADATA_FILE)!r} lacks keys {missing}; expected {list(required)}"
        )
    spec = IndexSpec.from_dict(meta["spec"])
    if spec.metric != meta["metric"] or spec.kind != meta["kind"]:
        raise DataError(
            f"{str(folder / METADATA_FILE)!r} is inconsistent: metric/kind "
            f"{meta['metric']}/{meta['kind']} but spec says {spec.metric}/{spec.kind}"
        )
    if expected_dim is not None and int(meta["dim"]) != int(expected_dim):
        raise DataError(
            f"index at {str(folder)!r} has dim {meta['dim']}, but the caller expects "
            f"dim {expected_dim}"
        )
    if expected_metric is not None and meta["metric"] != expected_metric:
        raise DataError(
            f"index at {str(folder)!r} has metric {meta['metric']!r}, but the caller expects "
            f"metric {expected_metric!r}"
        )

    ids = _read_json(folder / ITEM_IDS_FILE)
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise DataError(f"{str(folder / ITEM_IDS_FILE)!r} is not a JSON list of string item ids")
    if len(ids) != int(meta["item_count"]):
        raise DataError(
            f"{str(folder / ITEM_IDS_FILE)!r} holds {len(ids)} ids, but metadata item_count "
            f"is {meta['item_count']}"
        )

    index_path = folder / INDEX_FILE
    digest = _sha256(index_path)
    if digest != meta["index_sha256"]:
        raise DataError(
            f"index file {str(index_path)!r} has sha256 {digest[:12]}..., but metadata.json "
            f"records {str(meta['index_sha256'])[:12]}...; the file is truncated or corrupt"
        )
    try:
        index = faiss.read_index(str(index_path))
    except RuntimeError as exc:  # checksum passed, so this is a faiss version/format problem
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"faiss {faiss.__version__} cannot read {str(index_path)!r} written by faiss "
            f"{meta.get('faiss_version')}: {first_line}"
        ) from exc
    if int(index.d) != int(meta["dim"]):
        raise DataError(
            f"{str(index_path)!r} has dim {index.d}, but metadata.json says {meta['dim']}"
        )
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise DataError(
            f"{str(index_path)!r} has faiss metric_type {index.metric_type}; expected inner "
            f"product ({faiss.METRIC_INNER_PRODUCT})"
        )
    if int(index.ntotal) != len(ids):
        raise DataError(
            f"{str(index_path)!r} holds {index.ntotal} vectors, but "
            f"{str(folder / ITEM_IDS_FILE)!r} maps {len(ids)} ids; expected equal counts"
        )
    return LoadedIndex(index=index, item_ids=ids, spec=spec, metadata=meta)


# --------------------------------------------------------------------------- search


def search(
    loaded: LoadedIndex,
    queries: np.ndarray,
    k: int,
    exclude: Sequence[Collection[str]] | None = None,
    exclude_rows: Sequence[np.ndarray] | None = None,
) -> tuple[np.ndarray, list[list[str]]]:
    """Top-k items per query by inner product (cosine: queries are L2-normalised too).

    Args:
        loaded: index plus id map.
        queries: ``[Q, D]`` query embeddings (converted to float32; not modified).
        k: neighbours per query, ``1 <= k <= N``.
        exclude: optional, one collection of item ids per query that must not be returned
            (e.g. items the user interacted with in training). The index is searched for
            ``k + max(len(e))`` neighbours and the excluded ones are filtered out.
            Ids not in the index are ignored.
        exclude_rows: the same as index rows, one int64 array per query (for a caller that
            keeps rows, e.g. the service); not together with ``exclude``.

    Returns:
        ``scores [Q, k]`` float32, best first, and ``item_ids``: per query a list of at most
        k ids aligned with ``scores[q, :len(item_ids[q])]``. A list is shorter than k only
        when fewer than k items remain (exclusions, or an approximate index that found
        fewer candidates); the unused score slots hold ``-inf``.

    Raises:
        DataError: k outside ``1..N``, query dim differs from the index dim, ``exclude``
            length differs from Q, or a cosine query has zero norm.
    """
    n = loaded.ntotal
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise DataError(f"k={k!r} is invalid; expected an int >= 1")
    if k > n:
        raise DataError(f"k={k} exceeds the corpus size of {n} items; expected k <= {n}")
    q = _as_matrix(queries, what="query embeddings")  # [Q, D]
    if q.shape[1] != loaded.dim:
        raise DataError(
            f"query embeddings have dim {q.shape[1]}, but the index has dim {loaded.dim}"
        )
    if loaded.spec.metric == "cosine":
        q = _l2_normalise(q, what="query embeddings")  # [Q, D], unit rows
    num_q = q.shape[0]

    if exclude is not None and exclude_rows is not None:
        raise DataError("pass exclude (item ids) or exclude_rows (index rows), not both")
    excluded_rows: list[np.ndarray] | None = None
    fetch = int(k)
    if exclude is not None:
        excluded_rows = [
            np.fromiter({loaded.row_of[i] for i in items if i in loaded.row_of}, np.int64)
            for items in exclude
        ]
    elif exclude_rows is not None:
        excluded_rows = [np.asarray(rows, dtype=np.int64) for rows in exclude_rows]
    if excluded_rows is not None:
        if len(excluded_rows) != num_q:
            raise DataError(
                f"exclude has {len(excluded_rows)} entries, but there are {num_q} queries; "
                "expected one collection of item ids per query"
            )
        fetch = min(n, k + max((len(r) for r in excluded_rows), default=0))

    params = _search_params(loaded.spec, fetch)
    # [Q, fetch] scores and rows, best first; row -1 = no candidate found
    raw_scores, raw_rows = loaded.index.search(q, fetch, params=params)

    item_ids = loaded.item_ids
    if excluded_rows is None and bool((raw_rows >= 0).all()):  # fast path: nothing to filter
        return raw_scores, [[item_ids[r] for r in row] for row in raw_rows.tolist()]

    scores = np.full((num_q, k), -np.inf, dtype=np.float32)  # [Q, k]
    ids: list[list[str]] = []
    for qi in range(num_q):
        rows = raw_rows[qi]
        keep = rows >= 0
        if excluded_rows is not None and len(excluded_rows[qi]):
            keep &= ~np.isin(rows, excluded_rows[qi])
        kept = np.flatnonzero(keep)[:k]
        scores[qi, : len(kept)] = raw_scores[qi, kept]
        ids.append([item_ids[r] for r in rows[kept]])
    return scores, ids


def lookup(loaded: LoadedIndex, item_id: str) -> int:
    """Row of ``item_id`` in the index.

    Raises:
        DataError: the id is not in the index.
    """
    try:
        return loaded.row_of[item_id]
    except (KeyError, TypeError):
        raise DataError(
            f"item id {item_id!r} is not in the index; expected one of its {loaded.ntotal} "
            f"item ids (e.g. {loaded.item_ids[:3]})"
        ) from None


# --------------------------------------------------------------------------- helpers


def _as_matrix(values: np.ndarray, what: str) -> np.ndarray:
    """Contiguous float32 ``[R, D]`` with R, D >= 1 and finite values."""
    try:
        x = np.ascontiguousarray(values, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{what} cannot be converted to float32 ({exc}); expected a numeric array"
        ) from exc
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(
            f"{what} have shape {tuple(x.shape)}; expected a non-empty 2-D [rows, dim] array"
        )
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise DataError(f"{what} have {bad} rows with NaN or inf; expected finite values")
    return x


def _l2_normalise(x: np.ndarray, what: str) -> np.ndarray:
    """Unit-norm copy of ``x`` [R, D]; zero rows are an error (cosine is undefined)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)  # [R, 1]
    zero = np.flatnonzero(norms[:, 0] == 0)
    if zero.size:
        raise DataError(
            f"{what} have {zero.size} zero-norm rows (first: row {int(zero[0])}); "
            "expected non-zero vectors for the cosine metric"
        )
    return np.ascontiguousarray(x / norms, dtype=np.float32)


def _check_ids(ids: Sequence[str], ntotal: int, what: str) -> None:
    if len(ids) != ntotal:
        raise DataError(
            f"{what} has {len(ids)} ids, but the index holds {ntotal} vectors; expected equal"
        )
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        for dup in ids:
            if dup in seen:
                break
            seen.add(dup)
        raise DataError(f"{what} contains the duplicate item id {dup!r}; expected unique ids")


def _apply_search_params(index: faiss.Index, spec: IndexSpec) -> None:
    if spec.kind == "ivf":
        faiss.extract_index_ivf(index).nprobe = spec.ivf_nprobe
    elif spec.kind == "hnsw":
        index.hnsw.efSearch = spec.hnsw_ef_search


def _search_params(spec: IndexSpec, k: int) -> faiss.SearchParameters | None:
    """Per-call search parameters (the shared index is not mutated, so searches may overlap).

    HNSW returns at most efSearch neighbours, so efSearch is raised to k when k is larger.
    """
    if spec.kind == "ivf":
        return faiss.SearchParametersIVF(nprobe=spec.ivf_nprobe)
    if spec.kind == "hnsw":
        return faiss.SearchParametersHNSW(efSearch=max(spec.hnsw_ef_search, k))
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _write_json(path: Path, value: Any) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=1)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{str(path)!r} is not valid JSON ({exc})") from exc

"""Feature drift: training statistics in the bundle vs. what live requests carry.

Every query-side feature is reduced to a handful of buckets, so a population stability
index (PSI) over a few hundred requests measures shift rather than sampling noise::

    sparse feature (IDs, table rows 0..R-1)     dense feature (float)
      bucket 0      = unseen: OOV (row 0), or     buckets = training deciles (edges kept)
                      no value (a cold user's id)
      buckets 1..B  = known IDs grouped by
                      training frequency into
                      B groups of equal mass

    PSI = sum_b (live_b - train_b) * ln(live_b / train_b)      shares floored at 1e-4

Rule of thumb: PSI < 0.1 stable, 0.1-0.2 moderate, > 0.2 significant (the default flag).
The reference is the *training traffic as the service would see it*: one query per training
example, built from that user's features as of training end (what the bundle serves). Live
traffic with the training mix of users, attributes and histories therefore scores PSI ~ 0;
new users, a different user mix, histories of rare or unknown items score high. (Staleness of
the snapshot itself, e.g. histories that moved on since a training example, is not measured.)

The unseen share (values that hit row 0) is reported beside it and flagged on its own when it
rises above training by more than ``unseen_threshold``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pydantic

from torchrec_recsys.data.dataset import ExampleTable
from torchrec_recsys.data.features import USER, FeatureSpec
from torchrec_recsys.data.vocab import OOV_INDEX
from torchrec_recsys.errors import DataError
from torchrec_recsys.files import atomic_file, validated

DEFAULT_BUCKETS = 10
PSI_FLOOR = 1e-4
DEFAULT_PSI_THRESHOLD = 0.2
DEFAULT_UNSEEN_THRESHOLD = 0.1
DEFAULT_MIN_REQUESTS = 50

_Finite = Annotated[float, pydantic.Field(allow_inf_nan=False)]
_Share = Annotated[float, pydantic.Field(ge=0.0, le=1.0, allow_inf_nan=False)]
_Count = Annotated[int, pydantic.Field(ge=0)]


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


class _SparseStats(_Strict):
    bucket_of: list[_Count]
    shares: list[_Share]
    unseen_share: _Share

    @pydantic.model_validator(mode="after")
    def _buckets(self) -> _SparseStats:
        if not self.shares or (self.bucket_of and max(self.bucket_of) >= len(self.shares)):
            raise ValueError(f"bucket_of points past the {len(self.shares)} shares")
        return self


class _DenseStats(_Strict):
    edges: list[_Finite]
    shares: list[_Share]

    @pydantic.model_validator(mode="after")
    def _buckets(self) -> _DenseStats:
        if len(self.shares) != len(self.edges) + 1:
            raise ValueError(f"{len(self.shares)} shares for {len(self.edges)} edges")
        return self


class _TrainingStats(_Strict):
    """The shape of ``training_stats.json`` (:func:`training_statistics`)."""

    sparse: dict[str, _SparseStats]
    dense: dict[str, _DenseStats]
    examples: _Count
    buckets: Annotated[int, pydantic.Field(gt=0)]


class _FeatureRow(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="ignore")
    feature: str
    kind: Literal["sparse", "dense"]
    psi: _Finite
    flagged: bool
    unseen_share: _Share | None = None
    train_unseen_share: _Share | None = None


class _Report(pydantic.BaseModel):
    """The shape of a drift report (``GET /drift``, ``drift --json``); fields a newer service
    adds are let through."""

    model_config = pydantic.ConfigDict(extra="ignore")
    window_started_unix: _Finite
    requests: _Count
    enough_requests: bool
    min_requests: _Count
    psi_threshold: _Finite
    unseen_threshold: _Finite
    features: list[_FeatureRow]
    flagged: list[str]
    version: str | None = None


def check_training_statistics(
    data: Any, where: str, spec: FeatureSpec | None = None
) -> dict[str, Any]:
    """``data`` (parsed ``training_stats.json``) if it has the shape
    :func:`training_statistics` writes and, given ``spec``, covers its query features.

    Raises:
        DataError: one line naming ``where`` and the bad field.
    """
    validated(_TrainingStats, data, where)
    if spec is not None:
        want = {"sparse": {f.name for f in spec.sparse_features(USER)}}
        want["dense"] = {spec.dense[c].name for c in spec.dense_indices(USER)}
        for kind, names in want.items():
            lacking = sorted(names - set(data[kind]))
            if lacking:
                raise DataError(f"{where}: field {kind!r} lacks the query feature {lacking[0]!r}")
    return data


def check_report(data: Any, where: str) -> dict[str, Any]:
    """``data`` if it is a drift report (:func:`compare`, plus the service's ``version``).

    Raises:
        DataError: one line naming ``where`` and the bad field.
    """
    validated(_Report, data, where)
    return data


def _frequency_buckets(counts: np.ndarray, buckets: int) -> np.ndarray:
    """Bucket of every table row: 0 for OOV, else 1..buckets by training frequency mass."""
    rows = len(counts)
    bucket_of = np.zeros(rows, dtype=np.int64)
    known = np.arange(1, rows)
    if rows - 1 <= buckets:  # few values: one bucket each
        bucket_of[known] = known
        return bucket_of
    order = known[np.argsort(-counts[known], kind="stable")]  # most frequent first
    mass = counts[order].astype(np.float64)
    total = mass.sum()
    if total == 0:
        bucket_of[order] = 1 + (np.arange(len(order)) * buckets // len(order))
        return bucket_of
    cumulative = (np.cumsum(mass) - mass) / total  # mass before each row, in [0, 1)
    bucket_of[order] = 1 + np.minimum((cumulative * buckets).astype(np.int64), buckets - 1)
    return bucket_of


def training_statistics(
    table: ExampleTable, spec: FeatureSpec, buckets: int = DEFAULT_BUCKETS
) -> dict[str, Any]:
    """Bucketed distributions of every query-side (user tower) feature over ``table``.

    Returns a JSON-able dict: ``{"sparse": {name: {"bucket_of": [R], "shares": [B + 1],
    "unseen_share": float}}, "dense": {name: {"edges": [...], "shares": [...]}},
    "examples": N}``.
    """
    sparse: dict[str, Any] = {}
    for feature in spec.sparse_features(USER):
        column = table.sparse[feature.name]
        values = column.values.numpy()  # [nnz]
        empty = int((column.lengths == 0).sum())  # rows without a value count as unseen
        counts = np.bincount(values, minlength=feature.num_embeddings)  # [R]
        bucket_of = _frequency_buckets(counts, buckets)
        per_bucket = np.bincount(bucket_of[values], minlength=int(bucket_of.max()) + 1)
        per_bucket[0] += empty
        total = max(int(per_bucket.sum()), 1)
        sparse[feature.name] = {
            "bucket_of": bucket_of.tolist(),
            "shares": (per_bucket / total).tolist(),
            "unseen_share": float(per_bucket[0] / total),
        }
    dense: dict[str, Any] = {}
    for column in spec.dense_indices(USER):
        values = table.dense[:, column].numpy().astype(np.float64)  # [N]
        edges = np.unique(np.quantile(values, np.linspace(0, 1, buckets + 1)[1:-1]))
        per_bucket = np.bincount(np.searchsorted(edges, values), minlength=len(edges) + 1)
        dense[spec.dense[column].name] = {
            "edges": edges.tolist(),
            "shares": (per_bucket / max(len(values), 1)).tolist(),
        }
    return {"sparse": sparse, "dense": dense, "examples": len(table), "buckets": buckets}


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two share vectors (floored to avoid log(0))."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), PSI_FLOOR)
    a = np.maximum(np.asarray(actual, dtype=np.float64), PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


class DriftAccumulator:
    """Bucket counts of the query features of live requests, per time window (thread-safe).

    ``observe`` is called once per request with its one-row query table; ``report`` compares
    the current window (or the last complete one, when the current has too few requests)
    with the training statistics.
    """

    def __init__(self, stats: dict[str, Any], spec: FeatureSpec, window_seconds: float) -> None:
        self.stats = stats
        self.spec = spec
        self.window_seconds = window_seconds
        self._bucket_of = {k: np.asarray(v["bucket_of"]) for k, v in stats["sparse"].items()}
        self._edges = {k: np.asarray(v["edges"]) for k, v in stats["dense"].items()}
        self._dense_columns = {spec.dense[c].name: c for c in spec.dense_indices(USER)}
        self._lock = threading.Lock()
        self._previous: dict[str, Any] | None = None
        self._current = self._empty()

    def _empty(self) -> dict[str, Any]:
        sparse, dense = self.stats["sparse"], self.stats["dense"]
        return {
            "started_unix": time.time(),
            "requests": 0,
            "sparse": {k: np.zeros(len(v["shares"]), np.int64) for k, v in sparse.items()},
            "unseen": dict.fromkeys(self.stats["sparse"], 0),
            "values": dict.fromkeys(self.stats["sparse"], 0),
            "dense": {k: np.zeros(len(v["shares"]), np.int64) for k, v in dense.items()},
        }

    def _roll(self) -> None:
        if time.time() - self._current["started_unix"] >= self.window_seconds:
            self._previous, self._current = self._current, self._empty()

    def reset(self) -> None:
        """Start a new, empty window and forget the previous one."""
        with self._lock:
            self._previous, self._current = None, self._empty()

    def observe(self, query: ExampleTable) -> None:
        """Count the features of one request's query table (one row)."""
        sparse = {name: query.sparse[name].values.numpy() for name in self._bucket_of}
        self.observe_row(sparse, query.dense[0].numpy())

    def observe_row(self, sparse: Mapping[str, np.ndarray], dense: np.ndarray) -> None:
        """Count one request's query features: user key -> its values [nnz] (table rows), and
        the dense row [num_dense]."""
        dense_values = {name: float(dense[c]) for name, c in self._dense_columns.items()}
        with self._lock:
            self._roll()
            window = self._current
            window["requests"] += 1
            for name, bucket_of in self._bucket_of.items():
                values = sparse[name]
                ok = values[(values >= 0) & (values < len(bucket_of))]
                np.add.at(window["sparse"][name], bucket_of[ok], 1)
                empty = int(len(values) == 0)  # no value at all (e.g. a cold user's id)
                window["sparse"][name][0] += empty
                window["unseen"][name] += int((ok == OOV_INDEX).sum()) + empty
                window["values"][name] += len(ok) + empty
            for name, value in dense_values.items():
                window["dense"][name][int(np.searchsorted(self._edges[name], value))] += 1

    def report(
        self,
        psi_threshold: float = DEFAULT_PSI_THRESHOLD,
        unseen_threshold: float = DEFAULT_UNSEEN_THRESHOLD,
        min_requests: int = DEFAULT_MIN_REQUESTS,
    ) -> dict[str, Any]:
        """Per feature: PSI, live and training unseen share, and whether it is flagged."""
        with self._lock:
            self._roll()
            window = self._current
            if window["requests"] < min_requests and self._previous is not None:
                window = self._previous
            window = {
                "started_unix": window["started_unix"],
                "requests": window["requests"],
                "sparse": {k: v.copy() for k, v in window["sparse"].items()},
                "dense": {k: v.copy() for k, v in window["dense"].items()},
                "unseen": dict(window["unseen"]),
                "values": dict(window["values"]),
            }
        return compare(self.stats, window, psi_threshold, unseen_threshold, min_requests)


def compare(
    stats: dict[str, Any],
    window: dict[str, Any],
    psi_threshold: float,
    unseen_threshold: float,
    min_requests: int,
) -> dict[str, Any]:
    """The drift report of one window of bucket counts against the training statistics."""
    enough = window["requests"] >= min_requests
    features = []
    for kind in ("sparse", "dense"):
        for name, train in stats[kind].items():
            counts = np.asarray(window[kind][name], dtype=np.float64)
            total = counts.sum()
            if total == 0:
                continue
            value = psi(train["shares"], counts / total)
            row: dict[str, Any] = {"feature": name, "kind": kind, "psi": value}
            if kind == "sparse":
                live_unseen = window["unseen"][name] / max(window["values"][name], 1)
                row["unseen_share"] = live_unseen
                row["train_unseen_share"] = train["unseen_share"]
                unseen_flag = live_unseen - train["unseen_share"] > unseen_threshold
            else:
                unseen_flag = False
            row["flagged"] = bool(enough and (value > psi_threshold or unseen_flag))
            features.append(row)
    features.sort(key=lambda r: -r["psi"])
    return {
        "window_started_unix": window["started_unix"],
        "requests": window["requests"],
        "enough_requests": enough,
        "min_requests": min_requests,
        "psi_threshold": psi_threshold,
        "unseen_threshold": unseen_threshold,
        "features": features,
        "flagged": [r["feature"] for r in features if r["flagged"]],
    }


def format_report(report: dict[str, Any]) -> str:
    """A text table of a drift report, worst feature first."""
    lines = [
        f"window: {report['requests']} requests"
        + ("" if report["enough_requests"] else f" (< {report['min_requests']}: not flagged)"),
        f"{'feature':<24} {'kind':<6} {'psi':>8} {'unseen':>8} {'train':>8}  flag",
    ]
    for row in report["features"]:
        unseen = row.get("unseen_share")
        train = row.get("train_unseen_share")
        lines.append(
            f"{row['feature']:<24} {row['kind']:<6} {row['psi']:>8.4f} "
            f"{'' if unseen is None else f'{unseen:.3f}':>8} "
            f"{'' if train is None else f'{train:.3f}':>8}  {'DRIFT' if row['flagged'] else ''}"
        )
    return "\n".join(lines)


def plot_report(report: dict[str, Any], path: str | Path, worst: int = 8) -> Path:
    """A bar chart (PNG) of the PSI of the ``worst`` features, the threshold as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["features"][:worst]
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * max(len(rows), 1)))
    names = [r["feature"] for r in rows][::-1]
    values = [r["psi"] for r in rows][::-1]
    colors = ["tab:red" if r["flagged"] else "tab:blue" for r in rows][::-1]
    ax.barh(names, values, color=colors)
    ax.axvline(report["psi_threshold"], color="black", linestyle="--", label="threshold")
    ax.set_xlabel("population stability index (live window vs. training)")
    ax.set_title(f"feature drift, {report['requests']} requests")
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    with atomic_file(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)
    return path

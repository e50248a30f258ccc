"""Learned baselines a practitioner would try before a DLRM, on the DLRM's own features.

* :class:`LogisticRegression`: one weight per (feature, token) plus a weight per dense
  feature and a bias; a bag (history, genres) contributes the pooled weight of its tokens,
  exactly like a one-hot / mean-of-one-hots design matrix. Uses every feature.
* LightGBM (``fit_lightgbm``, binary objective): a table with one column per dense feature,
  one *categorical* column per single-valued sparse feature (IDs, SID tokens, decade, ...)
  and multi-hot columns for multi-valued features with a small vocabulary (genres). A bag
  over a large vocabulary (``user_history``: one token per item) has no tabular form here:
  it is left out by default and is an error when asked for by name.

Both are trained on the training split, with the validation split for early stopping.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from torchrec_recsys.data.dataset import ExampleTable
from torchrec_recsys.data.features import FeatureSpec
from torchrec_recsys.data.jagged import segment_positions
from torchrec_recsys.errors import ConfigError

MAX_MULTI_HOT = 64
"""A multi-valued feature with at most this many tokens becomes multi-hot columns."""


@dataclass
class TabularLayout:
    """Which features a tree model reads, and how (decided once, from the training split)."""

    dense: list[str]
    categorical: list[str]  # single-valued sparse features -> one integer column each
    multi_hot: dict[str, int]  # multi-valued feature -> vocabulary size (one column per token)
    skipped: list[str]  # features with no tabular form (large-vocabulary bags)

    def column_names(self) -> list[str]:
        names = list(self.dense) + list(self.categorical)
        for name, size in self.multi_hot.items():
            names += [f"{name}={t}" for t in range(size)]
        return names


def tabular_layout(
    train: ExampleTable, spec: FeatureSpec, requested: list[str] | None = None
) -> TabularLayout:
    """Decide each feature's tabular form; ``requested`` (empty/None = all usable) filters.

    Raises:
        ConfigError: a requested feature is unknown or has no tabular form.
    """
    known = [*spec.dense_names(), *spec.sparse_names()]
    unknown = [f for f in requested or [] if f not in known]
    if unknown:
        raise ConfigError(
            f"baselines.lightgbm_features names unknown feature(s) {unknown}; the features "
            f"are {', '.join(known)}"
        )
    wanted = set(requested) if requested else set(known)
    layout = TabularLayout(
        dense=[n for n in spec.dense_names() if n in wanted],
        categorical=[],
        multi_hot={},
        skipped=[],
    )
    for feature in spec.sparse_features():
        if feature.name not in wanted:
            continue
        column = train.sparse[feature.name]
        if len(column) == 0 or int(column.lengths.max()) <= 1:
            layout.categorical.append(feature.name)
        elif feature.num_embeddings <= MAX_MULTI_HOT:
            layout.multi_hot[feature.name] = feature.num_embeddings
        elif requested:
            raise ConfigError(
                f"LightGBM cannot use {feature.name!r}: it is a bag of up to "
                f"{int(column.lengths.max())} tokens over {feature.num_embeddings} values "
                f"(more than {MAX_MULTI_HOT}, so no multi-hot columns); drop it from "
                f"baselines.lightgbm_features"
            )
        else:
            layout.skipped.append(feature.name)
    return layout


def tabular_matrix(table: ExampleTable, spec: FeatureSpec, layout: TabularLayout) -> np.ndarray:
    """The examples of ``table`` as a float32 matrix [N, len(layout.column_names())].

    Single-valued sparse features hold their token index (0 = empty/OOV); multi-hot columns
    hold 1 where the token is present.
    """
    n = len(table)
    dense_index = {name: i for i, name in enumerate(spec.dense_names())}
    parts = [table.dense[:, [dense_index[d] for d in layout.dense]].numpy()]  # [N, #dense]
    for name in layout.categorical:
        column = table.sparse[name]
        codes = torch.zeros(n, dtype=torch.int64)
        has = column.lengths > 0
        codes[has] = column.values[column.offsets[:-1][has]]
        parts.append(codes.numpy()[:, None].astype(np.float32))  # [N, 1]
    for name, size in layout.multi_hot.items():
        column = table.sparse[name]
        hot = torch.zeros(n, size)
        hot[torch.repeat_interleave(torch.arange(n), column.lengths), column.values] = 1.0
        parts.append(hot.numpy())  # [N, size]
    return np.concatenate(parts, axis=1).astype(np.float32)


def row_budget(
    table: ExampleTable, max_rows: int | None, seed: int = 0, group_size: int = 1
) -> ExampleTable:
    """``table`` itself if it has at most ``max_rows`` rows (or no budget), else a seeded
    random subset of that many rows in their original order (whole groups of ``group_size``
    consecutive rows)."""
    if max_rows is None or len(table) <= max_rows:
        return table
    groups, keep = len(table) // group_size, max(max_rows // group_size, 1)
    gen = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(groups, generator=gen)[:keep].sort().values  # [keep]
    rows = (chosen[:, None] * group_size + torch.arange(group_size)).view(-1)  # [keep * g]
    return table.select(rows)


def fit_lightgbm(
    train: ExampleTable,
    val: ExampleTable | None,
    spec: FeatureSpec,
    layout: TabularLayout,
    rounds: int = 500,
    num_leaves: int = 31,
    learning_rate: float = 0.05,
    seed: int = 0,
    group_size: int | None = None,
    max_rows: int | None = None,
) -> object:
    """A LightGBM booster (binary log-loss) on ``train``'s ``layout`` columns, early-stopped on
    ``val`` when it has rows.

    With ``group_size`` (pairs tables: every ``group_size`` consecutive rows are one query)
    the objective is ``lambdarank`` instead, trained for exactly ``rounds`` rounds: its
    validation NDCG over the sampled pairs peaked within ~10 rounds on MovieLens-100K while
    the pipeline's Recall@10 kept rising, so it is no early-stopping signal.

    With ``max_rows`` (the row budget) a larger ``train`` is subsampled to that many rows
    (seeded; whole queries with ``group_size``), and ``val`` likewise: the fit's time grows
    with its rows, and past ~50k rows its AUC hardly does."""
    import lightgbm as lgb  # optional heavy import, only where a baseline is trained

    train = row_budget(train, max_rows, seed, group_size or 1)
    val = row_budget(val, max_rows, seed + 1) if val is not None else None

    train_x, train_y = tabular_matrix(train, spec, layout), train.labels.numpy()
    val_x = tabular_matrix(val, spec, layout) if val is not None and len(val) else None
    val_y = val.labels.numpy() if val_x is not None and val is not None else None

    names = layout.column_names()
    first_cat = len(layout.dense)
    categorical = list(range(first_cat, first_cat + len(layout.categorical)))
    params = {
        "objective": "lambdarank" if group_size else "binary",
        "learning_rate": learning_rate,
        "num_leaves": num_leaves,
        "min_data_in_leaf": 50,
        "feature_fraction": 0.9,
        "cat_smooth": 10.0,
        "max_cat_to_onehot": 8,
        "num_threads": 1,
        "seed": seed,
        "deterministic": True,
        "verbosity": -1,
    }
    train_set = lgb.Dataset(
        train_x,
        train_y,
        feature_name=names,
        categorical_feature=categorical,
        free_raw_data=False,
        group=[group_size] * (len(train_y) // group_size) if group_size else None,
    )
    valid = []
    callbacks = []
    if val_x is not None and val_y is not None and len(val_y) and not group_size:
        valid = [lgb.Dataset(val_x, val_y, reference=train_set)]
        callbacks = [lgb.early_stopping(30, verbose=False)]
    return lgb.train(params, train_set, rounds, valid_sets=valid, callbacks=callbacks)


def lightgbm_probabilities(booster: object, x: np.ndarray) -> torch.Tensor:
    """Score of each row of ``x`` [N] with a :func:`fit_lightgbm` booster: P(label = 1) for
    the binary objective, an unbounded ranking score for lambdarank."""
    best = getattr(booster, "best_iteration", 0) or None
    return torch.from_numpy(np.asarray(booster.predict(x, num_iteration=best), dtype=np.float64))


@dataclass
class SparseDesign:
    """The sparse design matrix of a logistic regression over one table, in CSR form.

    Row ``i`` (one example) holds ``columns[offsets[i]:offsets[i+1]]`` with the matching
    ``weights``: one column per (feature, token), numbered feature after feature; a
    ``sum`` bag weighs each token 1, a ``mean`` bag 1/len (empty bags hold nothing)::

        example 0: [user_id=7, item_id=3, genres={1, 4}]  (genres pooled by mean)
          columns  [7, U + 3, U + I + 1, U + I + 4]     U, I: rows of user_id, item_id
          weights  [1, 1,     0.5,       0.5]

    offsets: int64 [N + 1]; columns: int64 [nnz]; weights: float32 [nnz]
    """

    offsets: torch.Tensor
    columns: torch.Tensor
    weights: torch.Tensor

    def gather(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Bag offsets [B], columns [nnz_B] and weights [nnz_B] of ``rows``, in that order."""
        starts = self.offsets[rows]
        lengths = self.offsets[rows + 1] - starts  # [B]
        positions = segment_positions(starts, lengths)  # [nnz_B]
        return torch.cumsum(lengths, 0) - lengths, self.columns[positions], self.weights[positions]


class LogisticRegression(nn.Module):
    """logit = bias + w_dense . dense + sum over sparse features of pooled token weights.

    The token weights are one table with a single column (``EmbeddingBag`` of dim 1 with
    sparse gradients) over every feature's tokens, so a step reads and updates only the
    rows its batch touches.
    """

    def __init__(self, spec: FeatureSpec) -> None:
        super().__init__()
        self.features = [(f.name, f.num_embeddings, f.pooling) for f in spec.sparse_features()]
        sizes = [n for _, n, _ in self.features]
        self.bases = [sum(sizes[:i]) for i in range(len(sizes))]  # first column per feature
        total = sum(sizes)
        self.tokens = nn.EmbeddingBag(max(total, 1), 1, mode="sum", sparse=True)
        nn.init.zeros_(self.tokens.weight)
        self.dense = nn.Linear(len(spec.dense), 1)

    def design(self, table: ExampleTable) -> SparseDesign:
        """The sparse design matrix of ``table``'s examples (built once per table)."""
        n = len(table)
        rows, columns, weights = [], [], []
        for (name, _, pooling), base in zip(self.features, self.bases, strict=True):
            column = table.sparse[name]
            lengths = column.lengths  # [N]
            row = torch.repeat_interleave(torch.arange(n), lengths)  # [nnz_f]
            rows.append(row)
            columns.append(column.values + base)
            weight = torch.ones(row.numel())
            if pooling == "mean":
                weight = (1.0 / lengths.clamp(min=1).float())[row]
            weights.append(weight)
        if not rows:
            empty = torch.zeros(0, dtype=torch.int64)
            return SparseDesign(torch.zeros(n + 1, dtype=torch.int64), empty, torch.zeros(0))
        row = torch.cat(rows)
        order = torch.argsort(row, stable=True)  # example-major, features in spec order
        offsets = torch.zeros(n + 1, dtype=torch.int64)
        torch.cumsum(torch.bincount(row, minlength=n), 0, out=offsets[1:])
        return SparseDesign(offsets, torch.cat(columns)[order], torch.cat(weights)[order])

    def logits(self, table: ExampleTable, design: SparseDesign, rows: torch.Tensor) -> torch.Tensor:
        """Logits [len(rows)] of examples ``rows`` of ``table`` (``design`` of that table)."""
        bag_offsets, columns, weights = design.gather(rows)
        logit = self.dense(table.dense[rows])[:, 0]  # [B]
        return logit + self.tokens(columns, bag_offsets, per_sample_weights=weights)[:, 0]

    def forward(self, table: ExampleTable, rows: torch.Tensor) -> torch.Tensor:
        """Logits [len(rows)] of examples ``rows`` of ``table``."""
        return self.logits(table, self.design(table), rows)


def logistic_loss(
    model: LogisticRegression,
    table: ExampleTable,
    design: SparseDesign,
    rows: torch.Tensor,
    l2: float,
) -> torch.Tensor:
    """Mean binary log-loss of examples ``rows`` plus ``l2`` times the squared norm of the
    token weights they read (each touched row once) and of the dense weights; its gradient
    on the token weights is sparse, over those rows only."""
    bag_offsets, columns, weights = design.gather(rows)
    token_logits = model.tokens(columns, bag_offsets, per_sample_weights=weights)  # [B, 1]
    logits = model.dense(table.dense[rows])[:, 0] + token_logits[:, 0]  # [B]
    loss = nn.functional.binary_cross_entropy_with_logits(logits, table.labels[rows])
    touched = nn.functional.embedding(columns.unique(), model.tokens.weight, sparse=True)
    return loss + l2 * ((touched**2).sum() + (model.dense.weight**2).sum())


def fit_logistic_regression(
    train: ExampleTable,
    spec: FeatureSpec,
    epochs: int = 5,
    batch_size: int = 1024,
    lr: float = 0.02,
    l2: float = 1e-6,
    seed: int = 0,
) -> LogisticRegression:
    """Minibatch Adam on the binary log-loss with an L2 penalty: lazy (sparse) Adam on the
    token weights a batch reads, whose penalty covers only those rows, dense Adam on the
    dense weights and bias."""
    gen = torch.Generator().manual_seed(seed)
    model = LogisticRegression(spec)
    design = model.design(train)
    sparse = torch.optim.SparseAdam(list(model.tokens.parameters()), lr=lr)
    dense = torch.optim.Adam(model.dense.parameters(), lr=lr)
    for _ in range(epochs):
        order = torch.randperm(len(train), generator=gen)
        for begin in range(0, len(order), batch_size):
            rows = order[begin : begin + batch_size]
            loss = logistic_loss(model, train, design, rows, l2)
            sparse.zero_grad()
            dense.zero_grad()
            loss.backward()
            sparse.step()
            dense.step()
    return model


@torch.no_grad()
def logistic_probabilities(model: LogisticRegression, table: ExampleTable) -> torch.Tensor:
    """P(label = 1) of every row of ``table`` [N]."""
    design = model.design(table)
    rows = torch.arange(len(table))
    chunks = [torch.sigmoid(model.logits(table, design, r)) for r in rows.split(8192)]
    return torch.cat(chunks).double() if chunks else torch.zeros(0, dtype=torch.float64)

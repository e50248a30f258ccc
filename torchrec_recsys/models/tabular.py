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
) -> object:
    """A LightGBM booster (binary log-loss) on ``train``'s ``layout`` columns, early-stopped on
    ``val`` when it has rows.

    With ``group_size`` (pairs tables: every ``group_size`` consecutive rows are one query)
    the objective is ``lambdarank`` instead, trained for exactly ``rounds`` rounds: its
    validation NDCG over the sampled pairs peaked within ~10 rounds on MovieLens-100K while
    the pipeline's Recall@10 kept rising, so it is no early-stopping signal."""
    import lightgbm as lgb  # optional heavy import, only where a baseline is trained

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


class LogisticRegression(nn.Module):
    """logit = bias + w_dense . dense + sum over sparse features of pooled token weights."""

    def __init__(self, spec: FeatureSpec) -> None:
        super().__init__()
        self.names = spec.sparse_names()
        self.bags = nn.ModuleList(
            nn.EmbeddingBag(f.num_embeddings, 1, mode="sum" if f.pooling == "sum" else "mean")
            for f in spec.sparse_features()
        )
        for bag in self.bags:
            nn.init.zeros_(bag.weight)
        self.dense = nn.Linear(len(spec.dense), 1)

    def forward(self, table: ExampleTable, rows: torch.Tensor) -> torch.Tensor:
        """Logits [len(rows)] of examples ``rows`` of ``table``."""
        logit = self.dense(table.dense[rows])[:, 0]  # [B]
        for name, bag in zip(self.names, self.bags, strict=True):
            lengths, values = table.sparse[name].gather(rows)
            offsets = torch.cumsum(lengths, 0) - lengths  # [B]
            logit = logit + bag(values, offsets)[:, 0]  # empty bags pool to 0
        return logit


def fit_logistic_regression(
    train: ExampleTable,
    spec: FeatureSpec,
    epochs: int = 5,
    batch_size: int = 1024,
    lr: float = 0.02,
    l2: float = 1e-6,
    seed: int = 0,
) -> LogisticRegression:
    """Minibatch Adam on the weighted-free binary log-loss, with an L2 penalty on the weights."""
    gen = torch.Generator().manual_seed(seed)
    model = LogisticRegression(spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        order = torch.randperm(len(train), generator=gen)
        for begin in range(0, len(order), batch_size):
            rows = order[begin : begin + batch_size]
            logits = model(train, rows)
            loss = nn.functional.binary_cross_entropy_with_logits(logits, train.labels[rows])
            loss = loss + l2 * sum((p**2).sum() for p in model.parameters())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model


@torch.no_grad()
def logistic_probabilities(model: LogisticRegression, table: ExampleTable) -> torch.Tensor:
    """P(label = 1) of every row of ``table`` [N]."""
    rows = torch.arange(len(table))
    return torch.cat([torch.sigmoid(model(table, r)) for r in rows.split(8192)]).double()

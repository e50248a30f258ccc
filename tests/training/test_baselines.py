"""Logistic regression and LightGBM on the DLRM's features: they learn, and bad asks fail."""

from __future__ import annotations

import pytest
import torch
from _configs import dataset_configs

from torchrec_recsys.app import builders
from torchrec_recsys.config import BaselineConfig, ExperimentConfig
from torchrec_recsys.data.dataset import ExampleTable, build_dataset
from torchrec_recsys.data.features import DenseFeature, FeatureSpec
from torchrec_recsys.data.readers import read_files
from torchrec_recsys.errors import ConfigError
from torchrec_recsys.models.tabular import (
    LogisticRegression,
    fit_lightgbm,
    lightgbm_probabilities,
    logistic_loss,
    row_budget,
    tabular_layout,
    tabular_matrix,
)
from torchrec_recsys.training.baselines import learned_baselines

ITEM_COLUMNS = ["genres", "decade"]
USER_COLUMNS = ["age_group", "gender", "occupation"]


@pytest.fixture(scope="module")
def data(synthetic_paths):  # type: ignore[no-untyped-def]
    raw = read_files(
        str(synthetic_paths.interactions),
        str(synthetic_paths.items),
        str(synthetic_paths.users),
        ["title", *ITEM_COLUMNS],
        USER_COLUMNS,
    )
    data_cfg, features = dataset_configs(ITEM_COLUMNS, USER_COLUMNS, history_length=5)
    return build_dataset(raw, data_cfg, features)


def test_layout_puts_each_feature_in_its_tabular_form(data) -> None:  # type: ignore[no-untyped-def]
    layout = tabular_layout(data.splits["train"], data.spec)
    assert "item_id" in layout.categorical and "user_id" in layout.categorical
    assert layout.skipped == ["user_history"]  # a bag over every item: no tabular form
    x = tabular_matrix(data.splits["test"], data.spec, layout)
    assert x.shape == (len(data.splits["test"]), len(layout.column_names()))
    item_col = len(layout.dense) + layout.categorical.index("item_id")
    test = data.splits["test"]
    assert torch.equal(torch.from_numpy(x[:, item_col]).long(), test.sparse["item_id"].values)


def test_lightgbm_on_a_feature_it_cannot_use_is_a_clear_error(data) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="LightGBM cannot use 'user_history'"):
        tabular_layout(data.splits["train"], data.spec, ["item_id", "user_history"])
    with pytest.raises(ConfigError, match="unknown feature"):
        tabular_layout(data.splits["train"], data.spec, ["no_such_feature"])


def test_learned_baselines_beat_chance(data) -> None:  # type: ignore[no-untyped-def]
    out = learned_baselines(data, BaselineConfig(lightgbm_rounds=50, logistic_epochs=5))
    assert out["logistic_regression"]["auc"] > 0.55
    assert out["lightgbm"]["auc"] > 0.55
    assert out["lightgbm"]["features_skipped"] == ["user_history"]
    assert 0 < out["lightgbm"]["ne"] < 1.2


def test_lambdarank_learns_to_put_each_querys_positive_first() -> None:
    gen = torch.Generator().manual_seed(0)
    queries, group = 300, 4  # rows q*4 .. q*4+3 are one query, its positive first
    labels = torch.zeros(queries, group)
    labels[:, 0] = 1.0
    signal = labels + torch.randn(queries, group, generator=gen)  # [Q, 4] noisy label
    dense = torch.stack([signal, torch.randn(queries, group, generator=gen)], -1).view(-1, 2)
    spec = FeatureSpec(sparse=(), dense=(DenseFeature("a", "pair"), DenseFeature("b", "pair")))
    n = queries * group
    table = ExampleTable(
        {},
        dense,
        labels.view(-1),
        torch.zeros(n, dtype=torch.int64),
        torch.zeros(n, dtype=torch.int64),
    )
    layout = tabular_layout(table, spec)
    booster = fit_lightgbm(table, table, spec, layout, rounds=30, group_size=group)
    assert booster.params["objective"] == "lambdarank"
    assert booster.current_iteration() == 30  # fixed rounds: no early stopping
    scores = lightgbm_probabilities(booster, tabular_matrix(table, spec, layout)).view(-1, group)
    top1 = float((scores.argmax(1) == 0).double().mean())
    assert top1 > 0.6  # chance: 0.25


def test_logistic_regression_pools_each_feature_like_its_own_bag(data) -> None:  # type: ignore[no-untyped-def]
    spec, table = data.spec, data.splits["test"]
    model = LogisticRegression(spec)
    with torch.no_grad():
        model.tokens.weight.normal_(generator=torch.Generator().manual_seed(0))
    rows = torch.arange(len(table)).flip(0)[:50]
    expected = model.dense(table.dense[rows])[:, 0]  # [B]
    for feature, base in zip(spec.sparse_features(), model.bases, strict=True):
        bag = torch.nn.EmbeddingBag(feature.num_embeddings, 1, mode=feature.pooling)
        bag.weight.data = model.tokens.weight[base : base + feature.num_embeddings]
        lengths, values = table.sparse[feature.name].gather(rows)
        expected = expected + bag(values, torch.cumsum(lengths, 0) - lengths)[:, 0]
    assert any(f.pooling == "mean" for f in spec.sparse_features())
    torch.testing.assert_close(model(table, rows), expected)


def test_logistic_step_reads_and_penalises_only_the_rows_its_batch_touches(data) -> None:  # type: ignore[no-untyped-def]
    spec, table = data.spec, data.splits["train"]
    model = LogisticRegression(spec)
    design = model.design(table)
    rows = torch.arange(8)
    logistic_loss(model, table, design, rows, l2=1.0).backward()
    grad = model.tokens.weight.grad
    assert grad is not None and grad.is_sparse
    touched = set(grad.coalesce().indices()[0].tolist())
    assert touched == set(design.gather(rows)[1].tolist())
    assert len(touched) < model.tokens.weight.shape[0] // 2


def test_lightgbm_row_budget_keeps_whole_queries() -> None:
    n = 400
    table = ExampleTable(  # each row's label is its index, to see which rows were kept
        {},
        torch.zeros(n, 1),
        torch.arange(n, dtype=torch.float32),
        torch.zeros(n, dtype=torch.int64),
        torch.zeros(n, dtype=torch.int64),
    )
    assert row_budget(table, None) is table and row_budget(table, n) is table
    half = row_budget(table, n // 2, seed=3)
    assert len(half) == n // 2 and bool((half.labels.diff() > 0).all())  # original order
    assert torch.equal(row_budget(table, n // 2, seed=3).labels, half.labels)  # seeded
    assert not torch.equal(row_budget(table, n // 2, seed=4).labels, half.labels)
    groups = row_budget(table, 40, seed=0, group_size=4).labels.view(10, 4).long()  # [10, 4]
    assert bool((groups[:, 0] % 4 == 0).all())
    assert torch.equal(groups - groups[:, :1], torch.arange(4).expand(10, 4))


def test_learned_baselines_run_only_when_enabled(data) -> None:  # type: ignore[no-untyped-def]
    cfg = ExperimentConfig()
    cfg.baselines.lightgbm_rounds = 5
    assert not cfg.baselines.enabled  # the default run spends its time on the model
    assert "logistic_regression" not in builders.baselines(cfg, data)
    assert "item_positive_rate" in builders.baselines(cfg, data)  # non-learned: always
    cfg.baselines.enabled = True
    assert {"logistic_regression", "lightgbm"} <= set(builders.baselines(cfg, data))

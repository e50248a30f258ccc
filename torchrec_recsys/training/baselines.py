"""Learned baselines on the DLRM's split and features, scored with the DLRM's AUC and NE.

The rating rankers' table of a ranking report is the DLRM run's
``summary.json["baselines_test"]``: popularity and item positive rate (non-learned,
``metrics/baselines.py``), logistic regression and LightGBM (``models/tabular.py``), all on
the same test split.
"""

from __future__ import annotations

import time

import torch

from torchrec_recsys.config import BaselineConfig
from torchrec_recsys.data.dataset import RecDataset
from torchrec_recsys.metrics.ranking import auc, normalized_entropy
from torchrec_recsys.models.tabular import (
    fit_lightgbm,
    fit_logistic_regression,
    lightgbm_probabilities,
    logistic_probabilities,
    tabular_layout,
    tabular_matrix,
)


def _scores(probabilities: torch.Tensor, labels: torch.Tensor, seconds: float) -> dict:
    return {
        "auc": auc(probabilities, labels),
        "ne": normalized_entropy(probabilities, labels),
        "fit_seconds": seconds,
    }


def learned_baselines(
    data: RecDataset, options: BaselineConfig, seed: int = 0, split: str = "test"
) -> dict[str, dict[str, object]]:
    """Fit each enabled baseline on ``train`` (``val`` for early stopping), score ``split``."""
    train, val, target = data.splits["train"], data.splits["val"], data.splits[split]
    out: dict[str, dict[str, object]] = {}
    if options.logistic_regression:
        start = time.perf_counter()
        model = fit_logistic_regression(train, data.spec, epochs=options.logistic_epochs, seed=seed)
        probabilities = logistic_probabilities(model, target)
        out["logistic_regression"] = _scores(
            probabilities, target.labels, time.perf_counter() - start
        )
    if options.lightgbm:
        start = time.perf_counter()
        layout = tabular_layout(train, data.spec, options.lightgbm_features)
        booster = fit_lightgbm(
            train,
            val,
            data.spec,
            layout,
            rounds=options.lightgbm_rounds,
            num_leaves=options.lightgbm_num_leaves,
            learning_rate=options.lightgbm_learning_rate,
            seed=seed,
            max_rows=options.lightgbm_max_rows or None,
        )
        probabilities = lightgbm_probabilities(booster, tabular_matrix(target, data.spec, layout))
        out["lightgbm"] = {
            **_scores(probabilities, target.labels, time.perf_counter() - start),
            "rounds": int(getattr(booster, "best_iteration", 0) or booster.current_iteration()),
            "features_used": [*layout.dense, *layout.categorical, *layout.multi_hot],
            "features_skipped": layout.skipped,
            "train_rows": min(len(train), options.lightgbm_max_rows or len(train)),
        }
    return out

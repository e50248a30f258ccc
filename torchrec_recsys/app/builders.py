"""``build_*`` factories: the only code that reads the config; everything else takes types."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.optim.keyed import CombinedOptimizer

from torchrec_recsys.config import ExperimentConfig
from torchrec_recsys.data.book_crossing import load_book_crossing
from torchrec_recsys.data.dataset import ItemTokens, RecDataset, build_dataset, item_texts
from torchrec_recsys.data.movielens import load_movielens_100k
from torchrec_recsys.data.readers import RawData, read_files
from torchrec_recsys.distributed.env import DistContext
from torchrec_recsys.distributed.sharding import shard_model
from torchrec_recsys.metrics.baselines import baseline_aucs, popularity_retrieval
from torchrec_recsys.models.dlrm import build_dlrm
from torchrec_recsys.models.tasks import RankingTask, RetrievalTask
from torchrec_recsys.models.two_tower import TwoTower, item_log_q
from torchrec_recsys.semantic_ids.features import (
    cached_sid_table,
    sid_item_features,
)
from torchrec_recsys.semantic_ids.store import SIDTable, load_sid_table
from torchrec_recsys.training.baselines import LearnedBaselineOptions, learned_baselines
from torchrec_recsys.training.evaluation import RankingEvaluator, RetrievalEvaluator
from torchrec_recsys.training.trainer import Evaluator


def build_raw_data(cfg: ExperimentConfig) -> RawData:
    d = cfg.data
    if d.source == "movielens-100k":
        return load_movielens_100k()
    if d.source == "book-crossing":
        return load_book_crossing()
    return read_files(
        d.interactions_path,
        d.items_path,
        d.users_path,
        item_columns=list(dict.fromkeys([*d.item_text_columns, *d.item_categorical_columns])),
        user_columns=d.user_categorical_columns,
    )


def build_data(cfg: ExperimentConfig) -> RecDataset:
    """The encoded dataset; for the pipeline objective, (query, item) pairs from the
    retriever's candidates (``app/pipeline.py``)."""
    raw = build_raw_data(cfg)
    tokens = ItemTokens(history=cfg.semantic_ids.history)
    if cfg.semantic_ids.enabled:
        tokens.features = build_sid_features(cfg, raw)
    data = build_dataset(raw, cfg.data, cfg.features, tokens)
    if cfg.model.name == "dlrm" and cfg.model.objective == "pipeline":
        from torchrec_recsys.app.pipeline import build_pipeline_data  # loads the retriever

        return build_pipeline_data(cfg, data)
    return data


def build_sid_table(cfg: ExperimentConfig, raw: RawData) -> SIDTable:
    """The configured SID table: read from ``table_path`` or learned (cached) from item text."""
    s = cfg.semantic_ids
    if s.table_path:
        return load_sid_table(s.table_path)
    items = raw.items
    texts = item_texts(items, cfg.data.item_text_columns)
    genres = list(items["genres"]) if "genres" in items.columns else None
    return cached_sid_table(list(items["item_id"]), texts, genres, cfg.semantic_ids)


def build_sid_features(cfg: ExperimentConfig, raw: RawData) -> dict[str, tuple[np.ndarray, int]]:
    s = cfg.semantic_ids
    return sid_item_features(
        build_sid_table(cfg, raw),
        list(raw.items["item_id"]),
        levels=s.levels,
        unigrams=s.unigrams,
        prefixes=s.prefixes,
        prefix_max_rows=s.prefix_max_rows,
        random_codes=s.random_codes,
        seed=cfg.train.seed,
    )


def build_task(
    cfg: ExperimentConfig, data: RecDataset, dense_device: str = "cpu", sparse_device: str = "meta"
) -> nn.Module:
    """The task module (model + loss) with embedding tables on ``meta``, ready for DMP."""
    if cfg.model.name == "two_tower":
        model = TwoTower(data.spec, cfg.model.tower_layers, sparse_device, dense_device)
        log_q = item_log_q(data.items.train_counts).to(dense_device)
        return RetrievalTask(model, log_q, cfg.model.temperature)
    return RankingTask(
        build_dlrm(
            data.spec,
            cfg.model.dense_arch_layers,
            cfg.model.over_arch_layers,
            sparse_device=sparse_device,
            dense_device=dense_device,
            interaction=cfg.model.interaction,
            dcn_num_layers=cfg.model.dcn_num_layers,
            dcn_low_rank_dim=cfg.model.dcn_low_rank_dim,
        )
    )


def build_evaluator(cfg: ExperimentConfig, data: RecDataset, ctx: DistContext) -> Evaluator:
    if cfg.model.name == "two_tower":
        return RetrievalEvaluator(
            data, ctx, cfg.train.eval_batch_size, exclude_train_items=cfg.model.exclude_train_items
        )
    return RankingEvaluator(data, ctx, cfg.train.eval_batch_size)


def baselines(
    cfg: ExperimentConfig, data: RecDataset, learned: bool = True
) -> dict[str, dict[str, float] | float]:
    """Baselines on the test split, in the model's own metrics: non-learned ones, and for the
    DLRM with ``learned`` also logistic regression and LightGBM (``[baselines]`` section)."""
    if cfg.model.name == "two_tower":
        return {
            "popularity": popularity_retrieval(
                data, "test", exclude_train_items=cfg.model.exclude_train_items
            )
        }
    out: dict[str, Any] = dict(baseline_aucs(data, "test"))
    if learned:
        b = cfg.baselines
        options = LearnedBaselineOptions(
            logistic_regression=b.logistic_regression,
            lightgbm=b.lightgbm,
            lightgbm_features=list(b.lightgbm_features),
            lightgbm_rounds=b.lightgbm_rounds,
            lightgbm_num_leaves=b.lightgbm_num_leaves,
            lightgbm_learning_rate=b.lightgbm_learning_rate,
            logistic_epochs=b.logistic_epochs,
            seed=cfg.train.seed,
        )
        out.update(learned_baselines(data, options, "test"))
    return out


def build_sharded(
    cfg: ExperimentConfig, data: RecDataset, ctx: DistContext
) -> tuple[DistributedModelParallel, CombinedOptimizer]:
    """The one build-plan-shard sequence: task on ``meta`` -> planner -> DMP + optimizers."""
    return shard_model(
        build_task(cfg, data, dense_device=str(ctx.device)),
        data.spec.table_names(),
        cfg.sharding,
        cfg.optimizer,
        ctx,
        batch_size=cfg.train.batch_size,
    )

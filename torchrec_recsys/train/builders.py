"""``build_*`` factories: the only code that reads the config; everything else takes types."""

from __future__ import annotations

import numpy as np
from torch import nn

from torchrec_recsys.config import ExperimentConfig
from torchrec_recsys.data.dataset import DatasetOptions, RecDataset, build_dataset, item_texts
from torchrec_recsys.data.movielens import load_movielens_100k
from torchrec_recsys.data.readers import RawData, read_files
from torchrec_recsys.distributed.env import DistContext
from torchrec_recsys.distributed.sharding import OptimizerOptions, ShardingOptions
from torchrec_recsys.metrics.baselines import baseline_aucs, popularity_retrieval
from torchrec_recsys.models.dlrm import RankingTask, build_dlrm
from torchrec_recsys.models.two_tower import RetrievalTask, TwoTower, item_log_q
from torchrec_recsys.semantic_ids.features import (
    SIDSettings,
    cached_sid_table,
    sid_item_features,
)
from torchrec_recsys.semantic_ids.store import SIDTable, load_sid_table
from torchrec_recsys.train.evaluation import RankingEvaluator, RetrievalEvaluator
from torchrec_recsys.train.trainer import Evaluator, LoopOptions


def build_raw_data(cfg: ExperimentConfig) -> RawData:
    d = cfg.data
    if d.source == "movielens-100k":
        return load_movielens_100k()
    return read_files(
        d.interactions_path,
        d.items_path,
        d.users_path,
        item_columns=list(dict.fromkeys([*d.item_text_columns, *d.item_categorical_columns])),
        user_columns=d.user_categorical_columns,
    )


def dataset_options(cfg: ExperimentConfig) -> DatasetOptions:
    d, f = cfg.data, cfg.features
    return DatasetOptions(
        item_categorical_columns=d.item_categorical_columns,
        user_categorical_columns=d.user_categorical_columns,
        multi_value_separator=d.multi_value_separator,
        positive_rating=d.positive_rating,
        split=d.split,
        val_per_user=d.val_per_user,
        test_per_user=d.test_per_user,
        random_val_fraction=d.random_val_fraction,
        random_test_fraction=d.random_test_fraction,
        split_seed=d.split_seed,
        history_length=d.history_length,
        embedding_dim=f.embedding_dim,
        pooling=f.history_pooling,
        use_user_id=f.use_user_id,
        use_item_id=f.use_item_id,
        use_history=f.use_history,
        use_item_popularity=f.use_item_popularity,
        item_text_columns=d.item_text_columns,
        cold_item_fraction=d.cold_item_fraction,
        token_history=cfg.semantic_ids.history,
    )


def build_data(cfg: ExperimentConfig) -> RecDataset:
    raw = build_raw_data(cfg)
    opts = dataset_options(cfg)
    if cfg.semantic_ids.enabled:
        opts.item_token_features = build_sid_features(cfg, raw)
    return build_dataset(raw, opts)


def build_sid_table(cfg: ExperimentConfig, raw: RawData) -> SIDTable:
    """The configured SID table: read from ``table_path`` or learned (cached) from item text."""
    s = cfg.semantic_ids
    if s.table_path:
        return load_sid_table(s.table_path)
    items = raw.items
    texts = item_texts(items, cfg.data.item_text_columns)
    genres = list(items["genres"]) if "genres" in items.columns else None
    return cached_sid_table(list(items["item_id"]), texts, genres, sid_settings(cfg))


def sid_settings(cfg: ExperimentConfig) -> SIDSettings:
    s = cfg.semantic_ids
    return SIDSettings(
        s.method, s.levels, s.codebook_size, s.epochs, s.encoder_dir or None, s.cache_dir
    )


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
        )
    )


def build_evaluator(cfg: ExperimentConfig, data: RecDataset, ctx: DistContext) -> Evaluator:
    if cfg.model.name == "two_tower":
        return RetrievalEvaluator(
            data, ctx, cfg.train.eval_batch_size, exclude_train_items=cfg.model.exclude_train_items
        )
    return RankingEvaluator(data, ctx, cfg.train.eval_batch_size)


def baselines(cfg: ExperimentConfig, data: RecDataset) -> dict[str, dict[str, float] | float]:
    """Non-learned baselines on the test split, in the model's own metrics."""
    if cfg.model.name == "two_tower":
        return {
            "popularity": popularity_retrieval(
                data, "test", exclude_train_items=cfg.model.exclude_train_items
            )
        }
    return dict(baseline_aucs(data, "test"))


def sharding_options(cfg: ExperimentConfig) -> ShardingOptions:
    s = cfg.sharding
    return ShardingOptions(
        default=s.default, per_table=dict(s.per_table), memory_budget_mb=s.memory_budget_mb
    )


def optimizer_options(cfg: ExperimentConfig) -> OptimizerOptions:
    o = cfg.optimizer
    return OptimizerOptions(
        sparse=o.sparse, sparse_lr=o.sparse_lr, dense=o.dense, dense_lr=o.dense_lr
    )


def loop_options(cfg: ExperimentConfig) -> LoopOptions:
    t = cfg.train
    return LoopOptions(
        epochs=t.epochs,
        batch_size=t.batch_size,
        seed=t.seed,
        log_every=t.log_every,
        max_steps_per_epoch=t.max_steps_per_epoch,
        progress_bar=t.progress_bar,
        profile=t.profile,
        keep_last_checkpoints=t.keep_last_checkpoints,
        checkpoint_every_steps=t.checkpoint_every_steps,
    )

"""``build_*`` factories: the only code that reads the config; everything else takes types."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.optim.keyed import CombinedOptimizer

from torchrec_recsys.config import (
    SEQUENCE_MODELS,
    DataConfig,
    ExperimentConfig,
    default_item_columns,
    resolve_pipeline,
)
from torchrec_recsys.data.book_crossing import load_book_crossing
from torchrec_recsys.data.criteo import build_criteo_dataset
from torchrec_recsys.data.dataset import ItemTokens, RecDataset, build_dataset, item_texts
from torchrec_recsys.data.features import ITEM, USER, SparseFeature
from torchrec_recsys.data.movielens import load_movielens_100k
from torchrec_recsys.data.readers import RawData, keep_active_users, read_files
from torchrec_recsys.data.sequences import SequenceFeatures, SequenceSource, build_sequences
from torchrec_recsys.data.shards import ShardSource
from torchrec_recsys.distributed.env import DistContext
from torchrec_recsys.distributed.sharding import shard_model
from torchrec_recsys.errors import DataError, warn_user
from torchrec_recsys.metrics.baselines import (
    baseline_aucs,
    popularity_ranked_list,
    popularity_retrieval,
)
from torchrec_recsys.models.compile import compile_dense
from torchrec_recsys.models.dlrm import build_dlrm
from torchrec_recsys.models.generative import GenerativeRetriever
from torchrec_recsys.models.sasrec import SASRec
from torchrec_recsys.models.tasks import GenerativeTask, NextItemTask, RankingTask, RetrievalTask
from torchrec_recsys.models.two_tower import TwoTower, item_log_q
from torchrec_recsys.semantic_ids.features import (
    cached_sid_table,
    check_table_settings,
    sid_item_features,
)
from torchrec_recsys.semantic_ids.report import code_usage
from torchrec_recsys.semantic_ids.store import SIDTable, load_sid_table
from torchrec_recsys.semantic_ids.tokenizer import (
    SIDTokenizer,
    build_tokenizer,
    random_tokenizer,
    user_tokens,
)
from torchrec_recsys.training.baselines import learned_baselines
from torchrec_recsys.training.evaluation import (
    RankingEvaluator,
    RetrievalEvaluator,
    SequenceEvaluator,
)
from torchrec_recsys.training.trainer import Evaluator


def build_raw_data(cfg: ExperimentConfig) -> RawData:
    """The raw tables of ``cfg.data``'s source, restricted to ``data.min_user_interactions``."""
    return keep_active_users(_read_raw_data(cfg), cfg.data.min_user_interactions)


@functools.lru_cache(maxsize=2)
def _packaged_raw_data(source: str) -> RawData:
    """A dataset shipped in an installed package, read once per process (a run reads it for
    its examples and again for its item text; a comparison trains many runs in one process)."""
    return load_movielens_100k() if source == "movielens-100k" else load_book_crossing()


def _read_raw_data(cfg: ExperimentConfig) -> RawData:
    d = cfg.data
    if d.source in ("movielens-100k", "book-crossing"):
        return _packaged_raw_data(d.source).copy()  # a copy: callers may change theirs
    optional = list(d.item_categorical_columns) if default_item_columns(d) else []
    required = [*d.item_text_columns, *(c for c in d.item_categorical_columns if c not in optional)]
    keys = {
        **{c: "data.item_categorical_columns" for c in d.item_categorical_columns},
        **{c: "data.item_text_columns" for c in d.item_text_columns},
    }
    return read_files(
        d.interactions_path,
        d.items_path,
        d.users_path,
        item_columns=list(dict.fromkeys(required)),
        user_columns=d.user_categorical_columns,
        optional_item_columns=optional,
        column_keys=keys,
    )


def resolve_data_config(cfg: ExperimentConfig, raw: RawData) -> DataConfig:
    """``cfg.data`` as the dataset is built from ``raw``: the default item columns of a files
    source narrowed to those its items table has (said once, as a data warning)."""
    d = cfg.data
    if d.source != "files" or not default_item_columns(d):
        return d
    present = [c for c in d.item_categorical_columns if c in raw.items.columns]
    if present != d.item_categorical_columns:
        absent = [c for c in d.item_categorical_columns if c not in present]
        warn_user(
            f"the items table has no {', '.join(map(repr, absent))} column: the default "
            f"data.item_categorical_columns {list(d.item_categorical_columns)} became "
            f"{present}; set data.item_categorical_columns to choose the item features"
        )
    return dataclasses.replace(d, item_categorical_columns=present)


def build_data(cfg: ExperimentConfig) -> RecDataset:
    """The encoded dataset of ``cfg`` (the pipeline objective's (query, item) pairs are
    built on top of it by ``app.pipeline.build_run_data``)."""
    if cfg.data.source == "criteo":
        return build_criteo_dataset(cfg.data.criteo, cfg.features.embedding_dim)
    if cfg.data.source == "shards":
        return ShardSource(cfg.data.shards_dir, cfg.features.embedding_dim).dataset()
    raw = build_raw_data(cfg)
    tokens = ItemTokens(history=cfg.semantic_ids.history)
    if cfg.semantic_ids.enabled:
        tokens.features = build_sid_features(cfg, raw)
    return build_dataset(raw, resolve_data_config(cfg, raw), cfg.features, tokens)


def build_stream(
    cfg: ExperimentConfig, ctx: DistContext, expected_hash: str | None = None
) -> ShardSource | None:
    """The streamed shards of ``data.source = "shards"`` (None for in-memory sources);
    ``expected_hash``: the vocabulary hash the shards must have (a resumed run's)."""
    if cfg.data.source != "shards":
        return None
    return ShardSource(
        cfg.data.shards_dir,
        cfg.features.embedding_dim,
        workers=cfg.data.loader_workers,
        pin_memory=ctx.device.type == "cuda",
        expected_hash=expected_hash,
    )


def build_sid_table(cfg: ExperimentConfig, read_raw: Callable[[], RawData]) -> SIDTable:
    """The configured SID table: read from ``table_path`` or learned (cached) from the item
    text of ``read_raw()``, called only when the table is learned."""
    s = cfg.semantic_ids
    if s.table_path:
        table = load_sid_table(s.table_path)
        check_table_settings(table, s, repr(s.table_path))
        return table
    items = read_raw().items
    texts = item_texts(items, cfg.data.item_text_columns)
    genres = list(items["genres"]) if "genres" in items.columns else None
    table = cached_sid_table(
        list(items["item_id"]), texts, genres, cfg.semantic_ids, cfg.train.progress_bar
    )
    check_table_settings(table, s, f"learned for [semantic_ids] under {s.cache_dir!r}")
    return table


def build_sid_features(cfg: ExperimentConfig, raw: RawData) -> dict[str, tuple[np.ndarray, int]]:
    s = cfg.semantic_ids
    return sid_item_features(
        build_sid_table(cfg, lambda: raw),
        list(raw.items["item_id"]),
        levels=s.levels,
        unigrams=s.unigrams,
        prefixes=s.prefixes,
        prefix_max_rows=s.prefix_max_rows,
        random_codes=s.random_codes,
        seed=cfg.train.seed,
    )


@dataclass
class SequenceInputs:
    """What the sequence models read besides the RecDataset: sequence examples + tokens."""

    source: SequenceSource
    tokenizer: SIDTokenizer | None = None
    """The generative model's item -> SID-token spelling (None for SASRec)."""
    tables: list[str] = field(default_factory=list)
    """EmbeddingCollection table names (for the sharding constraints)."""


def check_sid_table_shape(table: SIDTable, levels: int, codebook_size: int) -> None:
    """Fail unless ``table`` has at least ``levels`` quantizer levels (+ its collision level)
    of at most ``codebook_size`` codes each, as ``semantic_ids.levels`` / ``codebook_size``
    say.

    Raises:
        DataError: naming the table's shape and the config's.
    """
    quantizer = [int(k) for k in table.codebook_sizes[:-1]]  # the last column: collisions
    if len(quantizer) < levels or max(quantizer[:levels], default=0) > codebook_size:
        raise DataError(
            f"the SID table has {len(quantizer)} quantizer level(s) of sizes {quantizer} + a "
            f"collision level, but the config asks for semantic_ids.levels = {levels} of "
            f"semantic_ids.codebook_size = {codebook_size}: rebuild the table or change them"
        )


def check_cold_items_have_text(data: RecDataset, columns: list[str]) -> None:
    """Fail when an item without training interactions has no text: its learned semantic ID
    would say nothing about it, yet the generative model would recommend it by that ID.

    Raises:
        DataError: naming the first such item.
    """
    cold = torch.nonzero(data.items.train_counts == 0).flatten().tolist()
    empty = [i for i in cold if not data.items.texts[i].strip()]
    if empty:
        more = f" and {len(empty) - 1} other(s)" if len(empty) > 1 else ""
        raise DataError(
            f"item {data.items.item_ids[empty[0]]!r}{more} has no training interactions and no "
            f"text (data.item_text_columns = {columns}): its semantic ID would be meaningless; "
            f"give it text, or set sequence.cold_share = 0 to never recommend cold items"
        )


def build_sequence_tokenizer(cfg: ExperimentConfig, data: RecDataset) -> SIDTokenizer:
    """The configured SID table (``semantic_ids.table_path`` or learned, cached) as tokens of
    the catalogue, optionally replaced by random codes of the same shape (control).

    Raises:
        DataError: the table's shape disagrees with ``[semantic_ids]``, or (learning from
            text, cold items allowed) an item without training interactions has no text.
    """
    q = cfg.sequence
    if not cfg.semantic_ids.table_path and max([q.cold_share, *q.cold_share_grid]) > 0:
        check_cold_items_have_text(data, cfg.data.item_text_columns)
    table = build_sid_table(cfg, lambda: build_raw_data(cfg))  # read only to learn it
    check_sid_table_shape(table, cfg.semantic_ids.levels, cfg.semantic_ids.codebook_size)
    tokenizer = build_tokenizer(table, data.items.item_ids, levels=cfg.semantic_ids.levels)
    if cfg.semantic_ids.random_codes:
        tokenizer = random_tokenizer(tokenizer, seed=cfg.train.seed)
    return tokenizer


def build_sequence_inputs(cfg: ExperimentConfig, data: RecDataset) -> SequenceInputs | None:
    """Sequence examples and token features for ``sasrec`` / ``generative`` (else None)."""
    if cfg.model.name not in SEQUENCE_MODELS:
        return None
    splits = build_sequences(data, cfg.data.history_length)
    dim = cfg.features.embedding_dim
    tokenizer = None
    if cfg.model.name == "sasrec":
        item_ids = data.vocabs["item_id"]
        item_tokens = torch.from_numpy(item_ids.encode(data.items.item_ids))[:, None]  # [I, 1]
        item = SparseFeature("history_items", "t_item_id", item_ids.size, dim, "none", USER)
        features = SequenceFeatures(item, item_tokens)
    else:
        tokenizer = build_sequence_tokenizer(cfg, data)
        item = SparseFeature("history_sid", "t_sid_token", tokenizer.vocab_size, dim, "none", USER)
        features = SequenceFeatures(item, tokenizer.item_tokens())  # [I, L']
        if cfg.sequence.user_token:
            buckets = cfg.sequence.user_buckets
            features.user_feature = SparseFeature(
                "user_token", "t_user_token", buckets + 1, dim, "none", USER
            )
            features.user_tokens = user_tokens(data.user_ids, buckets)  # [U]
    tables = list(dict.fromkeys(f.table for f in features.features()))
    return SequenceInputs(SequenceSource(splits, features), tokenizer, tables)


def sid_code_usage(cfg: ExperimentConfig, sequences: SequenceInputs | None) -> dict | None:
    """The generative run's SID codes as its decoder sees them (random codes included):
    utilisation, perplexity and collision rate of the ``semantic_ids.levels`` quantizer levels,
    and the size of the collision level after them (None without one); None for other
    models."""
    if sequences is None or sequences.tokenizer is None:
        return None
    tokenizer, levels = sequences.tokenizer, cfg.semantic_ids.levels
    usage = code_usage(tokenizer.codes[:, :levels], tokenizer.sizes[:levels])  # [I, L]
    extra = tokenizer.sizes[levels] if tokenizer.levels > levels else None
    return {**usage, "collision_level_size": extra}


def build_sequence_model(
    cfg: ExperimentConfig,
    data: RecDataset,
    sequences: SequenceInputs,
    dense_device: str = "cpu",
    sparse_device: str = "meta",
) -> SASRec | GenerativeRetriever:
    q = cfg.sequence
    features = sequences.source.features
    if cfg.model.name == "sasrec":
        return SASRec(
            features.item_feature,
            len(data.items),
            q.max_history,
            q.layers,
            q.heads,
            q.ff_dim,
            q.dropout,
            sparse_device,
            dense_device,
        )
    assert sequences.tokenizer is not None
    return GenerativeRetriever(
        features.item_feature,
        features.user_feature,
        features.item_tokens,
        sequences.tokenizer.sizes,
        q.max_history,
        q.layers,
        q.heads,
        q.ff_dim,
        q.dropout,
        q.beam_width,
        sparse_device,
        dense_device,
        input_mode=q.generative_input,
        cold_items=data.items.train_counts == 0,
        cold_share=q.cold_share,
        top_k=q.top_k,
    )


def build_task(
    cfg: ExperimentConfig,
    data: RecDataset,
    dense_device: str = "cpu",
    sparse_device: str = "meta",
    sequences: SequenceInputs | None = None,
) -> nn.Module:
    """The task module (model + loss) with embedding tables on ``meta``, ready for DMP."""
    task: nn.Module
    if cfg.model.name in SEQUENCE_MODELS:
        if sequences is None:
            sequences = build_sequence_inputs(cfg, data)
        assert sequences is not None
        model = build_sequence_model(cfg, data, sequences, dense_device, sparse_device)
        if isinstance(model, SASRec):
            return NextItemTask(model)
        return GenerativeTask(model)
    if cfg.model.name == "two_tower":
        model = TwoTower(data.spec, cfg.model.tower_layers, sparse_device, dense_device)
        log_q = item_log_q(data.items.train_counts).to(dense_device)
        task = RetrievalTask(model, log_q, cfg.model.temperature)
    else:
        task = RankingTask(
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
    if cfg.model.compile:
        compile_dense(task)
    return task


def build_evaluator(
    cfg: ExperimentConfig,
    data: RecDataset,
    ctx: DistContext,
    sequences: SequenceInputs | None = None,
    stream: ShardSource | None = None,
) -> Evaluator:
    if sequences is not None:
        return SequenceEvaluator(
            sequences.source,
            data,
            ctx,
            cfg.train.eval_batch_size,
            depth=cfg.sequence.beam_width if cfg.model.name == "generative" else None,
            exclude_train_items=cfg.model.exclude_train_items,
        )
    pipelined = resolve_pipeline(cfg) == "sparse_dist"  # TorchRec's eval pipeline too
    if cfg.model.name == "two_tower":
        return RetrievalEvaluator(
            data,
            ctx,
            cfg.train.eval_batch_size,
            exclude_train_items=cfg.model.exclude_train_items,
            pipelined=pipelined,
        )
    return RankingEvaluator(
        data,
        ctx,
        cfg.train.eval_batch_size,
        pipelined=pipelined,
        batches=stream.eval_batches if stream is not None else None,
    )


def baselines(
    cfg: ExperimentConfig, data: RecDataset, learned: bool = True
) -> dict[str, dict[str, float] | float]:
    """Baselines on the test split, in the model's own metrics: non-learned ones, and for the
    DLRM with ``learned`` and ``baselines.enabled`` also logistic regression and LightGBM
    (``[baselines]`` section).
    None for streamed shards (the baselines fit and score in-memory splits)."""
    if cfg.data.source == "shards":
        return {}
    if cfg.model.name in SEQUENCE_MODELS:
        return {
            "popularity": popularity_ranked_list(
                data, "test", exclude_train_items=cfg.model.exclude_train_items
            )
        }
    if cfg.model.name == "two_tower":
        return {
            "popularity": popularity_retrieval(
                data, "test", exclude_train_items=cfg.model.exclude_train_items
            )
        }
    out: dict[str, Any] = dict(baseline_aucs(data, "test"))
    if learned and cfg.baselines.enabled:
        out.update(learned_baselines(data, cfg.baselines, cfg.train.seed, "test"))
    return out


def build_sharded(
    cfg: ExperimentConfig,
    data: RecDataset,
    ctx: DistContext,
    sequences: SequenceInputs | None = None,
) -> tuple[DistributedModelParallel, CombinedOptimizer]:
    """The one build-plan-shard sequence: task on ``meta`` -> planner -> DMP + optimizers."""
    return shard_model(
        build_task(cfg, data, dense_device=str(ctx.device), sequences=sequences),
        sequences.tables if sequences is not None else data.spec.table_names(),
        cfg.sharding,
        cfg.optimizer,
        ctx,
        batch_size=cfg.train.batch_size,
    )


def check_data(
    cfg: ExperimentConfig, data: RecDataset, world_size: int, stream: ShardSource | None = None
) -> None:
    """Fail when a split the run needs is empty or training would run 0 steps.

    Also fails when the ranker's training labels are all one class, and warns when the
    test labels are (AUC is then undefined). Streamed shards: the split sizes only.

    Raises:
        DataError: saying how many examples each split got and why one is unusable.
    """
    if stream is not None:
        _check_stream(cfg, stream, world_size)
        return
    d = cfg.data
    _check_towers(cfg, data)
    sizes = {name: len(table) for name, table in data.splits.items()}
    counts = f"train={sizes['train']}, val={sizes['val']}, test={sizes['test']} examples"
    held = d.val_per_user + d.test_per_user
    most = int(data.users.train_items.lengths.max()) if len(data.user_ids) else 0
    if d.split == "temporal":
        why_empty = (
            f"data.split = 'temporal' holds out the latest interactions only of users with "
            f"more than data.val_per_user + data.test_per_user = {held} interactions, and the "
            f"most any user has in training is {most}"
        )
    else:
        why_empty = (
            f"data.random_val_fraction = {d.random_val_fraction} and data.random_test_fraction "
            f"= {d.random_test_fraction} drew none of the {sum(sizes.values())} examples"
        )
    if not sizes["train"]:
        why = why_empty
        cold = int(data.items.cold.sum())
        if d.cold_item_fraction > 0:
            why = (
                f"data.cold_item_fraction = {d.cold_item_fraction} dropped the training "
                f"interactions of {cold} of {len(data.items)} items"
            )
        raise DataError(f"the training split is empty ({counts}): {why}")
    global_batch = cfg.train.batch_size * world_size
    if sizes["train"] < global_batch:
        raise DataError(
            f"the training split has {sizes['train']} examples, fewer than one global batch of "
            f"train.batch_size x processes = {cfg.train.batch_size} x {world_size} = "
            f"{global_batch}, so the run would train 0 steps ({counts}); lower "
            f"train.batch_size or use more data"
        )
    if not sizes["test"]:
        raise DataError(f"the test split is empty ({counts}): {why_empty}")
    wants_val = d.val_per_user > 0 if d.split == "temporal" else d.random_val_fraction > 0
    if wants_val and not sizes["val"]:
        raise DataError(f"the validation split is empty ({counts}): {why_empty}")
    if cfg.model.name != "dlrm":
        return
    for split in ("train", "test"):
        labels = data.splits[split].labels
        if bool((labels == labels[0]).all()):
            side = ">=" if float(labels[0]) == 1 else "<"
            message = (
                f"every {split} label is {int(labels[0])}: all {len(labels)} {split} ratings "
                f"are {side} data.positive_rating = {d.positive_rating}"
            )
            if split == "train":
                raise DataError(f"{message}; the ranker cannot learn from one class")
            warn_user(f"{message}; test AUC is undefined (reported as 0.5)")


def _check_stream(cfg: ExperimentConfig, stream: ShardSource, world_size: int) -> None:
    counts = ", ".join(f"{split}={stream.rows(split)}" for split in ("train", "val", "test"))
    where = f"the shards in {cfg.data.shards_dir!r} ({counts} examples)"
    global_batch = cfg.train.batch_size * world_size
    if len(stream) < global_batch:
        raise DataError(
            f"{where} have fewer training examples than one global batch of train.batch_size "
            f"x processes = {cfg.train.batch_size} x {world_size} = {global_batch}: lower "
            f"train.batch_size or preprocess more data"
        )
    if not stream.rows("test"):
        raise DataError(
            f"{where} have no test examples: preprocess data with a test split "
            f"(data.criteo.test_fraction, data.test_per_user or data.random_test_fraction)"
        )


def _check_towers(cfg: ExperimentConfig, data: RecDataset) -> None:
    """The model needs sparse features: DLRM at least one, the two-tower one per tower."""
    sources = {
        USER: "features.use_user_id, features.use_history and data.user_categorical_columns",
        ITEM: "features.use_item_id and data.item_categorical_columns",
    }
    towers = (USER, ITEM) if cfg.model.name == "two_tower" else (None,)
    for tower in towers:
        if data.spec.sparse_names(tower):
            continue
        where = sources[tower] if tower else " / ".join(sources.values())
        side = f"the {tower} tower has" if tower else "there are"
        raise DataError(
            f"model.name = {cfg.model.name!r} needs sparse features, but {side} none: "
            f"turn on some of {where}"
        )

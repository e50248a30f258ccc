"""The pipeline ranker's data: (query, item) pairs labelled by the retrieval target.

    retriever run (two-tower, same [data] section) -> query + item embeddings per split
      -> retriever top-K per query (user's training items dropped)      retrieval/candidates.py
      (queries: every training interaction, or with pipeline_train_split = "val" the
       validation interactions the retriever never saw, split into ranker train / val)
      -> per query: the target (label 1) + hard negatives from the top K
         + popularity-sampled negatives (label 0)
      (with pipeline_last_per_user = N: only each user's last N training interactions)
      -> retrieval.candidates.pipeline_pairs: DLRM pair features (RecDataset.pair_table)
         + [retrieval score, rank / K] + context features (data/context.py)

The result is a :class:`RecDataset` whose splits are those pairs, whose ``context`` holds
the training statistics the context features read and whose FeatureSpec has the extra dense
features, so the DLRM, the trainer, the evaluator and the checkpoints work on it unchanged.
Rank 0 computes the pairs and broadcasts them (the loaded retriever lives on rank 0 only).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.distributed as dist

from torchrec_recsys.app import builders
from torchrec_recsys.app.trained import TrainedModel, load_trained, read_run_config
from torchrec_recsys.config import ExperimentConfig
from torchrec_recsys.data.context import PairContext, build_pair_context
from torchrec_recsys.data.dataset import ExampleTable, RecDataset
from torchrec_recsys.data.features import DenseFeature, FeatureSpec
from torchrec_recsys.distributed.env import DistContext, init_distributed
from torchrec_recsys.errors import UserError
from torchrec_recsys.retrieval.candidates import (
    RANK_FEATURE_NAMES,
    Candidates,
    pair_retrieval_features,
    pipeline_pairs,
    retrieval_features,
    retrieve_candidates,
    sample_negatives,
)
from torchrec_recsys.retrieval.predict import predict

PAIR = "pair"
"""Tower of the retrieval features: they describe a (query, item) pair, neither side alone."""
POPULARITY_EXPONENT = 0.75


def pipeline_spec(spec: FeatureSpec, context: PairContext | None) -> FeatureSpec:
    """``spec`` plus the two retrieval dense features and ``context``'s features."""
    names = [*RANK_FEATURE_NAMES, *(context.feature_names if context is not None else [])]
    extra = tuple(DenseFeature(name, PAIR) for name in names)
    return FeatureSpec(sparse=spec.sparse, dense=(*spec.dense, *extra))


def pair_context(cfg: ExperimentConfig, base: RecDataset) -> PairContext | None:
    """The context statistics of ``base``'s training split (None when switched off); the
    attributes compared with the user's history are the configured item columns."""
    if not cfg.model.context_features:
        return None
    keys = [f"item_{c}" for c in cfg.data.item_categorical_columns]
    return build_pair_context(base, [k for k in keys if k in base.items.sparse])


def has_retrieval_features(spec: FeatureSpec) -> bool:
    return RANK_FEATURE_NAMES[0] in spec.dense_names()


def check_same_data(
    retriever: RecDataset, ranker: RecDataset, where: str, splits: bool = True
) -> None:
    """Fail unless both datasets have the same catalogue, users, item vocabulary and (with
    ``splits``; a pipeline ranker's splits are pairs, checked when it was built) splits.

    Raises:
        UserError: naming what differs.
    """
    problems = []
    if retriever.items.item_ids != ranker.items.item_ids:
        problems.append("item catalogue")
    if retriever.user_ids != ranker.user_ids:
        problems.append("users")
    if retriever.vocabs["item_id"].tokens != ranker.vocabs["item_id"].tokens:
        problems.append("item-id vocabulary")
    for name, table in retriever.splits.items() if splits else []:
        other = ranker.splits.get(name)
        if other is None or not torch.equal(table.item_rows, other.item_rows):
            problems.append(f"{name} split")
    if problems:
        raise UserError(
            f"{where}: the retriever and the ranker were built from different data "
            f"({', '.join(problems)} differ): train both with the same [data] section"
        )


def load_retriever_for(cfg: ExperimentConfig, base: RecDataset) -> TrainedModel:
    """The ranker's configured retriever run, checked to be a two-tower on the same data."""
    run = Path(cfg.model.retriever_run)
    retriever_cfg = read_run_config(run)
    if retriever_cfg.model.name != "two_tower":
        raise UserError(
            f"model.retriever_run {str(run)!r} trained a {retriever_cfg.model.name!r} model; "
            f"the pipeline objective needs a two_tower retriever"
        )
    if retriever_cfg.data != cfg.data:
        differ = [
            f.name
            for f in dataclasses.fields(cfg.data)
            if getattr(cfg.data, f.name) != getattr(retriever_cfg.data, f.name)
        ]
        raise UserError(
            f"model.retriever_run {str(run)!r} was trained on another split or data "
            f"(data.{', data.'.join(differ)} differ): use the same [data] section"
        )
    same = retriever_cfg.features == cfg.features and retriever_cfg.semantic_ids == cfg.semantic_ids
    retriever = load_trained(run, init_distributed(), data=base if same else None)
    check_same_data(retriever.data, base, f"model.retriever_run {str(run)!r}")
    return retriever


def build_pipeline_data(cfg: ExperimentConfig, base: RecDataset) -> RecDataset:
    """The pairs dataset of the pipeline objective (collective: every rank calls it)."""
    retriever = load_retriever_for(cfg, base)
    context = pair_context(cfg, base)  # deterministic: every rank builds the same
    with_context = dataclasses.replace(base, context=context)
    payload: list[object] = [None]
    if retriever.task is not None:  # rank 0
        payload[0] = _all_pairs(cfg, retriever, with_context)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast_object_list(payload, src=0)
    splits = payload[0]
    assert isinstance(splits, dict)
    return dataclasses.replace(with_context, spec=pipeline_spec(base.spec, context), splits=splits)


def query_candidates(
    retriever: TrainedModel, table: ExampleTable, k: int
) -> tuple[torch.Tensor, torch.Tensor, Candidates]:
    """Query embeddings [N, D], item embeddings [I, D] and the top-``k`` candidates of every
    example of ``table`` (its user's training items dropped)."""
    data = retriever.data
    queries = predict(retriever.task, table, data, "query")  # [N, D]
    items = predict(retriever.task, data.catalogue_table(), data, "item")  # [I, D]
    found = retrieve_candidates(
        queries, items, table.item_rows, k, data.users.train_items, table.user_rows
    )
    return queries, items, found


def _all_pairs(
    cfg: ExperimentConfig, retriever: TrainedModel, base: RecDataset
) -> dict[str, ExampleTable]:
    m = cfg.model
    generator = torch.Generator().manual_seed(cfg.train.seed)
    weights = base.items.train_counts.double() ** POPULARITY_EXPONENT  # [I]
    sources = dict(base.splits)
    if m.pipeline_train_split == "val":
        # the ranker learns from queries the retriever never saw: validation, split by query
        # (a fixed draw, independent of train.seed, so every seed sees the same parts)
        val = base.splits["val"]
        order = torch.randperm(len(val), generator=torch.Generator().manual_seed(0))
        held = int(round(len(val) * m.pipeline_val_fraction))
        sources["train"] = val.select(order[held:].sort().values)
        sources["val"] = val.select(order[:held].sort().values)
    elif m.pipeline_last_per_user:
        sources["train"] = last_per_user(base.splits["train"], m.pipeline_last_per_user)
    out = {}
    for name, table in sources.items():
        if not len(table):
            out[name] = _pairs(
                base, table, torch.zeros(0, 1, dtype=torch.int64), torch.zeros(0, 1, 2)
            )
            continue
        queries, items, found = query_candidates(retriever, table, m.candidates)
        negatives = sample_negatives(
            found,
            table.item_rows,
            m.hard_negatives,
            m.random_negatives,
            weights,
            base.users.train_items,
            table.user_rows,
            generator,
        )  # [N, h + r]
        positive = retrieval_features(found.target_scores, found.target_ranks, m.candidates)
        negative = pair_retrieval_features(queries, items, found, negatives)  # [N, h + r, 2]
        pair_items = torch.cat([table.item_rows[:, None], negatives], dim=1)  # [N, 1 + h + r]
        features = torch.cat([positive[:, None, :], negative], dim=1)  # [N, 1 + h + r, 2]
        out[name] = _pairs(base, table, pair_items, features)
    return out


def _pairs(
    base: RecDataset, table: ExampleTable, pair_items: torch.Tensor, features: torch.Tensor
) -> ExampleTable:
    """Pairs table: query i with each of ``pair_items[i]`` (first = the positive)."""
    n, m = pair_items.shape
    user_index = torch.arange(n).repeat_interleave(m)  # [N * M]
    pairs = pipeline_pairs(base, table, user_index, pair_items.reshape(-1), features.reshape(-1, 2))
    labels = torch.zeros(n, m)
    labels[:, 0] = 1.0
    pairs.labels = labels.reshape(-1)
    return pairs


def last_per_user(table: ExampleTable, n: int) -> ExampleTable:
    """The examples among each user's last ``n`` in ``table`` (by time; ties by row order)."""
    times = table.times if table.times is not None else torch.arange(len(table)).double()
    order = torch.sort(times, stable=True).indices
    order = order[torch.sort(table.user_rows[order], stable=True).indices]  # user, then time
    users = table.user_rows[order]
    counts = torch.bincount(users)
    ends = torch.cumsum(counts, 0)[users]  # [N] end of each example's user block
    keep = (ends - torch.arange(len(order))) <= n  # within the last n of its user
    return table.select(order[keep].sort().values)


def build_run_data(cfg: ExperimentConfig) -> RecDataset:
    """The dataset a run of ``cfg`` trains on: the encoded data, and for the pipeline
    objective the (query, candidate) pairs built from its retriever (collective)."""
    data = builders.build_data(cfg)
    if cfg.model.name == "dlrm" and cfg.model.objective == "pipeline":
        return build_pipeline_data(cfg, data)
    return data


def load_ranker(run: str | Path, ctx: DistContext, base: RecDataset | None = None) -> TrainedModel:
    """A trained DLRM run of either objective (``base``: the encoded data, when known to be
    the run's own, spares rebuilding it)."""
    cfg = read_run_config(Path(run))
    if cfg.model.objective == "pipeline":
        base = base if base is not None else builders.build_data(cfg)
        return load_trained(run, ctx, data=build_pipeline_data(cfg, base))
    return load_trained(run, ctx, data=base)

"""Evaluation of a split, identical on every rank: ranking (loss, AUC, NE), retrieval
(Recall@K, NDCG@K over the whole catalogue) and sequence models' ranked lists (Recall, NDCG,
MRR, coverage, cold-item recall, invalid generations).

The DLRM's and the two-tower's batches run through TorchRec's ``EvalPipelineSparseDist``
when ``pipelined`` (the trainer's ``train.pipeline = "sparse_dist"``): batch i+1's copy to
the device (in a background thread) and embedding input all-to-all overlap batch i's
forward. Otherwise, and for the sequence models (not FX-traceable), a plain loop calls the
model. Both give bit-equal metrics (``tests/training/test_eval_pipeline.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torchrec.distributed.train_pipeline import EvalPipelineSparseDist

from torchrec_recsys.data.batch import Batch
from torchrec_recsys.data.dataset import ExampleTable, RecDataset
from torchrec_recsys.data.features import FeatureSpec
from torchrec_recsys.data.loader import ShardInfo, eval_batches
from torchrec_recsys.data.sequences import SequenceSource
from torchrec_recsys.distributed.env import DistContext
from torchrec_recsys.metrics.ranking import RankingMetrics
from torchrec_recsys.metrics.retrieval import (
    exclusion_mask,
    list_ranks,
    long_tail_mask,
    rank_metrics,
    ranked_list_metrics,
    ranks_and_top_k,
)

EvalBatches = Callable[[str, int, ShardInfo], Iterable[Batch]]
"""``(split, batch_size, shard) -> this rank's padded evaluation batches`` (every rank the
same number of steps; padding rows have weight 0)."""


class _NoStep(torch.optim.Optimizer):
    """The optimizer TorchRec's eval pipeline asks for and never steps."""

    def __init__(self) -> None:
        super().__init__([torch.zeros(1, requires_grad=True)], {})

    def step(self, closure: Any = None) -> None:
        raise AssertionError("an evaluation pipeline never steps its optimizer")


def model_outputs(
    model: nn.Module, batches: Iterable[Batch], device: torch.device, pipelined: bool
) -> Iterator[Any]:
    """``model(batch)[1]`` for every batch, in order: through ``EvalPipelineSparseDist`` when
    ``pipelined`` (``model`` must be FX-traceable around its sharded modules), else a plain
    loop. The pipeline is detached at the end, so the model's own forward is back.

    Call under ``torch.no_grad()``.
    """
    if not pipelined:
        for batch in batches:
            yield model(batch.to(device))[1]
        return
    pipeline = EvalPipelineSparseDist(model, _NoStep(), device)
    iterator = iter(batches)
    try:
        while True:
            try:
                yield pipeline.progress(iterator)
            except StopIteration:
                return
    finally:
        pipeline.reset()  # stops the batch-loading thread
        pipeline.detach()


def table_eval_batches(data: RecDataset) -> EvalBatches:
    """:data:`EvalBatches` over ``data``'s in-memory splits."""

    def batches(split: str, batch_size: int, shard: ShardInfo) -> Iterator[Batch]:
        return eval_batches(data.splits[split], data.spec, batch_size, shard)

    return batches


class RankingEvaluator:
    """Callable ``(model, split) -> {"loss", "auc", "ne"}`` for a ranking task module.

    Batches come from ``batches`` (default: ``data``'s in-memory splits; the shards source
    streams them); with ``pipelined`` they run through TorchRec's eval pipeline.
    """

    def __init__(
        self,
        data: RecDataset,
        ctx: DistContext,
        batch_size: int,
        pipelined: bool = False,
        batches: EvalBatches | None = None,
    ) -> None:
        self.data = data
        self.ctx = ctx
        self.batch_size = batch_size
        self.pipelined = pipelined
        self.batches = batches if batches is not None else table_eval_batches(data)

    @torch.no_grad()
    def __call__(self, model: nn.Module, split: str) -> dict[str, float]:
        metrics = RankingMetrics(
            self.ctx.world_size, self.ctx.rank, self.batch_size, self.ctx.device
        )
        loss_sum = torch.zeros(2, dtype=torch.float64, device=self.ctx.device)  # [sum, weight]
        was_training = model.training
        model.eval()
        shard = ShardInfo(self.ctx.rank, self.ctx.world_size)
        batches = self.batches(split, self.batch_size, shard)
        for loss, logits, labels, weights in model_outputs(
            model, batches, self.ctx.device, self.pipelined
        ):
            metrics.update(logits, labels, weights)
            loss_sum += torch.stack([loss.double() * weights.sum(), weights.sum().double()])
        model.train(was_training)
        dist.all_reduce(loss_sum)
        return {"loss": float(loss_sum[0] / loss_sum[1].clamp(min=1)), **metrics.compute()}


def unwrap(model: nn.Module) -> nn.Module:
    """The task module inside DistributedModelParallel (or ``model`` itself)."""
    return getattr(model, "module", model)


class TowerSide(nn.Module):
    """One side of a two-tower model as a task-shaped module: ``forward(batch)`` returns
    ``(placeholder loss, embeddings [B, D])``, which TorchRec's eval pipeline can trace."""

    def __init__(self, tower_model: nn.Module, side: str) -> None:
        super().__init__()
        self.tower_model = tower_model
        self.query = side == "query"

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        query, item = self.tower_model(batch.dense_features, batch.sparse_features)  # [B, D]
        return query.new_zeros(()), query if self.query else item


@torch.no_grad()
def embed_table(
    model: nn.Module,
    table: ExampleTable,
    spec: FeatureSpec,
    ctx: DistContext,
    batch_size: int,
    side: str,
    pipelined: bool = False,
) -> torch.Tensor:
    """Query (``side="query"``) or item embeddings of every row of ``table``, on every rank.

    Collective: each rank embeds its shard of every global batch (through TorchRec's eval
    pipeline when ``pipelined``), then the shards are all-gathered and put back in row
    order. Returns [len(table), D] on CPU.
    """
    encoder = TowerSide(unwrap(model).model, side)
    shard = ShardInfo(ctx.rank, ctx.world_size)
    batches = eval_batches(table, spec, batch_size, shard)
    local = list(model_outputs(encoder, batches, ctx.device, pipelined))  # [B, D] each
    mine = torch.cat(local)  # [steps * B, D]
    gathered = [torch.empty_like(mine) for _ in range(ctx.world_size)]
    dist.all_gather(gathered, mine)
    steps, dim = len(local), mine.shape[1]
    ordered = torch.stack(gathered).view(ctx.world_size, steps, batch_size, dim)
    return ordered.transpose(0, 1).reshape(-1, dim)[: len(table)].cpu()  # [N, D]


class RetrievalEvaluator:
    """Callable ``(model, split) -> {"recall@K", "ndcg@K", "hr@K", "map@K", "mrr",
    "coverage@10", "cold_recall@10", ...}`` for a two-tower task module (the list metrics of
    :class:`SequenceEvaluator` too, for comparison).

    Queries are the split's examples (user features as of that interaction); the corpus is
    every catalogue item; each user's training items are excluded from the ranking.
    """

    def __init__(
        self,
        data: RecDataset,
        ctx: DistContext,
        batch_size: int,
        ks: tuple[int, ...] = (10, 50, 100),
        exclude_train_items: bool = True,
        pipelined: bool = False,
    ) -> None:
        self.exclude_train_items = exclude_train_items
        self.pipelined = pipelined
        self.data = data
        self.ctx = ctx
        self.batch_size = batch_size
        self.ks = ks

    def embeddings(self, model: nn.Module, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Query embeddings of ``split`` [N, D] and item embeddings of the catalogue [I, D]."""
        was_training = model.training
        model.eval()
        items = embed_table(
            model,
            self.data.catalogue_table(),
            self.data.spec,
            self.ctx,
            self.batch_size,
            side="item",
            pipelined=self.pipelined,
        )
        queries = embed_table(
            model,
            self.data.splits[split],
            self.data.spec,
            self.ctx,
            self.batch_size,
            side="query",
            pipelined=self.pipelined,
        )
        model.train(was_training)
        return queries, items

    def __call__(self, model: nn.Module, split: str) -> dict[str, float]:
        queries, items = self.embeddings(model, split)
        table = self.data.splits[split]
        exclude = self.data.users.train_items if self.exclude_train_items else None
        ranks, _, top, _ = ranks_and_top_k(  # [N], top 10 rows [N, 10]: one scoring pass
            queries, items, table.item_rows, 10, exclude, table.user_rows
        )
        cold = self.data.items.cold[table.item_rows]
        tail = long_tail_mask(self.data.items.train_counts[table.item_rows], cold)
        lists = ranked_list_metrics(
            ranks, top, len(items), len(items), cold, recall_ks=(5, 20), tail=tail
        )
        return {**rank_metrics(ranks, self.ks), **lists}


def gather_in_order(
    mine: torch.Tensor, steps: int, batch_size: int, ctx: DistContext
) -> torch.Tensor:
    """All ranks' per-step shards [steps * B, ...] back in global example order, on every rank.

    Rank r held rows ``[r * B, (r + 1) * B)`` of every global batch (``data.loader.eval_rows``).
    Collective. Returns [steps * B * world, ...] (the caller trims the padding).
    """
    gathered = [torch.empty_like(mine) for _ in range(ctx.world_size)]
    dist.all_gather(gathered, mine.contiguous())
    tail = mine.shape[1:]
    ordered = torch.stack(gathered).view(ctx.world_size, steps, batch_size, *tail)
    return ordered.transpose(0, 1).reshape(-1, *tail)


class SequenceEvaluator:
    """Callable ``(model, split) -> metrics`` for the sequence models (SASRec, generative).

    Every rank ranks its shard of the split's examples with the model's ``rank_items`` (the
    generative model: constrained beam search of width ``depth``; SASRec: every item), with
    each user's training items excluded exactly as the two-tower evaluation does; then ranks
    are gathered and scored with ``metrics.retrieval.ranked_list_metrics``. For a generative
    model it also counts generated tuples that name no item (``invalid_rate``), checked
    against the item table, not the trie.
    """

    def __init__(
        self,
        source: SequenceSource,
        data: RecDataset,
        ctx: DistContext,
        batch_size: int,
        depth: int | None = None,
        exclude_train_items: bool = True,
    ) -> None:
        self.source = source
        self.data = data
        self.ctx = ctx
        self.batch_size = batch_size
        self.num_items = len(data.items)
        self.depth = depth or self.num_items
        self.exclude = data.users.train_items if exclude_train_items else None

    @torch.no_grad()
    def __call__(self, model: nn.Module, split: str) -> dict[str, float]:
        return self._evaluate(model, split, None)[None]

    @torch.no_grad()
    def by_cold_share(
        self, model: nn.Module, split: str, shares: list[float]
    ) -> dict[float, dict[str, float]]:
        """The metrics of a generative model at each cold-item share of ``shares``, from one
        pass over ``split`` (``GenerativeRetriever.generate_by_cold_share``): equal to
        setting ``cold_share`` to each value and calling the evaluator."""
        return self._evaluate(model, split, shares)

    def _evaluate(
        self, model: nn.Module, split: str, shares: list[float] | None
    ) -> dict[Any, dict[str, float]]:
        """Metrics per cold share (key None: the model's own setting)."""
        ranker = unwrap(model).model
        was_training = model.training
        model.eval()
        shard = ShardInfo(self.ctx.rank, self.ctx.world_size)
        keys: list[float | None] = [None] if shares is None else list(shares)
        ranks: dict[Any, list[torch.Tensor]] = {key: [] for key in keys}
        tops: dict[Any, list[torch.Tensor]] = {key: [] for key in keys}
        invalid: dict[Any, list[torch.Tensor]] = {key: [] for key in keys}
        for batch in self.source.eval_batches(split, self.batch_size, shard):
            batch = batch.to(self.ctx.device)
            mask = exclusion_mask(self.exclude, batch.user_rows, batch.targets, self.num_items)
            if shares is not None:
                lists = ranker.generate_by_cold_share(
                    batch.sparse_features, shares, mask, self.depth
                )
            elif hasattr(ranker, "generate"):
                lists = {None: ranker.generate(batch.sparse_features, mask, self.depth)}
            else:
                lists = {None: (*ranker.rank_items(batch.sparse_features, mask, self.depth), None)}
            for key, (items, scores, tokens) in lists.items():
                if tokens is not None:
                    invalid[key].append(_invalid_tuples(tokens, scores, ranker.item_tokens))
                ranks[key].append(list_ranks(items, batch.targets))  # [B]
                tops[key].append(items[:, :10])  # [B, 10]
        model.train(was_training)
        return {key: self._metrics(split, ranks[key], tops[key], invalid[key]) for key in keys}

    def _metrics(
        self,
        split: str,
        ranks: list[torch.Tensor],
        tops: list[torch.Tensor],
        invalid: list[torch.Tensor],
    ) -> dict[str, float]:
        """Ranked-list metrics of this rank's batches, gathered over every rank."""
        n = len(self.source.splits[split])
        steps = len(ranks)
        all_ranks = gather_in_order(torch.cat(ranks), steps, self.batch_size, self.ctx)[:n]
        all_tops = gather_in_order(torch.cat(tops), steps, self.batch_size, self.ctx)[:n]
        targets = self.source.splits[split].targets
        cold = self.data.items.cold[targets]
        tail = long_tail_mask(self.data.items.train_counts[targets], cold)
        out = ranked_list_metrics(
            all_ranks.cpu(), all_tops.cpu(), self.depth, self.num_items, cold, tail=tail
        )
        if invalid:
            counts = torch.stack(invalid).sum(dim=0).double()  # [2] = invalid, generated
            dist.all_reduce(counts)
            out["invalid_rate"] = float(counts[0] / counts[1].clamp(min=1))
        return out


def _invalid_tuples(
    tokens: torch.Tensor, scores: torch.Tensor, item_tokens: torch.Tensor
) -> torch.Tensor:
    """[invalid, generated] counts: finite-score beams whose token tuple is no item's."""
    base = int(item_tokens.max()) + 1
    weights = base ** torch.arange(tokens.shape[-1] - 1, -1, -1, device=tokens.device)  # [L']
    keys = (tokens * weights).sum(-1)  # [B, W]
    valid_keys = (item_tokens * weights).sum(-1)  # [I]
    generated = torch.isfinite(scores)
    bad = generated & ~torch.isin(keys, valid_keys)
    return torch.stack([bad.sum(), generated.sum()])

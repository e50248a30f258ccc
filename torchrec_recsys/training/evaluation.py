"""Evaluation of a split, identical on every rank: ranking (loss, AUC, NE) and retrieval
(Recall@K, NDCG@K over the whole catalogue)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from torchrec_recsys.data.dataset import ExampleTable, RecDataset
from torchrec_recsys.data.features import FeatureSpec
from torchrec_recsys.data.loader import ShardInfo, eval_batches
from torchrec_recsys.distributed.env import DistContext
from torchrec_recsys.metrics.ranking import RankingMetrics
from torchrec_recsys.metrics.retrieval import (
    catalogue_coverage,
    rank_metrics,
    target_ranks,
    top_items,
)


class RankingEvaluator:
    """Callable ``(model, split) -> {"loss", "auc", "ne"}`` for a ranking task module."""

    def __init__(self, data: RecDataset, ctx: DistContext, batch_size: int) -> None:
        self.data = data
        self.ctx = ctx
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, model: nn.Module, split: str) -> dict[str, float]:
        metrics = RankingMetrics(self.ctx.world_size, self.ctx.rank, self.batch_size)
        loss_sum = torch.zeros(2, dtype=torch.float64, device=self.ctx.device)  # [sum, weight]
        was_training = model.training
        model.eval()
        shard = ShardInfo(self.ctx.rank, self.ctx.world_size)
        for batch in eval_batches(self.data.splits[split], self.data.spec, self.batch_size, shard):
            batch = batch.to(self.ctx.device)
            loss, (_, logits, labels, weights) = model(batch)
            metrics.update(logits, labels, weights)
            loss_sum += torch.stack([loss.double() * weights.sum(), weights.sum().double()])
        model.train(was_training)
        dist.all_reduce(loss_sum)
        return {"loss": float(loss_sum[0] / loss_sum[1].clamp(min=1)), **metrics.compute()}


def unwrap(model: nn.Module) -> nn.Module:
    """The task module inside DistributedModelParallel (or ``model`` itself)."""
    return getattr(model, "module", model)


@torch.no_grad()
def embed_table(
    model: nn.Module,
    table: ExampleTable,
    spec: FeatureSpec,
    ctx: DistContext,
    batch_size: int,
    side: str,
) -> torch.Tensor:
    """Query (``side="query"``) or item embeddings of every row of ``table``, on every rank.

    Collective: each rank embeds its shard of every global batch, then the shards are
    all-gathered and put back in row order. Returns [len(table), D] on CPU.
    """
    tower_model = unwrap(model).model
    shard = ShardInfo(ctx.rank, ctx.world_size)
    local = []
    for batch in eval_batches(table, spec, batch_size, shard):
        batch = batch.to(ctx.device)
        query, item = tower_model(batch.dense_features, batch.sparse_features)  # [B, D] each
        local.append(query if side == "query" else item)
    mine = torch.cat(local)  # [steps * B, D]
    gathered = [torch.empty_like(mine) for _ in range(ctx.world_size)]
    dist.all_gather(gathered, mine)
    steps, dim = len(local), mine.shape[1]
    ordered = torch.stack(gathered).view(ctx.world_size, steps, batch_size, dim)
    return ordered.transpose(0, 1).reshape(-1, dim)[: len(table)].cpu()  # [N, D]


class RetrievalEvaluator:
    """Callable ``(model, split) -> {"recall@K", "ndcg@K", "hr@K", "map@K", "mrr",
    "coverage@K"}`` (coverage at the smallest K) for a two-tower task module.

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
    ) -> None:
        self.exclude_train_items = exclude_train_items
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
        )
        queries = embed_table(
            model, self.data.splits[split], self.data.spec, self.ctx, self.batch_size, side="query"
        )
        model.train(was_training)
        return queries, items

    def __call__(self, model: nn.Module, split: str) -> dict[str, float]:
        queries, items = self.embeddings(model, split)
        table = self.data.splits[split]
        exclude = self.data.users.train_items if self.exclude_train_items else None
        ranks = target_ranks(queries, items, table.item_rows, exclude, table.user_rows)
        k = min(self.ks)
        top, _ = top_items(queries, items, k, exclude, table.user_rows)  # [N, k]
        return {
            **rank_metrics(ranks, self.ks),
            f"coverage@{k}": catalogue_coverage(top, len(items), k),
        }

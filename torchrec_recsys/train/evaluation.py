"""Ranking evaluation: weighted loss, AUC and NE of a split, identical on every rank."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from torchrec_recsys.data.dataset import RecDataset
from torchrec_recsys.data.loader import ShardInfo, eval_batches
from torchrec_recsys.distributed.env import DistContext
from torchrec_recsys.metrics.ranking import RankingMetrics


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

"""Loss wrappers around the models, in TorchRec's ``*Train`` convention.

Every task's ``forward(batch)`` returns ``(loss, (loss.detach(), scores, labels, weights))``
(:data:`TaskOutput`), so one training loop drives the ranker, the retrievers and the sequence
models alike.
"""

from __future__ import annotations

import torch
from torch import nn

from torchrec_recsys.data.batch import Batch, SequenceBatch
from torchrec_recsys.models.generative import GenerativeRetriever
from torchrec_recsys.models.sasrec import SASRec
from torchrec_recsys.models.two_tower import TwoTower

# (loss, (detached loss, logits [B], labels [B], weights [B]))
TaskOutput = tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]


class RankingTask(nn.Module):
    """Binary cross-entropy on a ranker's logit, weighted by ``batch.weights``.

    Follows TorchRec's ``*Train`` convention: ``forward`` returns
    ``(loss, (loss.detach(), logits.detach(), labels.detach(), weights))``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Batch) -> TaskOutput:
        logits = self.model(batch.dense_features, batch.sparse_features).squeeze(-1)  # [B]
        per_example = nn.functional.binary_cross_entropy_with_logits(
            logits, batch.labels, reduction="none"
        )  # [B]
        loss = (per_example * batch.weights).sum() / batch.weights.sum().clamp(min=1.0)
        return loss, (loss.detach(), logits.detach(), batch.labels.detach(), batch.weights)


class RetrievalTask(nn.Module):
    """In-batch sampled softmax with log-Q correction and temperature.

    For a batch of B (user, item) pairs the logits are ``q_i . v_j / temperature - log Q(j)``
    [B, B], where ``Q(j)`` is item j's share of training interactions (the probability it
    appears as an in-batch negative); the target of row i is column i. Columns holding the
    same item as row i's positive are masked (they are not negatives). Rows are weighted by
    ``batch.weights``.
    """

    def __init__(self, model: TwoTower, item_log_q: torch.Tensor, temperature: float) -> None:
        super().__init__()
        self.model = model
        self.temperature = temperature
        self.register_buffer("item_log_q", item_log_q, persistent=False)  # [I]

    def forward(self, batch: Batch) -> TaskOutput:
        query, item = self.model(batch.dense_features, batch.sparse_features)  # [B, D] each
        logits = query @ item.T / self.temperature  # [B, B]
        logits = logits - self.item_log_q[batch.item_rows][None, :]  # log-Q correction
        same_item = batch.item_rows[:, None] == batch.item_rows[None, :]  # [B, B]
        batch_size = logits.shape[0]  # (not len(): FX-traceable for TorchRec's train pipeline)
        not_target = ~torch.eye(batch_size, dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(same_item & not_target, float("-inf"))
        targets = torch.arange(batch_size, device=logits.device)
        per_row = nn.functional.cross_entropy(logits, targets, reduction="none")  # [B]
        loss = (per_row * batch.weights).sum() / batch.weights.sum().clamp(min=1.0)
        positive_score = logits.diagonal().detach()  # [B]
        return loss, (loss.detach(), positive_score, batch.labels.detach(), batch.weights)


def _weighted_mean(per_example: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (per_example * weights).sum() / weights.sum().clamp(min=1.0)


class NextItemTask(nn.Module):
    """Full-softmax cross-entropy of the next item over every catalogue item (SASRec)."""

    def __init__(self, model: SASRec) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: SequenceBatch) -> TaskOutput:
        scores = self.model(batch.sparse_features)  # [B, I]
        per_example = nn.functional.cross_entropy(scores, batch.targets, reduction="none")  # [B]
        loss = _weighted_mean(per_example, batch.weights)
        target_score = scores.gather(1, batch.targets[:, None])[:, 0].detach()  # [B]
        return loss, (loss.detach(), target_score, torch.ones_like(batch.weights), batch.weights)


class GenerativeTask(nn.Module):
    """Cross-entropy of the next item's SID tokens, teacher-forced (TIGER's objective).

    The per-example loss is the mean over the L' tokens; the reported score is the target
    tuple's sequence log-probability.
    """

    def __init__(self, model: GenerativeRetriever) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: SequenceBatch) -> TaskOutput:
        logits = self.model(batch.sparse_features, batch.targets)  # [B, L', V]
        labels = self.model.item_tokens[batch.targets]  # [B, L']
        token_loss = nn.functional.cross_entropy(
            logits.flatten(0, 1), labels.flatten(), reduction="none"
        ).view_as(labels)  # [B, L']
        loss = _weighted_mean(token_loss.mean(dim=1), batch.weights)
        log_prob = -token_loss.sum(dim=1).detach()  # [B]
        return loss, (loss.detach(), log_prob, torch.ones_like(batch.weights), batch.weights)

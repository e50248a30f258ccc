"""DLRM ranker: TorchRec's ``DLRM`` over the FeatureSpec's tables, plus its loss wrapper."""

from __future__ import annotations

import torch
from torch import nn
from torchrec.models.dlrm import DLRM

from torchrec_recsys.data.batch import Batch
from torchrec_recsys.data.features import FeatureSpec
from torchrec_recsys.models.embeddings import build_ebc

# (loss, (detached loss, logits [B], labels [B], weights [B]))
TaskOutput = tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]


def build_dlrm(
    spec: FeatureSpec,
    dense_arch_layers: list[int],
    over_arch_layers: list[int],
    sparse_device: torch.device | str = "meta",
    dense_device: torch.device | str = "cpu",
) -> DLRM:
    """TorchRec DLRM: bottom MLP on dense features, dot interactions with every pooled
    sparse feature, top MLP to one logit. Embedding tables go on ``sparse_device``."""
    return DLRM(
        embedding_bag_collection=build_ebc(spec, sparse_device),
        dense_in_features=len(spec.dense),
        dense_arch_layer_sizes=dense_arch_layers,
        over_arch_layer_sizes=over_arch_layers,
        dense_device=torch.device(dense_device),
    )


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

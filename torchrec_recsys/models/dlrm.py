"""DLRM ranker: TorchRec's ``DLRM`` over the FeatureSpec's tables (loss: ``tasks.RankingTask``)."""

from __future__ import annotations

import torch
from torchrec.models.dlrm import DLRM

from torchrec_recsys.data.features import FeatureSpec
from torchrec_recsys.models.embeddings import build_ebc


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

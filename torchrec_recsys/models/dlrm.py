"""DLRM ranker: TorchRec's ``DLRM`` (dot interaction) or ``DLRM_DCN`` (DCN-v2 cross layers)
over the FeatureSpec's tables (loss: ``tasks.RankingTask``)."""

from __future__ import annotations

import torch
from torchrec.models.dlrm import DLRM, DLRM_DCN

from torchrec_recsys.data.features import FeatureSpec
from torchrec_recsys.models.embeddings import build_ebc


def build_dlrm(
    spec: FeatureSpec,
    dense_arch_layers: list[int],
    over_arch_layers: list[int],
    sparse_device: torch.device | str = "meta",
    dense_device: torch.device | str = "cpu",
    interaction: str = "dot",
    dcn_num_layers: int = 3,
    dcn_low_rank_dim: int = 64,
) -> DLRM:
    """TorchRec DLRM: bottom MLP on dense features, an interaction of it with every pooled
    sparse feature, top MLP to one logit. Embedding tables go on ``sparse_device``.

    ``interaction``: ``dot`` = pairwise dot products of the F + 1 vectors [B, D] (DLRM);
    ``dcn`` = the concatenation [B, (F + 1) * D] through ``dcn_num_layers`` DCN-v2 cross
    layers x_{l+1} = x_0 * (U (V x_l) + b) + x_l with rank ``dcn_low_rank_dim`` (DLRM_DCN).
    """
    if interaction == "dcn":
        return DLRM_DCN(
            embedding_bag_collection=build_ebc(spec, sparse_device),
            dense_in_features=len(spec.dense),
            dense_arch_layer_sizes=dense_arch_layers,
            over_arch_layer_sizes=over_arch_layers,
            dcn_num_layers=dcn_num_layers,
            dcn_low_rank_dim=dcn_low_rank_dim,
            dense_device=torch.device(dense_device),
        )
    return DLRM(
        embedding_bag_collection=build_ebc(spec, sparse_device),
        dense_in_features=len(spec.dense),
        dense_arch_layer_sizes=dense_arch_layers,
        over_arch_layer_sizes=over_arch_layers,
        dense_device=torch.device(dense_device),
    )

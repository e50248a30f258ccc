"""Two-tower retriever on the same FeatureSpec and Batch as the DLRM, and its training loss.

    KJT (all keys) -> one EmbeddingBagCollection -> KeyedTensor, read BY KEY
        user-tower keys + user dense -> query MLP     -> L2-normalised query  [B, D]
        item-tower keys + item dense -> candidate MLP -> L2-normalised item   [B, D]

One EBC serves both towers, so a table shared across towers (``t_item_id`` is read by the
item's ``item_id`` and the user's ``user_history``) is one sharded table. The loss is an
in-batch sampled softmax with the log-Q correction (``tasks.RetrievalTask``).
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.modules.mlp import MLP
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_recsys.data.features import ITEM, USER, FeatureSpec
from torchrec_recsys.models.embeddings import build_ebc


class Tower(nn.Module):
    """Concatenated pooled embeddings of some keys + some dense columns -> MLP -> unit vector."""

    def __init__(
        self,
        keys: list[str],
        dense_columns: list[int],
        in_features: int,
        layers: list[int],
        device: torch.device,
    ) -> None:
        super().__init__()
        self.keys = keys
        self.register_buffer(
            "dense_columns", torch.tensor(dense_columns, dtype=torch.long), persistent=False
        )
        self.mlp = MLP(in_features, layers, bias=True, activation="relu", device=device)
        # the last layer is linear: a ReLU would confine embeddings to the positive orthant
        self.mlp._mlp[-1]._activation_fn = nn.Identity()  # type: ignore[index]

    def forward(self, pooled: dict[str, torch.Tensor], dense: torch.Tensor) -> torch.Tensor:
        parts = [pooled[k] for k in self.keys] + [dense[:, self.dense_columns]]  # [B, D_k]...
        return nn.functional.normalize(self.mlp(torch.cat(parts, dim=1)), dim=-1)  # [B, D_out]


class TwoTower(nn.Module):
    """Query and candidate towers over one EBC. ``forward`` returns both embeddings [B, D]."""

    def __init__(
        self,
        spec: FeatureSpec,
        layers: list[int],
        sparse_device: torch.device | str,
        dense_device: torch.device | str,
    ) -> None:
        super().__init__()
        dense_device = torch.device(dense_device)
        self.ebc = build_ebc(spec, sparse_device)
        towers = {}
        for tower in (USER, ITEM):
            keys = spec.sparse_names(tower)
            width = sum(spec.feature(k).embedding_dim for k in keys) + len(
                spec.dense_indices(tower)
            )
            towers[tower] = Tower(keys, spec.dense_indices(tower), width, layers, dense_device)
        self.query_tower, self.candidate_tower = towers[USER], towers[ITEM]

    def forward(
        self, dense: torch.Tensor, sparse: KeyedJaggedTensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.ebc(sparse).to_dict()  # key -> [B, D]; never index a KeyedTensor by position
        return self.query_tower(pooled, dense), self.candidate_tower(pooled, dense)


def item_log_q(train_counts: torch.Tensor) -> torch.Tensor:
    """log of each item's share of training interactions (unseen items get one pseudo-count)."""
    counts = train_counts.double().clamp(min=1.0)
    return torch.log(counts / counts.sum()).float()  # [I]

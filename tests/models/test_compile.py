"""torch.compile of the dense blocks: same parameter names, same outputs as eager."""

from __future__ import annotations

import torch
from torch import nn

from torchrec_recsys.models.compile import compile_dense


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.table = nn.EmbeddingBag(10, 4)  # stays eager
        self.mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.table(ids))  # [B, 1]


def test_compiled_blocks_keep_names_and_outputs() -> None:
    torch.manual_seed(0)
    model = _Toy()
    ids = torch.randint(0, 10, (6, 3))  # [B, L]
    expected = model(ids)
    keys = list(model.state_dict())
    assert compile_dense(model) == ["mlp"]
    assert list(model.state_dict()) == keys  # checkpoints unchanged by compilation
    torch.testing.assert_close(model(ids), expected)

"""SASRec (Kang & McAuley 2018): a causal transformer over item-ID embeddings.

    KJT history_items (jagged, oldest first) -> EmbeddingCollection (unpooled)   [B, T, D]
      + recency position embedding (0 = most recent item)                         [B, T, D]
      -> causal nn.TransformerEncoder (pre-norm)                                  [B, T, D]
      -> hidden state at each example's last real position = user state           [B, D]
      -> scores against every catalogue item's output embedding                   [B, I]

The attention is PyTorch's own ``nn.TransformerEncoderLayer``, not hand-written. Input
embeddings are the sharded EC table (item-ID vocabulary, OOV row 0 for items never trained
on); output embeddings are a dense [I, D] matrix over *catalogue rows*, so an item without
training interactions keeps its random initial score (an ID model cannot recommend cold
items, which is what the cold-item recall shows). Trained with full softmax over all items
(the tuned-SASRec objective of later reproductions, rather than the paper's one negative).
"""

from __future__ import annotations

import torch
from torch import nn

from torchrec_recsys.data.features import SparseFeature
from torchrec_recsys.errors import DataError
from torchrec_recsys.models.embeddings import build_ec


def padded_sequence(
    ec_out: dict[str, object], key: str, max_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded dense [B, T, D] embeddings (T = the longest in the batch, at least 1) and
    lengths [B] of one EC key.

    Raises:
        DataError: a sequence is longer than ``max_len`` (the model's context).
    """
    jt = ec_out[key]
    lengths = jt.lengths().long()  # type: ignore[attr-defined]  # [B]
    if lengths.numel() and int(lengths.max()) > max_len:
        raise DataError(
            f"a history of {int(lengths.max())} tokens is longer than the model's context of "
            f"{max_len} (sequence.max_history items); shorten data.history_length"
        )
    longest = max(int(lengths.max()) if lengths.numel() else 1, 1)
    dense = jt.to_padded_dense(desired_length=longest, padding_value=0.0)  # type: ignore[attr-defined]
    return dense, lengths  # [B, T, D], [B]


class SASRec(nn.Module):
    """Causal transformer over item sequences; ``forward`` gives scores [B, I]."""

    def __init__(
        self,
        item_feature: SparseFeature,
        num_items: int,
        max_history: int,
        layers: int,
        heads: int,
        ff_dim: int,
        dropout: float,
        sparse_device: torch.device | str = "meta",
        dense_device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        d = item_feature.embedding_dim
        dense_device = torch.device(dense_device)
        self.key = item_feature.name
        self.max_history = max_history
        self.ec = build_ec([item_feature], sparse_device)
        self.positions = nn.Embedding(max_history, d, device=dense_device)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            d, heads, ff_dim, dropout, batch_first=True, norm_first=True, device=dense_device
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d, device=dense_device)
        self.item_out = nn.Embedding(num_items, d, device=dense_device)  # [I, D]
        nn.init.normal_(self.item_out.weight, std=d**-0.5)
        self.register_buffer(
            "causal",
            nn.Transformer.generate_square_subsequent_mask(max_history, device=dense_device),
            persistent=False,
        )  # [T, T], -inf above the diagonal

    def user_state(self, sparse: object) -> torch.Tensor:
        """[B, D] the hidden state after each example's most recent item."""
        x, lengths = padded_sequence(self.ec(sparse), self.key, self.max_history)  # [B, T, D]
        t = x.shape[1]
        steps = torch.arange(t, device=x.device)  # [T]
        recency = (lengths[:, None] - 1 - steps[None, :]).clamp(min=0)  # [B, T]
        x = self.dropout(x + self.positions(recency))  # [B, T, D]
        h = self.norm(self.encoder(x, mask=self.causal[:t, :t], is_causal=True))  # [B, T, D]
        last = (lengths - 1).clamp(min=0)  # [B]
        return h[torch.arange(h.shape[0], device=h.device), last]  # [B, D]

    def forward(self, sparse: object) -> torch.Tensor:
        """Scores of every catalogue item [B, I]."""
        return self.user_state(sparse) @ self.item_out.weight.T  # [B, I]

    @torch.no_grad()
    def rank_items(
        self, sparse: object, exclude: torch.Tensor, depth: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``depth`` best items [B, depth] and their scores, ``exclude`` [B, I] masked."""
        scores = self.forward(sparse).masked_fill(exclude, float("-inf"))  # [B, I]
        top = scores.topk(min(depth, scores.shape[1]), dim=1)
        return top.indices, top.values

"""Offline retrieval metrics over the full item corpus: Recall@K and NDCG@K.

Each query has one held-out target item. Items the user interacted with in training are
excluded from the ranking (they would otherwise crowd the top), except the target itself.
With one relevant item, NDCG@K = 1 / log2(rank + 2) when the target ranks in the top K
(rank 0 = first), else 0; Recall@K = 1 when it does.

A NaN score never counts: a target scored NaN is a miss (rank = the number of items), and
other items scored NaN do not outrank the target. (Comparisons with NaN are false, so
without this a model that outputs only NaN would rank every target first: Recall = 1.)
"""

from __future__ import annotations

import torch

from torchrec_recsys.data.jagged import JaggedColumn


def target_ranks(
    queries: torch.Tensor,
    items: torch.Tensor,
    targets: torch.Tensor,
    exclude: JaggedColumn | None = None,
    exclude_rows: torch.Tensor | None = None,
    chunk: int = 1024,
) -> torch.Tensor:
    """0-based rank of each query's target among all items. int64 [Q].

    Args:
        queries: [Q, D] query embeddings.
        items: [I, D] item embeddings (row = catalogue row).
        targets: [Q] catalogue row of each query's target.
        exclude: per-user catalogue rows to drop from the ranking (e.g. training items).
        exclude_rows: [Q] which row of ``exclude`` applies to each query.
        chunk: queries scored at once (bounds memory at chunk x I floats).
    """
    ranks = torch.empty(len(queries), dtype=torch.int64)
    for begin in range(0, len(queries), chunk):
        end = min(begin + chunk, len(queries))
        scores = queries[begin:end] @ items.T  # [q, I]
        tgt = targets[begin:end]
        target_score = scores.gather(1, tgt[:, None])  # [q, 1]
        if exclude is not None and exclude_rows is not None:
            lengths, values = exclude.gather(exclude_rows[begin:end])
            query_index = torch.repeat_interleave(torch.arange(end - begin), lengths)
            scores[query_index, values] = float("-inf")
            scores[torch.arange(end - begin), tgt] = target_score[:, 0]  # never drop the target
        ranks[begin:end] = (scores > target_score).sum(dim=1)
        ranks[begin:end][target_score[:, 0].isnan()] = items.shape[0]  # NaN target: a miss
    return ranks


def recall_ndcg(ranks: torch.Tensor, ks: tuple[int, ...] = (10, 50, 100)) -> dict[str, float]:
    """``{"recall@10": ..., "ndcg@10": ..., ...}`` averaged over queries."""
    out = {}
    for k in ks:
        hit = ranks < k
        out[f"recall@{k}"] = float(hit.float().mean())
        out[f"ndcg@{k}"] = float((hit / torch.log2(ranks.double() + 2)).mean())
    return out

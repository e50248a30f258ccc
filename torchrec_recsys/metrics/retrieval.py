"""Offline retrieval metrics over the full item corpus: Recall, NDCG, HR, MAP@K, MRR, coverage.

Each query has one held-out target item. Items the user interacted with in training are
excluded from the ranking (they would otherwise crowd the top), except the target itself.
With one relevant item, NDCG@K = 1 / log2(rank + 2) when the target ranks in the top K
(rank 0 = first), else 0; Recall@K = 1 when it does.
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
    return ranks


def recall_ndcg(ranks: torch.Tensor, ks: tuple[int, ...] = (10, 50, 100)) -> dict[str, float]:
    """``{"recall@10": ..., "ndcg@10": ..., ...}`` averaged over queries."""
    out = {}
    for k in ks:
        hit = ranks < k
        out[f"recall@{k}"] = float(hit.float().mean())
        out[f"ndcg@{k}"] = float((hit / torch.log2(ranks.double() + 2)).mean())
    return out


def rank_metrics(ranks: torch.Tensor, ks: tuple[int, ...] = (10, 50, 100)) -> dict[str, float]:
    """Recall, NDCG, HR, MAP at each K and MRR, from each query's 0-based target rank [Q].

    With one relevant item per query (the held-out target):

    * ``hr@K`` (hit rate) = share of queries whose target is in the top K (equal to Recall@K
      here; both names are reported because papers use both);
    * ``map@K`` = mean over queries of AP@K = 1 / (rank + 1) if rank < K else 0;
    * ``mrr`` = mean of 1 / (rank + 1) over the full ranking (a target outside a truncated
      list, rank >= 10**9 by convention, contributes ~0).
    """
    out = recall_ndcg(ranks, ks)
    reciprocal = 1.0 / (ranks.double() + 1)  # [Q]
    for k in ks:
        hit = ranks < k
        out[f"hr@{k}"] = float(hit.double().mean())
        out[f"map@{k}"] = float((reciprocal * hit).mean())
    out["mrr"] = float(reciprocal.mean())
    return out


def catalogue_coverage(top: torch.Tensor, num_items: int, k: int) -> float:
    """Share of the ``num_items`` catalogue that appears in at least one query's top ``k``.

    Args:
        top: [Q, >=k] catalogue rows of each query's list, best first.
    """
    return float(torch.unique(top[:, :k]).numel() / max(num_items, 1))


def top_items(
    queries: torch.Tensor,
    items: torch.Tensor,
    k: int,
    exclude: JaggedColumn | None = None,
    exclude_rows: torch.Tensor | None = None,
    chunk: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query's ``k`` best catalogue rows by inner product, excluded rows dropped.

    Returns (rows [Q, k] int64, scores [Q, k]), best first; chunked like :func:`target_ranks`.
    """
    rows = torch.empty(len(queries), k, dtype=torch.int64)
    values = torch.empty(len(queries), k, dtype=queries.dtype)
    for begin in range(0, len(queries), chunk):
        end = min(begin + chunk, len(queries))
        scores = queries[begin:end] @ items.T  # [q, I]
        if exclude is not None and exclude_rows is not None:
            lengths, dropped = exclude.gather(exclude_rows[begin:end])
            query_index = torch.repeat_interleave(torch.arange(end - begin), lengths)
            scores[query_index, dropped] = float("-inf")
        best = torch.topk(scores, k, dim=1)
        rows[begin:end], values[begin:end] = best.indices, best.values
    return rows, values

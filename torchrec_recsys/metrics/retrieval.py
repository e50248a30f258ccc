"""Offline retrieval metrics over the full item corpus: Recall@K and NDCG@K.

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


def list_ranks(lists: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based position of each target in its ranked list [Q, W]; ``W`` when absent. [Q]"""
    hit = lists == targets[:, None]  # [Q, W]
    width = lists.shape[1]
    first = torch.where(hit, torch.arange(width, device=lists.device)[None, :], width)
    return first.min(dim=1).values


def ranked_list_metrics(
    ranks: torch.Tensor,
    top: torch.Tensor,
    depth: int,
    num_items: int,
    cold: torch.Tensor,
    recall_ks: tuple[int, ...] = (5, 10, 20, 100),
    ndcg_ks: tuple[int, ...] = (5, 10, 20),
    coverage_k: int = 10,
) -> dict[str, float]:
    """Recall@K, NDCG@K, MRR, top-K catalogue coverage and cold-target Recall@K.

    Args:
        ranks: [Q] 0-based target rank; ``>= depth`` means not in the list.
        top: [Q, >= coverage_k] each query's best items (-1 = empty slot).
        depth: how far the ranked lists reach (the beam width of a generative model, the
            catalogue size of a full ranking); Recall@K with K > depth is left out, and MRR
            counts 0 for targets beyond it.
        num_items: catalogue size (coverage denominator).
        cold: [Q] bool, target item held out of training (``cold_item_fraction``).
    """
    found = ranks < depth
    out = {}
    for k in recall_ks:
        if k <= depth:
            out[f"recall@{k}"] = float((found & (ranks < k)).float().mean())
    for k in ndcg_ks:
        if k <= depth:
            hit = found & (ranks < k)
            out[f"ndcg@{k}"] = float((hit / torch.log2(ranks.double() + 2)).mean())
    out["mrr"] = float((found / (ranks.double() + 1)).mean())
    listed = top[:, :coverage_k]
    out[f"coverage@{coverage_k}"] = len(torch.unique(listed[listed >= 0])) / num_items
    out["cold_targets"] = float(cold.sum())
    if bool(cold.any()):
        out[f"cold_recall@{coverage_k}"] = float((ranks[cold] < coverage_k).float().mean())
    else:
        out[f"cold_recall@{coverage_k}"] = 0.0
    return out


def exclusion_mask(
    exclude: JaggedColumn | None, user_rows: torch.Tensor, targets: torch.Tensor, num_items: int
) -> torch.Tensor:
    """[Q, I] bool: items each query may not be recommended (its user's rows of ``exclude``,
    e.g. training items), never its own target, the same rule as :func:`target_ranks`."""
    mask = torch.zeros(len(user_rows), num_items, dtype=torch.bool)
    if exclude is not None:
        lengths, values = exclude.gather(user_rows.cpu())
        query_index = torch.repeat_interleave(torch.arange(len(user_rows)), lengths)
        mask[query_index, values] = True
    mask[torch.arange(len(user_rows)), targets.cpu()] = False
    return mask.to(user_rows.device)


def top_k_items(
    queries: torch.Tensor,
    items: torch.Tensor,
    k: int,
    targets: torch.Tensor,
    exclude: JaggedColumn | None = None,
    exclude_rows: torch.Tensor | None = None,
    chunk: int = 1024,
) -> torch.Tensor:
    """[Q, k] best items by inner product, excluded as in :func:`exclusion_mask` (chunked)."""
    out = []
    for begin in range(0, len(queries), chunk):
        end = min(begin + chunk, len(queries))
        rows = exclude_rows[begin:end] if exclude_rows is not None else targets[begin:end]
        mask = exclusion_mask(exclude, rows, targets[begin:end], len(items))  # [q, I]
        scores = (queries[begin:end] @ items.T).masked_fill(mask, float("-inf"))  # [q, I]
        out.append(scores.topk(min(k, len(items)), dim=1).indices)
    return torch.cat(out)

"""Offline retrieval metrics over the full item corpus: Recall, NDCG, HR, MAP@K, MRR, coverage.

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

CHUNK_ELEMENTS = 1 << 24
"""Default score-matrix budget per chunk: 16M floats (64 MB), e.g. 110 queries x 150k items."""


def query_chunks(num_queries: int, num_items: int, chunk_elements: int = CHUNK_ELEMENTS):  # noqa: ANN201
    """``(begin, end)`` ranges of queries whose [end - begin, num_items] scores fit the budget."""
    step = max(1, chunk_elements // max(num_items, 1))
    for begin in range(0, num_queries, step):
        yield begin, min(begin + step, num_queries)


def drop_excluded(
    scores: torch.Tensor,
    exclude: JaggedColumn | None,
    exclude_rows: torch.Tensor | None,
) -> None:
    """Set the excluded (query, item) scores of one chunk to -inf, in place. scores [q, I]"""
    if exclude is None or exclude_rows is None:
        return
    lengths, values = exclude.gather(exclude_rows)
    query_index = torch.repeat_interleave(torch.arange(len(scores)), lengths)
    scores[query_index, values] = float("-inf")


def target_ranks(
    queries: torch.Tensor,
    items: torch.Tensor,
    targets: torch.Tensor,
    exclude: JaggedColumn | None = None,
    exclude_rows: torch.Tensor | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> torch.Tensor:
    """0-based rank of each query's target among all items. int64 [Q].

    Memory is bounded by one chunk of scores (``chunk_elements`` floats), never Q x I.

    Args:
        queries: [Q, D] query embeddings.
        items: [I, D] item embeddings (row = catalogue row).
        targets: [Q] catalogue row of each query's target.
        exclude: per-user catalogue rows to drop from the ranking (e.g. training items).
        exclude_rows: [Q] which row of ``exclude`` applies to each query.
        chunk_elements: score-matrix elements computed at once.
    """
    ranks = torch.empty(len(queries), dtype=torch.int64)
    for begin, end in query_chunks(len(queries), len(items), chunk_elements):
        scores = queries[begin:end] @ items.T  # [q, I]
        tgt = targets[begin:end]
        target_score = scores.gather(1, tgt[:, None])  # [q, 1]
        if exclude is not None and exclude_rows is not None:
            drop_excluded(scores, exclude, exclude_rows[begin:end])
            scores[torch.arange(end - begin), tgt] = target_score[:, 0]  # never drop the target
        ranks[begin:end] = (scores > target_score).sum(dim=1)
        ranks[begin:end][target_score[:, 0].isnan()] = items.shape[0]  # NaN target: a miss
    return ranks


def chunked_top_k(
    queries: torch.Tensor,
    items: torch.Tensor,
    k: int,
    exclude: JaggedColumn | None = None,
    exclude_rows: torch.Tensor | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact inner-product top ``k`` items per query: ``(scores [Q, k], rows [Q, k])``.

    Scores one chunk of queries against the whole catalogue at a time, so peak memory is
    ``chunk_elements`` floats plus the [Q, k] result, never Q x I. Excluded items and NaN
    scores score -inf.
    """
    k = min(k, len(items))
    top_scores = torch.empty(len(queries), k, dtype=queries.dtype)
    top_rows = torch.empty(len(queries), k, dtype=torch.int64)
    for begin, end in query_chunks(len(queries), len(items), chunk_elements):
        scores = (queries[begin:end] @ items.T).nan_to_num(nan=float("-inf"))  # [q, I]
        if exclude_rows is not None:
            drop_excluded(scores, exclude, exclude_rows[begin:end])
        top_scores[begin:end], top_rows[begin:end] = torch.topk(scores, k, dim=1)  # [q, k]
    return top_scores, top_rows


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
        top: [Q, >=k] catalogue rows of each query's list, best first (-1 = empty slot).
    """
    listed = top[:, :k]
    return float(torch.unique(listed[listed >= 0]).numel() / max(num_items, 1))


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
    out[f"coverage@{coverage_k}"] = catalogue_coverage(top, num_items, coverage_k)
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

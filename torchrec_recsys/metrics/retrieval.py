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
"""Default budget of one chunk of queries (queries x items: 16M, e.g. 110 queries x 150k
items), the unit in which callers such as the two-stage evaluation process queries; the
scores themselves are computed in tiles of at most :data:`TILE_ELEMENTS`."""


LONG_TAIL_MAX_TRAIN_COUNT = 10
"""A long-tail target: an item with 1 to this many training interactions (not cold)."""


def long_tail_mask(
    train_counts: torch.Tensor, cold: torch.Tensor, max_count: int = LONG_TAIL_MAX_TRAIN_COUNT
) -> torch.Tensor:
    """[Q] bool: targets with 1..``max_count`` training interactions, not cold.

    Args:
        train_counts: [Q] training interactions of each query's target item.
        cold: [Q] bool, target held out of training.
    """
    return ~cold & (train_counts >= 1) & (train_counts <= max_count)


def query_chunks(num_queries: int, num_items: int, chunk_elements: int = CHUNK_ELEMENTS):  # noqa: ANN201
    """``(begin, end)`` ranges of queries whose [end - begin, num_items] scores fit the budget."""
    step = max(1, chunk_elements // max(num_items, 1))
    for begin in range(0, num_queries, step):
        yield begin, min(begin + step, num_queries)


TILE_ELEMENTS = 1 << 21
"""Scores computed at once inside a chunk: 2M floats (8 MB), small enough to stay in cache
while they are masked, compared and ranked, so the pass runs at the speed of the matmul."""

MIN_TILE_ROWS = 64
"""Queries per tile when the catalogue is wide (a thinner matmul wastes the BLAS kernel)."""


def tile_shape(num_queries: int, num_items: int, elements: int) -> tuple[int, int]:
    """``(query rows, item columns)`` of one score tile of about ``elements`` floats: whole
    item rows when they fit ``MIN_TILE_ROWS`` queries, else ``MIN_TILE_ROWS`` queries by as
    many items as fit."""
    rows = max(min(MIN_TILE_ROWS, elements), elements // max(num_items, 1))
    rows = max(1, min(num_queries, rows))
    return rows, max(1, min(num_items, elements // rows))


def target_dot(queries: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Row-wise ``q . v`` [Q] of queries [Q, D] and their target embeddings [Q, D], computed
    by the same matmul kernel as the score tiles (so ties with other items stay ties)."""
    out = torch.empty(len(queries), dtype=queries.dtype)
    for begin in range(0, len(queries), MIN_TILE_ROWS):
        end = min(begin + MIN_TILE_ROWS, len(queries))
        out[begin:end] = torch.mm(queries[begin:end], targets[begin:end].T).diagonal()
    return out


def ranks_and_top_k(
    queries: torch.Tensor,
    items: torch.Tensor,
    targets: torch.Tensor | None,
    k: int,
    exclude: JaggedColumn | None = None,
    exclude_rows: torch.Tensor | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One tiled scoring pass: ``(target ranks [Q], top scores [Q, k], top rows [Q, k],
    target scores [Q])``.

    A target's rank counts the items scoring above it, excluded items and NaN scores left out
    (the target itself is never dropped from that count); a target scored NaN gets rank
    ``len(items)``, a miss. The top ``k`` lists hold no excluded item and no NaN score.
    Memory is bounded by one tile of scores (at most ``chunk_elements`` floats, and
    :data:`TILE_ELEMENTS` so that a tile stays in cache), never Q x I; the top ``k`` of
    each tile is merged into the running lists.

    Args:
        queries: [Q, D] query embeddings.
        items: [I, D] item embeddings (row = catalogue row).
        targets: [Q] catalogue row of each query's target (None = lists only; the ranks and
            target scores come back empty).
        k: list length (capped at the catalogue size; 0 = ranks only).
        exclude: per-user catalogue rows to drop from the ranking (e.g. training items).
        exclude_rows: [Q] which row of ``exclude`` applies to each query.
        chunk_elements: score-matrix elements computed at once.
    """
    num_items = len(items)
    k = min(k, num_items)
    n = len(queries) if targets is not None else 0
    ranks = torch.empty(n, dtype=torch.int64)
    target_scores = torch.empty(n, dtype=queries.dtype)
    top_scores = torch.empty(len(queries), k, dtype=queries.dtype)
    top_rows = torch.empty(len(queries), k, dtype=torch.int64)
    rows, cols = tile_shape(len(queries), num_items, min(chunk_elements, TILE_ELEMENTS))
    buffer = torch.empty(rows * cols, dtype=queries.dtype)  # one tile, reused
    for begin in range(0, len(queries), rows):
        end = min(begin + rows, len(queries))
        block = queries[begin:end]  # [m, D]
        m = end - begin
        dropped = None
        if exclude is not None and exclude_rows is not None:
            lengths, values = exclude.gather(exclude_rows[begin:end])
            dropped = (torch.repeat_interleave(torch.arange(m), lengths), values)
        own = count = None
        if targets is not None:
            rows_t = targets[begin:end]  # [m]
            own = target_dot(block, items[rows_t])  # [m], q . v_target
            count = torch.zeros(m, dtype=torch.int64)
        best: tuple[torch.Tensor, torch.Tensor] | None = None
        for first in range(0, num_items, cols):
            last = min(first + cols, num_items)
            scores = torch.mm(block, items[first:last].T, out=buffer[: m * (last - first)]
                              .view(m, last - first))  # [m, w]  # fmt: skip
            if dropped is not None:
                inside = (dropped[1] >= first) & (dropped[1] < last)
                scores[dropped[0][inside], dropped[1][inside] - first] = float("-inf")
            if k:
                scores.nan_to_num_(nan=float("-inf"))  # a NaN score never enters a list
            if own is not None and count is not None:
                count += (scores > own[:, None]).sum(dim=1)  # NaN > x is False: never counted
                here = ((rows_t >= first) & (rows_t < last)).nonzero().flatten()
                if len(here):  # the target never counts itself, whatever the rounding
                    self_score = scores[here, rows_t[here] - first]
                    count[here] -= (self_score > own[here]).long()
            if k:
                tile_scores, tile_rows = torch.topk(scores, min(k, last - first), dim=1)
                tile_rows += first
                if best is not None:
                    merged_scores = torch.cat([best[0], tile_scores], dim=1)
                    merged_rows = torch.cat([best[1], tile_rows], dim=1)
                    keep = min(k, merged_scores.shape[1])
                    tile_scores, position = torch.topk(merged_scores, keep, dim=1)
                    tile_rows = merged_rows.gather(1, position)
                best = (tile_scores, tile_rows)
        if own is not None and count is not None:
            ranks[begin:end] = count.masked_fill(own.isnan(), num_items)  # a NaN target: a miss
            target_scores[begin:end] = own
        if best is not None:
            top_scores[begin:end], top_rows[begin:end] = best
    return ranks, top_scores, top_rows, target_scores


def target_ranks(
    queries: torch.Tensor,
    items: torch.Tensor,
    targets: torch.Tensor,
    exclude: JaggedColumn | None = None,
    exclude_rows: torch.Tensor | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> torch.Tensor:
    """0-based rank of each query's target among all items. int64 [Q]
    (:func:`ranks_and_top_k` without the lists)."""
    return ranks_and_top_k(queries, items, targets, 0, exclude, exclude_rows, chunk_elements)[0]


def chunked_top_k(
    queries: torch.Tensor,
    items: torch.Tensor,
    k: int,
    exclude: JaggedColumn | None = None,
    exclude_rows: torch.Tensor | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact inner-product top ``k`` items per query: ``(scores [Q, k], rows [Q, k])``
    (:func:`ranks_and_top_k` without targets)."""
    _, scores, rows, _ = ranks_and_top_k(
        queries, items, None, k, exclude, exclude_rows, chunk_elements
    )
    return scores, rows


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
    tail: torch.Tensor | None = None,
) -> dict[str, float]:
    """Recall@K, NDCG@K, MRR, top-K catalogue coverage, and Recall@``coverage_k`` on cold
    targets and (with ``tail``) on long-tail ones.

    Args:
        ranks: [Q] 0-based target rank; ``>= depth`` means not in the list.
        top: [Q, >= coverage_k] each query's best items (-1 = empty slot).
        depth: how far the ranked lists reach (the beam width of a generative model, the
            catalogue size of a full ranking); Recall@K with K > depth is left out, and MRR
            counts 0 for targets beyond it.
        num_items: catalogue size (coverage denominator).
        cold: [Q] bool, target item held out of training (``cold_item_fraction``).
        tail: [Q] bool, long-tail target (:func:`long_tail_mask`); adds ``tail_targets`` and
            ``tail_recall@<coverage_k>``.
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
    if tail is not None:
        out["tail_targets"] = float(tail.sum())
        hits = (ranks[tail] < coverage_k).float()
        out[f"tail_recall@{coverage_k}"] = float(hits.mean()) if bool(tail.any()) else 0.0
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

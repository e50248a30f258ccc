"""What a second-stage ranker sees: the retriever's candidates, negatives drawn from them,
and the retrieval score / rank as features; plus the two-stage evaluation core.

Per query (one example: a user's state at one interaction, and its target item)::

    query embedding q [D], item embeddings V [I, D]
      scores = V q, the user's training items dropped (the target itself is kept)
      top K candidates (rows, scores)              <- what serving re-ranks
      target score q . v_t and its rank among the non-dropped items
      negatives: hard = drawn from the top K without the target;
                 random = popularity-sampled from the catalogue without the target and
                 without any training item of the user
      dense features per (query, item): [score, min(rank, K) / K]

Ranks are 0-based; an item outside the top K gets the capped rank K (feature value 1.0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from torchrec_recsys.data.dataset import ExampleTable, RecDataset
from torchrec_recsys.data.features import ITEM, USER
from torchrec_recsys.data.jagged import JaggedColumn
from torchrec_recsys.metrics.retrieval import CHUNK_ELEMENTS, ranks_and_top_k

RANK_FEATURE_NAMES = ("retrieval_score", "retrieval_rank")
MISS_RANK = 10**9
"""Rank of a target outside a list (or scored NaN): beyond every cut-off."""


@dataclass
class Candidates:
    """The retriever's view of N queries."""

    top: torch.Tensor  # [N, K] int64 catalogue rows, best first (training items dropped)
    top_scores: torch.Tensor  # [N, K] float
    target_scores: torch.Tensor  # [N] float, q . v_target
    target_ranks: torch.Tensor  # [N] int64, rank of the target among the non-dropped items


def retrieve_candidates(
    queries: torch.Tensor,
    items: torch.Tensor,
    targets: torch.Tensor,
    k: int,
    exclude: JaggedColumn | None = None,
    exclude_rows: torch.Tensor | None = None,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> Candidates:
    """Top ``k`` items and the target's score and rank for each query, in one chunked pass.

    Args:
        queries: [N, D]; items: [I, D]; targets: [N] catalogue rows.
        exclude, exclude_rows: per-user rows to drop (``exclude_rows`` [N] picks the user);
            the query's own target is never dropped from the target-rank count, but it is
            dropped from ``top`` when it is an excluded item (a training example's target).
        chunk_elements: score-matrix elements computed at once (memory ~ this, not N x I).

    A target scored NaN gets rank ``len(items)`` (a miss); NaN scores never enter ``top``.
    """
    ranks, top_scores, top, target_scores = ranks_and_top_k(
        queries, items, targets, k, exclude, exclude_rows, chunk_elements
    )
    return Candidates(top, top_scores, target_scores, ranks)


def sample_negatives(
    candidates: Candidates,
    targets: torch.Tensor,
    num_hard: int,
    num_random: int,
    item_weights: torch.Tensor,
    exclude: JaggedColumn | None,
    exclude_rows: torch.Tensor | None,
    generator: torch.Generator,
) -> torch.Tensor:
    """Negative catalogue rows per query, [N, num_hard + num_random] int64.

    Hard negatives are drawn without replacement from the query's top K minus its target
    (the top K already lacks the user's training items). Random negatives are drawn with
    probability proportional to ``item_weights`` [I] (e.g. popularity ** 0.75) and redrawn
    while they hit the target, a training item of the user or the query's hard negatives.
    No negative is ever the target or a training item of the user.
    """
    n, k = candidates.top.shape
    is_target = candidates.top == targets[:, None]  # [N, K]
    if num_hard > k - 1:
        raise ValueError(f"{num_hard} hard negatives need at least {num_hard + 1} candidates")
    keys = torch.rand(n, k, generator=generator).masked_fill(is_target, 2.0)  # target last
    hard = candidates.top.gather(1, torch.argsort(keys, dim=1)[:, :num_hard])  # [N, h]
    if num_random == 0:
        return hard
    per_user = _rows_as_sets(exclude) if exclude is not None else []
    users = exclude_rows.tolist() if exclude_rows is not None else [None] * n
    weights = item_weights.double().clamp(min=0)
    if float(weights.sum()) <= 0:
        weights = torch.ones_like(weights)
    randoms = torch.multinomial(weights, n * num_random, replacement=True, generator=generator)
    randoms = randoms.view(n, num_random)
    no_items: set[int] = set()
    for q, (target, own, user) in enumerate(
        zip(targets.tolist(), hard.tolist(), users, strict=True)
    ):
        taken = {target, *own}
        seen = per_user[user] if user is not None and per_user else no_items
        for j in range(num_random):
            item, tries = int(randoms[q, j]), 0
            while item in taken or item in seen:
                item = int(torch.multinomial(weights, 1, generator=generator)[0])
                tries += 1
                if tries > 1000:
                    raise ValueError(f"query {q}: no item left to sample as a negative")
            randoms[q, j] = item
            taken.add(item)
    return torch.cat([hard, randoms], dim=1)


def _rows_as_sets(column: JaggedColumn) -> list[set[int]]:
    values = column.values.tolist()
    offsets = column.offsets.tolist()
    return [set(values[offsets[i] : offsets[i + 1]]) for i in range(len(offsets) - 1)]


def retrieval_features(scores: torch.Tensor, ranks: torch.Tensor, k: int) -> torch.Tensor:
    """Dense [N, 2] features of (query, item) pairs: score and min(rank, k) / k."""
    return torch.stack([scores.float(), ranks.clamp(max=k).float() / k], dim=1)


def pipeline_pairs(
    data: RecDataset,
    queries: ExampleTable,
    index: torch.Tensor,
    items: torch.Tensor,
    retrieval: torch.Tensor,
) -> ExampleTable:
    """A pipeline ranker's input for the pairs (``queries[index[m]]``, catalogue row
    ``items[m]``) [M]: the DLRM's pair features, then the dense ``retrieval`` [M, 2]
    (:func:`retrieval_features`), then, when ``data.context`` is set, the context features
    of ``data/context.py`` [M, F]. The one place these are assembled: the training pairs,
    the evaluation scorers (DLRM, logistic regression, LightGBM) and serving all call it."""
    table = data.pair_table(queries, index, items)
    # the user and item columns only: a query table built from the pairs dataset itself
    # (serving) already has zero-filled columns for the pair features
    towers = [i for i, f in enumerate(data.spec.dense) if f.tower in (USER, ITEM)]
    extra = [table.dense[:, towers], retrieval.float()]
    if data.context is not None:
        extra.append(data.context.features(queries, index, items))
    table.dense = torch.cat(extra, dim=1)  # [M, dense + 2 + F]
    return table


def pair_retrieval_features(
    queries: torch.Tensor, items: torch.Tensor, candidates: Candidates, pair_items: torch.Tensor
) -> torch.Tensor:
    """Retrieval features [N, M, 2] of each query's ``pair_items`` [N, M] catalogue rows.

    Score = q . v; rank = position in the query's top K, else K (capped).
    """
    k = candidates.top.shape[1]
    out = torch.empty(*pair_items.shape, 2)
    for rows in torch.arange(len(pair_items)).split(4096):
        chosen = pair_items[rows]  # [n, M]
        scores = torch.einsum("nd,nmd->nm", queries[rows], items[chosen])  # [n, M]
        match = candidates.top[rows][:, None, :] == chosen[:, :, None]  # [n, M, K]
        ranks = torch.where(match.any(2), match.float().argmax(2), torch.full_like(chosen, k))
        out[rows] = retrieval_features(scores.reshape(-1), ranks.reshape(-1), k).view(
            *chosen.shape, 2
        )
    return out


def rerank_positions(
    top: torch.Tensor, reranker_scores: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positions of each target before and after re-ranking its candidate list.

    Args:
        top: [Q, C] candidates, best first by retrieval; reranker_scores: [Q, C];
        targets: [Q].
    Returns (retrieval position [Q], re-ranked position [Q], re-ranked lists [Q, C]); a
    target outside the candidates gets position 10**9 in both.
    """
    order = torch.argsort(reranker_scores, dim=1, descending=True, stable=True)
    reranked = top.gather(1, order)  # [Q, C]
    return _position(top, targets), _position(reranked, targets), reranked


def _position(ordered: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    hit = ordered == targets[:, None]  # [Q, C]
    return torch.where(hit.any(1), hit.float().argmax(1), torch.full((len(hit),), MISS_RANK))

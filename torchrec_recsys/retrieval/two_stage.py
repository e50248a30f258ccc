"""Retrieve-then-rank: two-tower + FAISS for candidates, DLRM to order them.

    user -> query tower -> FAISS search (K candidates, training items excluded)
         -> DLRM scores (user, candidate) pairs -> top N by DLRM score

Both models are plain CPU task modules (``app.trained.load_trained`` loads them).
An unknown user gets a cold-start query built from features only (OOV id, no attributes,
optionally a history given by the caller), and the result says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from torchrec_recsys.data.dataset import ExampleTable, RecDataset
from torchrec_recsys.errors import UserError
from torchrec_recsys.metrics.retrieval import (
    CHUNK_ELEMENTS,
    chunked_top_k,
    query_chunks,
    recall_ndcg,
)
from torchrec_recsys.retrieval.faiss_index import LoadedIndex, search
from torchrec_recsys.retrieval.predict import TrainedTask, predict

MISS = 10**9
"""Rank given to a target that is not retrieved (or scored NaN): never within any cut-off."""


@dataclass
class Recommendation:
    item_id: str
    title: str
    retrieval_score: float
    ranking_score: float  # DLRM probability that the user rates the item >= the positive rating


@dataclass
class RecommendationList:
    user_id: str
    cold_start: bool
    items: list[Recommendation]
    query: ExampleTable | None = None  # the retriever's one-row query features (for monitoring)


def user_query_table(
    data: RecDataset, user_id: str, history: list[str]
) -> tuple[ExampleTable, bool]:
    """The user's current features, or a cold-start row for an unknown user."""
    row = data.user_row_of.get(user_id)
    if row is not None and not history:
        return data.user_table(torch.tensor([row])), False
    return data.cold_user_table(history), row is None


def recommend(
    retriever: TrainedTask,
    ranker: TrainedTask,
    index: LoadedIndex,
    user_id: str,
    k: int = 10,
    candidates: int = 100,
    history: list[str] | None = None,
) -> RecommendationList:
    """Top ``k`` items for ``user_id`` from ``candidates`` retrieved ones, ordered by the DLRM."""
    if k < 1 or candidates < 1:
        raise UserError(f"k = {k} and candidates = {candidates} must both be at least 1")
    if k > candidates:
        raise UserError(f"k = {k} must not exceed the number of candidates ({candidates})")
    r_data, k_data = retriever.data, ranker.data
    query_table, cold = user_query_table(r_data, user_id, history or [])
    query = predict(retriever.task, query_table, r_data, "query").numpy()  # [1, D]
    seen: set[str] = set(history or [])  # never recommend the given history back
    if not cold and user_id in r_data.user_row_of:
        row = r_data.user_row_of[user_id]
        seen |= {
            r_data.items.item_ids[i]
            for i in r_data.users.train_items.select(torch.tensor([row])).values.tolist()
        }
    scores, ids = search(index, query, candidates, exclude=[seen])
    candidate_ids = ids[0]
    rank_row = k_data.items.row_of
    missing = [c for c in candidate_ids if c not in rank_row]
    if missing:
        raise UserError(f"retrieved item id {missing[0]!r} is not in the ranker's catalogue")
    item_rows = torch.tensor([rank_row[c] for c in candidate_ids])
    ranker_user, _ = user_query_table(k_data, user_id, history or [])
    pairs = k_data.pair_table(
        ranker_user, torch.zeros(len(item_rows), dtype=torch.int64), item_rows
    )
    probabilities = predict(ranker.task, pairs, k_data, "ranking")  # [C]
    order = torch.argsort(probabilities, descending=True)[:k].tolist()
    items = [
        Recommendation(
            item_id=candidate_ids[i],
            title=k_data.items.texts[int(item_rows[i])],
            retrieval_score=float(scores[0][i]),
            ranking_score=float(probabilities[i]),
        )
        for i in order
    ]
    return RecommendationList(user_id=user_id, cold_start=cold, items=items, query=query_table)


def evaluate_two_stage(
    retriever: TrainedTask,
    ranker: TrainedTask,
    split: str = "test",
    candidates: int = 100,
    k: int = 10,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> dict[str, dict[str, float]]:
    """Recall@k / NDCG@k of retrieval alone vs. retrieval re-ranked by the DLRM on ``split``.

    Retrieval is exact (all items scored) with each user's training items excluded; the DLRM
    re-orders the top ``candidates``; a target outside the candidates is a miss for both.
    Users are processed in chunks of at most ``chunk_elements`` scores, so memory grows with
    the catalogue, not with users x catalogue.
    """
    r_data, k_data = retriever.data, ranker.data
    queries_table = r_data.splits[split]
    if not torch.equal(queries_table.item_rows, k_data.splits[split].item_rows):
        raise UserError("the retriever and the ranker were trained on different splits of the data")
    queries = predict(retriever.task, queries_table, r_data, "query")  # [Q, D]
    items = predict(retriever.task, r_data.catalogue_table(), r_data, "item")  # [I, D]
    retrieval_rank = torch.empty(len(queries), dtype=torch.int64)
    rerank_rank = torch.empty(len(queries), dtype=torch.int64)
    candidate_hit = torch.empty(len(queries), dtype=torch.bool)
    # one chunk of users at a time: memory ~ chunk x I scores + chunk x C ranker pairs
    for begin, end in query_chunks(len(queries), len(items), chunk_elements):
        rows = torch.arange(begin, end)
        _, top = chunked_top_k(  # [q, C] catalogue rows, best first (NaN scores sort last)
            queries[begin:end],
            items,
            candidates,
            r_data.users.train_items,
            queries_table.user_rows[begin:end],
            chunk_elements,
        )
        targets = queries_table.item_rows[begin:end, None]  # [q, 1]
        target_scores = (queries[begin:end] * items[targets[:, 0]]).sum(1)  # [q]
        nan_target = target_scores.isnan()  # a NaN score is a miss whatever the order
        retrieval_rank[begin:end] = _rank_in(top, targets).masked_fill(nan_target, MISS)
        candidate_hit[begin:end] = (top == targets).any(1) & ~nan_target
        user_index = rows.repeat_interleave(top.shape[1])  # [q * C]
        pairs = k_data.pair_table(k_data.splits[split], user_index, top.reshape(-1))
        probabilities = predict(ranker.task, pairs, k_data, "ranking").view(len(rows), -1)
        nan_rows = probabilities.isnan().any(1) | nan_target  # [q]
        reranked = torch.gather(top, 1, torch.argsort(probabilities, dim=1, descending=True))
        rerank_rank[begin:end] = _rank_in(reranked, targets).masked_fill(nan_rows, MISS)
    return {
        "retrieval": recall_ndcg(retrieval_rank, (k,)),
        "retrieve_then_rank": recall_ndcg(rerank_rank, (k,)),
        "candidates_recall": {f"recall@{candidates}": float(candidate_hit.float().mean())},
    }


def _rank_in(ordered: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Position of each target in its row of ``ordered`` [Q, C], or a large number if absent."""
    hit = ordered == targets  # [Q, C]
    return torch.where(hit.any(1), hit.float().argmax(1), torch.full((len(hit),), MISS))


def format_recommendations(result: RecommendationList) -> str:
    """A human-readable table of a recommendation list."""
    head = f"user {result.user_id}" + (
        " (unknown: cold-start query from features only)" if result.cold_start else ""
    )
    lines = [head, f"{'#':>3}  {'item':>8}  {'retrieval':>9}  {'ranker':>6}  title"]
    for i, rec in enumerate(result.items, 1):
        scores = f"{rec.retrieval_score:>9.4f}  {rec.ranking_score:>6.3f}"
        lines.append(f"{i:>3}  {rec.item_id:>8}  {scores}  {rec.title}")
    return "\n".join(lines)

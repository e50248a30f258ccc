"""Retrieve-then-rank: two-tower + FAISS for candidates, DLRM to order them.

    user -> query tower -> FAISS search (K candidates, training items excluded)
         -> DLRM scores (user, candidate) pairs -> top N by DLRM score

Both models are plain CPU task modules (``app.trained.load_trained`` loads them).
An unknown user gets a cold-start query built from features only (OOV id, no attributes,
optionally a history given by the caller), and the result says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from torchrec_recsys.data.dataset import ExampleTable, RecDataset
from torchrec_recsys.data.jagged import JaggedColumn
from torchrec_recsys.errors import UserError
from torchrec_recsys.metrics.retrieval import (
    CHUNK_ELEMENTS,
    catalogue_coverage,
    query_chunks,
    rank_metrics,
)
from torchrec_recsys.retrieval.candidates import (
    MISS_RANK,
    RANK_FEATURE_NAMES,
    pipeline_pairs,
    rerank_positions,
    retrieval_features,
    retrieve_candidates,
)
from torchrec_recsys.retrieval.faiss_index import LoadedIndex, search
from torchrec_recsys.retrieval.predict import TrainedTask, predict


@dataclass
class Recommendation:
    item_id: str
    title: str
    retrieval_score: float
    ranking_score: float  # DLRM probability (of a rating >= the positive rating, or for a
    # pipeline ranker of being the user's next item among the candidates)


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


def check_request_sizes(k: int, candidates: int) -> None:
    """Reject a request for ``k`` of ``candidates`` items that cannot be answered.

    Raises:
        UserError: ``k`` or ``candidates`` below 1, or ``k > candidates``.
    """
    if k < 1 or candidates < 1:
        raise UserError(f"k = {k} and candidates = {candidates} must both be at least 1")
    if k > candidates:
        raise UserError(f"k = {k} must not exceed the number of candidates ({candidates})")


def recommend(
    retriever: TrainedTask,
    ranker: TrainedTask,
    index: LoadedIndex,
    user_id: str,
    k: int = 10,
    candidates: int = 100,
    history: list[str] | None = None,
    rank_cap: int = 100,
) -> RecommendationList:
    """Top ``k`` items for ``user_id`` from ``candidates`` retrieved ones, ordered by the DLRM
    (a pipeline-objective DLRM also reads the retrieval score and rank, capped at
    ``rank_cap``: its training's ``model.candidates``)."""
    check_request_sizes(k, candidates)
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
    item_rows = torch.tensor(ranker_rows(k_data, candidate_ids))
    ranker_user, _ = user_query_table(k_data, user_id, history or [])
    index = torch.zeros(len(item_rows), dtype=torch.int64)
    if has_pairs(k_data):  # a pipeline ranker also reads the retrieval score, rank, context
        features = retrieval_features(
            torch.tensor(scores[0], dtype=torch.float32), torch.arange(len(item_rows)), rank_cap
        )
        pairs = pipeline_pairs(k_data, ranker_user, index, item_rows, features)
    else:
        pairs = k_data.pair_table(ranker_user, index, item_rows)
    probabilities = predict(ranker.task, pairs, k_data, "ranking")  # [C]
    items = top_recommendations(k_data, candidate_ids, item_rows, scores[0], probabilities, k)
    return RecommendationList(user_id=user_id, cold_start=cold, items=items, query=query_table)


def ranker_rows(data: RecDataset, candidate_ids: list[str]) -> list[int]:
    """Ranker catalogue rows of the retrieved ids.

    Raises:
        UserError: a retrieved id is not in the ranker's catalogue.
    """
    missing = [c for c in candidate_ids if c not in data.items.row_of]
    if missing:
        raise UserError(f"retrieved item id {missing[0]!r} is not in the ranker's catalogue")
    return [data.items.row_of[c] for c in candidate_ids]


def top_recommendations(
    data: RecDataset,
    candidate_ids: list[str],
    item_rows: Sequence[int] | torch.Tensor,
    retrieval_scores: Sequence[float],
    probabilities: torch.Tensor,
    k: int,
) -> list[Recommendation]:
    """The ``k`` candidates with the highest ranking ``probabilities`` [C], best first, each
    with its title and both scores (``item_rows`` [C]: ranker catalogue rows)."""
    order = torch.argsort(probabilities, descending=True)[:k].tolist()
    return [
        Recommendation(
            item_id=candidate_ids[i],
            title=data.items.texts[int(item_rows[i])],
            retrieval_score=float(retrieval_scores[i]),
            ranking_score=float(probabilities[i]),
        )
        for i in order
    ]


PairScorer = Callable[[ExampleTable, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``(query table, query index [M], item rows [M], retrieval features [M, 2]) -> scores [M]``:
a second-stage ranker's score of each (query, candidate item) pair (higher = better)."""


def rating_scorer(ranker: TrainedTask) -> PairScorer:
    """A DLRM (or any ranking task) scoring pairs with the ranker's own features only."""

    def score(
        queries: ExampleTable, index: torch.Tensor, items: torch.Tensor, _: torch.Tensor
    ) -> torch.Tensor:
        pairs = ranker.data.pair_table(queries, index, items)
        return predict(ranker.task, pairs, ranker.data, "ranking")

    return score


def pipeline_scorer(ranker: TrainedTask) -> PairScorer:
    """A pipeline-objective DLRM: its features plus the retrieval score and rank (and the
    context features, :func:`~torchrec_recsys.retrieval.candidates.pipeline_pairs`)."""

    def score(
        queries: ExampleTable, index: torch.Tensor, items: torch.Tensor, retrieval: torch.Tensor
    ) -> torch.Tensor:
        pairs = pipeline_pairs(ranker.data, queries, index, items, retrieval)
        return predict(ranker.task, pairs, ranker.data, "ranking")

    return score


def two_stage_metrics(
    queries: torch.Tensor,
    items: torch.Tensor,
    query_table: ExampleTable,
    exclude: JaggedColumn | None,
    scorers: dict[str, PairScorer],
    candidates: int = 100,
    k: int = 10,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> dict[str, dict[str, float]]:
    """Retrieval alone and retrieval re-ranked by each scorer, on the queries of a split.

    Retrieval is exact (all items scored, the user's training items dropped); each scorer
    re-orders the top ``candidates``; a target outside the candidates is a miss for all.
    Per method: Recall, NDCG, HR, MAP at ``k``, MRR over the candidate list (a target
    outside it counts 0) and catalogue coverage of the final top ``k`` lists.

    Args:
        queries: [Q, D] query embeddings of ``query_table``'s rows; items: [I, D].
        exclude: per-user catalogue rows dropped from retrieval (``query_table.user_rows``).
    """
    positions: dict[str, list[torch.Tensor]] = {"retrieval": [], **{n: [] for n in scorers}}
    lists: dict[str, list[torch.Tensor]] = {name: [] for name in positions}
    candidate_hits = []
    # one chunk of queries at a time: memory ~ chunk x I scores + chunk x C ranker pairs
    for begin, end in query_chunks(len(queries), len(items), chunk_elements):
        rows = torch.arange(begin, end)
        table = query_table.select(rows)
        found = retrieve_candidates(
            queries[rows],
            items,
            table.item_rows,
            candidates,
            exclude,
            table.user_rows,
            chunk_elements,
        )
        n = len(rows)
        index = torch.arange(n).repeat_interleave(candidates)  # [n * C]
        ranks = torch.arange(candidates).repeat(n)  # [n * C] retrieval position of each pair
        features = retrieval_features(found.top_scores.reshape(-1), ranks, candidates)
        base_position = None
        for name, scorer in scorers.items():
            scores = scorer(table, index, found.top.reshape(-1), features).view(n, candidates)
            base_position, position, reranked = rerank_positions(
                found.top, scores.double(), table.item_rows
            )
            nan_rows = scores.isnan().any(1) | found.target_scores.isnan()  # [n]: a miss
            positions[name].append(position.masked_fill(nan_rows, MISS_RANK))
            lists[name].append(reranked[:, :k])
        if base_position is None:
            base_position, _, _ = rerank_positions(
                found.top, -torch.arange(candidates).double().expand(n, -1), table.item_rows
            )
        positions["retrieval"].append(
            base_position.masked_fill(found.target_scores.isnan(), MISS_RANK)
        )
        lists["retrieval"].append(found.top[:, :k])
        candidate_hits.append((found.top == table.item_rows[:, None]).any(1))
    out: dict[str, dict[str, float]] = {}
    for name in positions:
        ranked = rank_metrics(torch.cat(positions[name]), (k,))
        out[name] = {
            **{m: ranked[m] for m in (f"recall@{k}", f"ndcg@{k}", f"hr@{k}", f"map@{k}", "mrr")},
            f"coverage@{k}": catalogue_coverage(torch.cat(lists[name]), len(items), k),
        }
    out["candidates_recall"] = {
        f"recall@{candidates}": float(torch.cat(candidate_hits).float().mean())
    }
    return out


def evaluate_two_stage(
    retriever: TrainedTask,
    ranker: TrainedTask | None = None,
    split: str = "test",
    candidates: int = 100,
    k: int = 10,
    scorers: dict[str, PairScorer] | None = None,
) -> dict[str, dict[str, float]]:
    """:func:`two_stage_metrics` of ``split`` with the retriever's embeddings.

    ``scorers`` (name -> :data:`PairScorer`) are the second stages; with only ``ranker``
    given, it is scored as a rating DLRM under the name ``retrieve_then_rank``.
    """
    r_data = retriever.data
    queries_table = r_data.splits[split]
    if scorers is None:
        if ranker is None:
            raise UserError("evaluate_two_stage needs a ranker or scorers")
        scorers = {"retrieve_then_rank": rating_scorer(ranker)}
    if (
        ranker is not None
        and not torch.equal(queries_table.item_rows, ranker.data.splits[split].item_rows)
        and not has_pairs(ranker.data)
    ):
        raise UserError("the retriever and the ranker were trained on different splits of the data")
    queries = predict(retriever.task, queries_table, r_data, "query")  # [Q, D]
    items = predict(retriever.task, r_data.catalogue_table(), r_data, "item")  # [I, D]
    return two_stage_metrics(
        queries, items, queries_table, r_data.users.train_items, scorers, candidates, k
    )


def has_pairs(data: RecDataset) -> bool:
    """Whether ``data`` holds pipeline pairs (its spec has the retrieval features)."""
    return RANK_FEATURE_NAMES[0] in data.spec.dense_names()


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

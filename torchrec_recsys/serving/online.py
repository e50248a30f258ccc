"""The service's per-request path: retrieve-then-rank over feature rows taken at load time.

    user -> query batch (retriever's user rows, or a cold-start row) -> query tower
         -> FAISS search (training items and the given history excluded, C candidates)
         -> pair batch (ranker's user row x candidates' item rows) -> DLRM -> top k

The steps, exclusions and scores are those of ``retrieval.two_stage.recommend`` (the offline
path; ``tests/serving`` checks the service's answers against it to float tolerance); only the
batches differ in how they are built: gathered with numpy from :class:`OnlineFeatures`
(``data/feature_rows.py``), which take the offline tables once when a bundle loads, instead of
one ``user_table`` / ``pair_table`` / ``whole_batch`` per request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from torchrec_recsys.data.dataset import RecDataset
from torchrec_recsys.data.feature_rows import TowerRows, pair_batch, query_batch
from torchrec_recsys.data.features import ITEM, USER
from torchrec_recsys.errors import UserError
from torchrec_recsys.retrieval.candidates import pipeline_pairs, retrieval_features
from torchrec_recsys.retrieval.faiss_index import LoadedIndex, search
from torchrec_recsys.retrieval.predict import TrainedTask, predict, predict_batch
from torchrec_recsys.retrieval.two_stage import (
    RecommendationList,
    check_request_sizes,
    has_pairs,
    ranker_rows,
    top_recommendations,
    user_query_table,
)


class NothingToRecommend(UserError):
    """Every indexed item is excluded (the given history and the user's training items)."""


QUERY_CACHE_ROWS = 1_000_000
"""Known users whose query embedding is kept (D floats each); later ones are recomputed."""


@dataclass
class OnlineFeatures:
    """Every user's and catalogue item's features, as the offline tables hold them."""

    retriever_users: TowerRows
    ranker_users: TowerRows
    ranker_items: TowerRows
    train_offsets: np.ndarray  # [U + 1] per retriever user: their training items
    train_rows: np.ndarray  # [nnz] their index rows (excluded from retrieval; -1: not indexed)
    query_cache: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    """Retriever user row -> query embedding [1, D], filled on first request: a known user's
    snapshot features never change, so neither does their query (the same forward's output,
    kept). At most ``QUERY_CACHE_ROWS`` rows."""

    @classmethod
    def build(
        cls, retriever: TrainedTask, ranker: TrainedTask, index: LoadedIndex
    ) -> OnlineFeatures:
        """Take the user and item tables of both models' snapshots once (validated)."""
        r_data, k_data = retriever.data, ranker.data
        index_row = np.array([index.row_of.get(i, -1) for i in r_data.items.item_ids])  # [I]
        return cls(
            retriever_users=_all_users(r_data),
            ranker_users=_all_users(k_data),
            ranker_items=TowerRows.from_table(k_data.catalogue_table(), k_data.spec, ITEM),
            train_offsets=r_data.users.train_items.offsets.numpy(),
            train_rows=index_row[r_data.users.train_items.values.numpy()].astype(np.int64),
        )

    def excluded_rows(
        self, index: LoadedIndex, user_row: int | None, history: list[str]
    ) -> np.ndarray:
        """Index rows a request must not get back: the user's training items (a known user,
        ``user_row``) and the given history; unique, as ``search`` makes ``exclude``. [E]"""
        rows = [index.row_of[h] for h in history if h in index.row_of]
        if user_row is not None:
            begin, end = self.train_offsets[user_row], self.train_offsets[user_row + 1]
            train = self.train_rows[begin:end]
            return np.unique(np.concatenate([train[train >= 0], np.array(rows, np.int64)]))
        return np.unique(np.array(rows, dtype=np.int64))


def _all_users(data: RecDataset) -> TowerRows:
    rows = torch.arange(len(data.user_ids))
    return TowerRows.from_table(data.user_table(rows), data.spec, USER)


def _request_user(
    data: RecDataset, users: TowerRows, user_id: str, history: list[str]
) -> tuple[TowerRows, int, bool]:
    """Rows + row of the request's user features, and whether the user is unknown: a known
    user without a given history reads their snapshot row, anyone else a cold-start row
    (``RecDataset.cold_user_table``), as ``two_stage.user_query_table`` decides."""
    row = data.user_row_of.get(user_id)
    if row is not None and not history:
        return users, row, False
    return TowerRows.from_table(data.cold_user_table(history), data.spec, USER), 0, row is None


@dataclass
class OnlineAnswer:
    """One request's answer and the retriever's query features (for drift monitoring)."""

    result: RecommendationList
    query_sparse: dict[str, np.ndarray]  # user key -> the query row's values [len]
    query_dense: np.ndarray  # [num_dense] the query row's dense features


def recommend_online(
    retriever: TrainedTask,
    ranker: TrainedTask,
    index: LoadedIndex,
    features: OnlineFeatures,
    user_id: str,
    k: int = 10,
    candidates: int = 100,
    history: list[str] | None = None,
    rank_cap: int = 100,
) -> OnlineAnswer:
    """Top ``k`` of ``candidates`` retrieved items for ``user_id``, ordered by the DLRM: the
    answer of ``two_stage.recommend`` with the same arguments.

    The answer holds fewer than ``k`` items when fewer are left after the exclusions.

    Raises:
        NothingToRecommend: the exclusions leave no indexed item.
        UserError: ``k`` or ``candidates`` below 1, ``k > candidates``, or a retrieved item
            missing from the ranker's catalogue.
    """
    check_request_sizes(k, candidates)
    history = history or []
    r_data, k_data = retriever.data, ranker.data
    users, row, cold = _request_user(r_data, features.retriever_users, user_id, history)
    snapshot = users is features.retriever_users  # a known user without a given history
    query = features.query_cache.get(row) if snapshot else None
    if query is None:
        dense, sparse = query_batch(users, row)  # [1, num_dense], KJT of 1 row
        query = predict_batch(retriever.task, dense, sparse, "query").numpy()  # [1, D]
        if snapshot and len(features.query_cache) < QUERY_CACHE_ROWS:
            features.query_cache[row] = query
    # never recommend the given history back, nor a known user's training items
    seen = features.excluded_rows(index, None if cold else r_data.user_row_of[user_id], history)
    scores, ids = search(index, query, candidates, exclude_rows=[seen])  # [1, C], <= C ids
    candidate_ids = ids[0]
    if not candidate_ids:
        raise NothingToRecommend(
            f"nothing to recommend to user {user_id[:64]!r}: the history ({len(history)} items) "
            f"and the user's training items exclude all {index.ntotal} indexed items"
        )
    scores = scores[:, : len(candidate_ids)]  # [1, C'] (the unused slots hold -inf)
    item_rows = np.array(ranker_rows(k_data, candidate_ids), dtype=np.int64)  # [C]
    if has_pairs(k_data):
        # a pipeline ranker also reads the retrieval score and rank and the time-aware context
        # features: its pairs come from the one builder the offline path uses
        extra = retrieval_features(
            torch.from_numpy(scores[0]), torch.arange(len(item_rows)), rank_cap
        )
        queries, _ = user_query_table(k_data, user_id, history)
        index_rows = torch.zeros(len(item_rows), dtype=torch.int64)
        table = pipeline_pairs(k_data, queries, index_rows, torch.from_numpy(item_rows), extra)
        probabilities = predict(ranker.task, table, k_data, "ranking")  # [C]
    else:
        k_users, k_row, _ = _request_user(k_data, features.ranker_users, user_id, history)
        pair_dense, pairs = pair_batch(k_users, k_row, features.ranker_items, item_rows)
        probabilities = predict_batch(ranker.task, pair_dense, pairs, "ranking")  # [C]
    items = top_recommendations(k_data, candidate_ids, item_rows, scores[0], probabilities, k)
    return OnlineAnswer(
        result=RecommendationList(user_id=user_id, cold_start=cold, items=items),
        query_sparse={key: users.row(key, row) for key in users.offsets},
        query_dense=users.dense[row],
    )

"""Candidates, negative sampling and the two-stage evaluation against brute-force references."""

from __future__ import annotations

import math

import pytest
import torch

from torchrec_recsys.data.dataset import ExampleTable
from torchrec_recsys.data.jagged import JaggedColumn
from torchrec_recsys.retrieval.candidates import (
    pair_retrieval_features,
    retrieve_candidates,
    sample_negatives,
)
from torchrec_recsys.retrieval.two_stage import two_stage_metrics

NUM_ITEMS, DIM = 40, 6


def _setup(num_queries: int = 25, seed: int = 0):  # type: ignore[no-untyped-def]
    gen = torch.Generator().manual_seed(seed)
    queries = torch.randn(num_queries, DIM, generator=gen)
    items = torch.randn(NUM_ITEMS, DIM, generator=gen)
    train_items = JaggedColumn.from_lists([[0, 1, 2, 3], [5, 9], [], [7, 8, 10, 11, 12]])
    user_rows = torch.arange(num_queries) % 4
    targets = torch.randint(0, NUM_ITEMS, (num_queries,), generator=gen)
    targets[:4] = torch.tensor([0, 5, 1, 7])  # training-example targets: their own train items
    return queries, items, train_items, user_rows, targets


def _excluded(train_items: JaggedColumn, user: int) -> set[int]:
    return set(train_items.select(torch.tensor([user])).values.tolist())


def test_candidates_match_brute_force() -> None:
    queries, items, train_items, user_rows, targets = _setup()
    found = retrieve_candidates(
        queries, items, targets, 8, train_items, user_rows, chunk_elements=4 * len(items)
    )
    for q in range(len(queries)):
        scores = (items @ queries[q]).tolist()
        dropped = _excluded(train_items, int(user_rows[q]))
        allowed = [i for i in range(NUM_ITEMS) if i not in dropped]
        order = sorted(allowed, key=lambda i: -scores[i])[:8]
        assert found.top[q].tolist() == order
        t = int(targets[q])
        better = [i for i in allowed if scores[i] > scores[t] and i != t]
        assert int(found.target_ranks[q]) == len(better)
        assert float(found.target_scores[q]) == pytest.approx(scores[t], abs=1e-5)


@pytest.mark.parametrize("num_hard,num_random", [(5, 0), (3, 4), (0, 6)])
def test_negatives_are_never_the_positive_nor_a_training_item(
    num_hard: int, num_random: int
) -> None:
    queries, items, train_items, user_rows, targets = _setup(num_queries=200)
    found = retrieve_candidates(queries, items, targets, 8, train_items, user_rows)
    popularity = torch.ones(NUM_ITEMS)
    popularity[targets[:50]] = 50.0  # make the positives likely draws
    negatives = sample_negatives(
        found,
        targets,
        num_hard,
        num_random,
        popularity,
        train_items,
        user_rows,
        torch.Generator().manual_seed(1),
    )
    assert negatives.shape == (200, num_hard + num_random)
    for q in range(200):
        row = negatives[q].tolist()
        assert int(targets[q]) not in row
        assert not set(row) & _excluded(train_items, int(user_rows[q]))
        assert len(set(row)) == len(row)  # no repeats within a query
        assert set(row[:num_hard]) <= set(found.top[q].tolist())  # hard = from the top K


def test_pair_features_rank_is_the_top_k_position_else_capped() -> None:
    queries, items, train_items, user_rows, targets = _setup()
    found = retrieve_candidates(queries, items, targets, 8, train_items, user_rows)
    outside = next(i for i in range(NUM_ITEMS) if i not in found.top[0].tolist())
    chosen = torch.tensor([[int(found.top[0, 3]), outside]])
    features = pair_retrieval_features(queries[:1], items, _first(found), chosen)
    assert features[0, 0, 1] == pytest.approx(3 / 8) and features[0, 1, 1] == 1.0
    assert features[0, 1, 0] == pytest.approx(float(items[outside] @ queries[0]), abs=1e-5)


def _first(found):  # type: ignore[no-untyped-def]
    return type(found)(
        found.top[:1], found.top_scores[:1], found.target_scores[:1], found.target_ranks[:1]
    )


def test_two_stage_metrics_match_brute_force() -> None:
    queries, items, train_items, user_rows, targets = _setup(num_queries=30)
    targets[:4] = torch.tensor([4, 6, 1, 13])  # held-out targets: not training items
    table = ExampleTable(
        sparse={},
        dense=torch.zeros(30, 0),
        labels=torch.zeros(30),
        user_rows=user_rows,
        item_rows=targets,
    )
    bias = torch.randn(NUM_ITEMS, generator=torch.Generator().manual_seed(3))

    def scorer(q_table, index, item_rows, retrieval):  # type: ignore[no-untyped-def]
        return bias[item_rows] - retrieval[:, 1]  # an item prior plus the retrieval order

    c, k = 12, 5
    got = two_stage_metrics(
        queries, items, table, train_items, {"prior": scorer}, c, k, chunk_elements=7 * NUM_ITEMS
    )
    ref_positions = {"retrieval": [], "prior": []}
    lists = {"retrieval": set(), "prior": set()}
    for q in range(30):
        scores = (items @ queries[q]).tolist()
        dropped = _excluded(train_items, int(user_rows[q]))
        top = sorted((i for i in range(NUM_ITEMS) if i not in dropped), key=lambda i: -scores[i])[
            :c
        ]
        prior = {i: float(bias[i]) - top.index(i) / c for i in top}
        reranked = sorted(top, key=lambda i: -prior[i])
        for name, ordered in (("retrieval", top), ("prior", reranked)):
            t = int(targets[q])
            ref_positions[name].append(ordered.index(t) if t in ordered else None)
            lists[name] |= set(ordered[:k])
    for name, positions in ref_positions.items():
        hits = [p for p in positions if p is not None and p < k]
        assert got[name][f"recall@{k}"] == pytest.approx(len(hits) / 30)
        ndcg = sum(1 / math.log2(p + 2) for p in hits) / 30
        assert got[name][f"ndcg@{k}"] == pytest.approx(ndcg)
        mrr = sum(1 / (p + 1) for p in positions if p is not None) / 30
        assert got[name]["mrr"] == pytest.approx(mrr, abs=1e-8)
        assert got[name][f"coverage@{k}"] == pytest.approx(len(lists[name]) / NUM_ITEMS)
    in_candidates = sum(p is not None for p in ref_positions["retrieval"]) / 30
    assert got["candidates_recall"][f"recall@{c}"] == pytest.approx(in_candidates)

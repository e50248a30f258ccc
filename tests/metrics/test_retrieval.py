"""Retrieval metrics (Recall, NDCG, HR, MAP, MRR, coverage) against brute-force references."""

from __future__ import annotations

import math

import pytest
import torch

from torchrec_recsys.data.jagged import JaggedColumn
from torchrec_recsys.metrics.retrieval import (
    catalogue_coverage,
    chunked_top_k,
    long_tail_mask,
    query_chunks,
    rank_metrics,
    ranked_list_metrics,
    recall_ndcg,
    target_ranks,
)


def _brute_force_rank(q: torch.Tensor, items: torch.Tensor, target: int, excluded: set[int]) -> int:
    scores = (items @ q).tolist()
    better = [i for i, s in enumerate(scores) if s > scores[target] and i not in excluded]
    return len(better)


def test_ranks_match_brute_force_with_exclusions() -> None:
    gen = torch.Generator().manual_seed(0)
    queries, items = torch.randn(40, 8, generator=gen), torch.randn(100, 8, generator=gen)
    targets = torch.randint(0, 100, (40,), generator=gen)
    history = [torch.randint(0, 100, (int(n),), generator=gen).tolist() for n in range(10)]
    history[3].append(int(targets[3]))  # a target inside the exclusion list is still ranked
    exclude = JaggedColumn.from_lists(history)
    users = torch.arange(40) % 10
    ranks = target_ranks(queries, items, targets, exclude, users, chunk_elements=7 * 100)
    expected = [
        _brute_force_rank(
            queries[i], items, int(targets[i]), set(history[int(users[i])]) - {int(targets[i])}
        )
        for i in range(40)
    ]
    assert ranks.tolist() == expected
    plain = target_ranks(queries, items, targets)
    assert (plain >= ranks).all() and (plain > ranks).any()


def test_recall_and_ndcg_values() -> None:
    metrics = recall_ndcg(torch.tensor([0, 3, 20]), ks=(1, 10))
    assert math.isclose(metrics["recall@1"], 1 / 3, rel_tol=1e-6)
    assert math.isclose(metrics["recall@10"], 2 / 3, rel_tol=1e-6)
    assert math.isclose(metrics["ndcg@10"], (1 + 1 / math.log2(5)) / 3)


def test_chunks_bound_the_score_matrix() -> None:
    chunks = list(query_chunks(10, 300, chunk_elements=1000))  # 3 queries x 300 items each
    assert chunks == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert list(query_chunks(2, 10**6, chunk_elements=10)) == [(0, 1), (1, 2)]  # at least 1


def test_chunked_top_k_matches_dense_top_k_with_exclusions() -> None:
    gen = torch.Generator().manual_seed(1)
    queries, items = torch.randn(23, 8, generator=gen), torch.randn(50, 8, generator=gen)
    history = [torch.randint(0, 50, (int(n),), generator=gen).tolist() for n in range(5)]
    users = torch.arange(23) % 5
    scores, rows = chunked_top_k(
        queries, items, 6, JaggedColumn.from_lists(history), users, chunk_elements=4 * 50
    )
    dense = queries @ items.T  # [Q, I] reference
    for q in range(23):
        dense[q, history[int(users[q])]] = float("-inf")
    expected_scores, expected_rows = torch.topk(dense, 6, dim=1)
    assert torch.equal(rows, expected_rows)
    torch.testing.assert_close(scores, expected_scores)  # (matmul blocking differs)


def test_hr_map_mrr_against_hand_computed_values() -> None:
    ranks = torch.tensor([0, 3, 20, 10**9])  # the last target is outside a truncated list
    m = rank_metrics(ranks, ks=(1, 10))
    assert m["hr@1"] == m["recall@1"] == 0.25
    assert m["hr@10"] == m["recall@10"] == 0.5
    assert m["map@1"] == pytest.approx(1.0 / 4)
    assert m["map@10"] == pytest.approx((1 + 1 / 4) / 4)
    assert m["mrr"] == pytest.approx((1 + 1 / 4 + 1 / 21 + 1 / (10**9 + 1)) / 4)


def test_chunked_top_items_and_coverage_match_brute_force() -> None:
    gen = torch.Generator().manual_seed(0)
    queries, items = torch.randn(7, 4, generator=gen), torch.randn(12, 4, generator=gen)
    exclude = JaggedColumn.from_lists([[0, 5], [], [11]])
    user_rows = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    scores, rows = chunked_top_k(queries, items, 3, exclude, user_rows, chunk_elements=2 * 12)
    for q in range(7):
        s = queries[q] @ items.T
        s[exclude.select(user_rows[q : q + 1]).values] = float("-inf")
        expected = torch.argsort(s, descending=True)[:3]
        assert rows[q].tolist() == expected.tolist()
        assert torch.allclose(scores[q], s[expected])
    assert catalogue_coverage(rows, 12, 3) == len(set(rows.flatten().tolist())) / 12
    assert catalogue_coverage(rows, 12, 1) == len(set(rows[:, 0].tolist())) / 12


def test_long_tail_targets_have_one_to_max_training_interactions_and_are_not_cold() -> None:
    counts = torch.tensor([0, 1, 10, 11, 3, 0])
    cold = torch.tensor([True, False, False, False, True, False])
    assert long_tail_mask(counts, cold).tolist() == [False, True, True, False, False, False]
    assert long_tail_mask(counts, cold, max_count=1).tolist() == [False, True] + [False] * 4


def test_ranked_list_metrics_report_long_tail_recall_on_the_tail_targets_only() -> None:
    ranks = torch.tensor([0, 15, 3, 50])  # hits @10: yes, no, yes, no
    top = torch.arange(40).reshape(4, 10)
    cold = torch.zeros(4, dtype=torch.bool)
    tail = torch.tensor([True, True, False, False])
    out = ranked_list_metrics(ranks, top, 100, 100, cold, tail=tail)
    assert out["tail_targets"] == 2.0
    assert out["tail_recall@10"] == pytest.approx(0.5)
    assert out["recall@10"] == pytest.approx(0.5)
    assert "tail_recall@10" not in ranked_list_metrics(ranks, top, 100, 100, cold)
    none = ranked_list_metrics(ranks, top, 100, 100, cold, tail=torch.zeros(4, dtype=torch.bool))
    assert none["tail_targets"] == 0.0 and none["tail_recall@10"] == 0.0

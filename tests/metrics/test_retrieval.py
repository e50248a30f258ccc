"""Recall@K / NDCG@K against a brute-force reference, with training-item exclusion."""

from __future__ import annotations

import math

import torch

from torchrec_recsys.data.jagged import JaggedColumn
from torchrec_recsys.metrics.retrieval import recall_ndcg, target_ranks


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
    ranks = target_ranks(queries, items, targets, exclude, users, chunk=7)
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

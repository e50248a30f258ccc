"""Non-learned baselines on the same split, scored with the same AUC implementation.

* ``popularity``: score = the item's number of training interactions.
* ``item_positive_rate``: score = (positives + 1) / (interactions + 2) of the item in training
  (a smoothed per-item click-through rate; the strongest item-only baseline without a model).
"""

from __future__ import annotations

import torch

from torchrec_recsys.data.dataset import RecDataset
from torchrec_recsys.metrics.ranking import auc, normalized_entropy
from torchrec_recsys.metrics.retrieval import (
    catalogue_coverage,
    long_tail_mask,
    rank_metrics,
    ranked_list_metrics,
    ranks_and_top_k,
)


def baseline_aucs(data: RecDataset, split: str = "test") -> dict[str, float]:
    """AUC of each baseline on ``split`` (and the NE of the positive rate, a probability;
    popularity counts are not probabilities, so they have no NE)."""
    train, target = data.splits["train"], data.splits[split]
    num_items = len(data.items)
    counts = torch.bincount(train.item_rows, minlength=num_items).double()  # [I]
    positives = torch.bincount(train.item_rows, weights=train.labels.double(), minlength=num_items)
    rate = (positives + 1) / (counts + 2)  # [I]
    return {
        "popularity": auc(counts[target.item_rows], target.labels),
        "item_positive_rate": auc(rate[target.item_rows], target.labels),
        "item_positive_rate_ne": normalized_entropy(rate[target.item_rows], target.labels),
    }


def popularity_retrieval(
    data: RecDataset,
    split: str = "test",
    ks: tuple[int, ...] = (10, 50, 100),
    exclude_train_items: bool = True,
) -> dict[str, float]:
    """Retrieval metrics (:func:`rank_metrics`, coverage at the smallest K) of recommending the
    most-interacted training items (minus the user's own)."""
    counts = data.items.train_counts.double()  # [I]
    target = data.splits[split]
    queries = torch.ones(len(target), 1, dtype=torch.double)  # every user gets the same scores
    exclude = data.users.train_items if exclude_train_items else None
    k = min(ks)
    ranks, _, top, _ = ranks_and_top_k(  # [N], [N, k]
        queries, counts[:, None], target.item_rows, k, exclude, target.user_rows
    )
    return {**rank_metrics(ranks, ks), f"coverage@{k}": catalogue_coverage(top, len(counts), k)}


def popularity_ranked_list(
    data: RecDataset, split: str = "test", exclude_train_items: bool = True
) -> dict[str, float]:
    """:func:`ranked_list_metrics` (Recall, NDCG, MRR, coverage, cold recall) of recommending
    the most-interacted training items, the user's own training items excluded."""
    target = data.splits[split]
    num_items = len(data.items)
    exclude = data.users.train_items if exclude_train_items else None
    queries = torch.ones(len(target), 1, dtype=torch.double)  # every user: the same scores
    counts = data.items.train_counts.double()[:, None]  # [I, 1]
    ranks, _, top, _ = ranks_and_top_k(  # [N], [N, 10]
        queries, counts, target.item_rows, 10, exclude, target.user_rows
    )
    cold = data.items.cold[target.item_rows]
    tail = long_tail_mask(data.items.train_counts[target.item_rows], cold)
    return ranked_list_metrics(ranks, top, num_items, num_items, cold, tail=tail)

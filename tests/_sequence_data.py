"""Tiny synthetic item sequences where the next item is a fixed function of the last one."""

from __future__ import annotations

import torch

from torchrec_recsys.data.features import USER, SparseFeature
from torchrec_recsys.data.jagged import JaggedColumn
from torchrec_recsys.data.sequences import SequenceFeatures, SequenceSplit


def next_item(items: torch.Tensor, num_items: int) -> torch.Tensor:
    """The deterministic successor of each item: a fixed permutation of the catalogue."""
    return (items * 7 + 3) % num_items


def chain_split(num_examples: int, num_items: int, max_history: int, seed: int) -> SequenceSplit:
    """Histories that follow ``next_item`` from a random start; the target continues them."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, max_history + 1, (num_examples,), generator=g)
    rows, targets = [], []
    for length in lengths.tolist():
        item = torch.randint(0, num_items, (1,), generator=g)
        seq = [int(item)]
        for _ in range(length):
            seq.append(int(next_item(torch.tensor(seq[-1]), num_items)))
        rows.append(seq[:-1])
        targets.append(seq[-1])
    return SequenceSplit(
        history=JaggedColumn.from_lists(rows),
        targets=torch.tensor(targets),
        user_rows=torch.arange(num_examples) % 5,
    )


def item_id_features(num_items: int, dim: int) -> SequenceFeatures:
    """Item-ID spelling (SASRec): catalogue row r is token r + 1 (row 0 = padding)."""
    feature = SparseFeature("history_items", "t_item_id", num_items + 1, dim, "none", USER)
    return SequenceFeatures(feature, (torch.arange(num_items) + 1)[:, None])  # [I, 1]


def sid_features(codes: torch.Tensor, sizes: list[int], dim: int) -> SequenceFeatures:
    """SID spelling: per-level token ranges after the padding token 0, plus a user token."""
    offsets = torch.tensor([1 + sum(sizes[:t]) for t in range(len(sizes))])
    feature = SparseFeature("history_sid", "t_sid_token", 1 + sum(sizes), dim, "none", USER)
    user = SparseFeature("user_token", "t_user_token", 6, dim, "none", USER)
    return SequenceFeatures(feature, codes + offsets[None, :], user, torch.arange(5) + 1)


def unique_codes(num_items: int, sizes: list[int], seed: int) -> torch.Tensor:
    """[I, L] distinct random code tuples."""
    g = torch.Generator().manual_seed(seed)
    total = 1
    for k in sizes:
        total *= k
    flat = torch.randperm(total, generator=g)[:num_items]
    codes = []
    for k in reversed(sizes):
        codes.append(flat % k)
        flat = flat // k
    return torch.stack(codes[::-1], dim=1)

"""Context features of (query, item) pairs against a brute-force reference on a toy log."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from _configs import dataset_configs

from torchrec_recsys.app.pipeline import last_per_user
from torchrec_recsys.data import context
from torchrec_recsys.data.context import build_pair_context
from torchrec_recsys.data.dataset import RecDataset, build_dataset
from torchrec_recsys.data.readers import RawData


def _data(seed: int = 0) -> RecDataset:
    rng = np.random.default_rng(seed)
    n_users, n_items, n = 12, 15, 160
    inter = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in rng.integers(0, n_users, n)],
            "item_id": [f"i{i}" for i in rng.integers(0, n_items, n)],
            "rating": rng.integers(1, 6, n).astype(float),
            "timestamp": rng.integers(0, 60, n).astype(float),  # many ties
        }
    ).drop_duplicates(["user_id", "item_id"])
    genres = ["x|y", "y", "z", "x|z", "", "y|z", "w"]
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(n_items)],
            "title": [f"t{i}" for i in range(n_items)],
            "genres": [genres[i % len(genres)] for i in range(n_items)],
            "decade": [f"19{i % 3}0s" for i in range(n_items)],
        }
    )
    raw = RawData(inter, items, pd.DataFrame(), "toy")
    return build_dataset(
        raw,
        *dataset_configs(  # type: ignore[arg-type]
            item_categorical_columns=["genres", "decade"],
            user_categorical_columns=[],
            history_length=6,
            embedding_dim=4,
        ),
    )


def _reference(data: RecDataset, time: float | None, history: list[int], item: int) -> list[float]:
    """Every context feature of one pair, by loops over the training log."""
    train = data.splits["train"]
    assert train.times is not None
    order = sorted(range(len(train)), key=lambda r: float(train.times[r]))  # stable
    times = [float(train.times[r]) for r in order]
    items = [int(train.item_rows[r]) for r in order]
    users = [int(train.user_rows[r]) for r in order]
    total = len(order)
    p = total if time is None else sum(t < time for t in times)
    out = []
    for n in context.POPULARITY_WINDOWS:
        count = sum(items[j] == item for j in range(max(p - n, 0), p))
        out.append(math.log1p(count) / math.log1p(n))
    first = min([j for j in range(total) if items[j] == item], default=total)
    out.append(math.log1p(max(p - first, 0)) / math.log1p(total))
    sequences: dict[int, list[int]] = {}
    for j in range(total):
        sequences.setdefault(users[j], []).append(j)

    def follows(a: int) -> int:  # training transitions a -> item completed before p
        hits = 0
        for seq in sequences.values():
            for k, j in enumerate(seq):
                for d in range(1, context.WINDOW + 1):
                    if k + d < len(seq) and items[j] == a and items[seq[k + d]] == item:
                        hits += seq[k + d] < p
        return hits

    scale = math.log1p(len(data.user_ids) * context.WINDOW)
    recent = history[-context.RECENT :]
    out.append(math.log1p(follows(recent[-1])) / scale if recent else 0.0)
    out.append(math.log1p(sum(follows(a) for a in recent)) / scale)
    for key in ("item_genres", "item_decade"):
        column = data.items.sparse[key]

        def tokens(row: int, column=column) -> set[int]:  # type: ignore[no-untyped-def]
            return set(column.values[column.offsets[row] : column.offsets[row + 1]].tolist())

        mine = tokens(item) - {0}
        shared = sum(bool(mine & tokens(h)) for h in history)
        out.append(shared / max(len(history), 1))
    return out


def test_context_features_match_brute_force(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(context, "POPULARITY_WINDOWS", (5, 40))
    data = _data()
    ctx = build_pair_context(data, ["item_genres", "item_decade"])
    assert ctx.feature_names[-2:] == ["history_share_item_genres", "history_share_item_decade"]
    gen = torch.Generator().manual_seed(1)
    for split in ("train", "test"):
        queries = data.splits[split]
        index = torch.randint(0, len(queries), (40,), generator=gen)
        items = torch.randint(0, len(data.items), (40,), generator=gen)
        got = ctx.features(queries, index, items)  # [40, F]
        assert queries.history is not None and queries.times is not None
        for m in range(40):
            q = int(index[m])
            history = queries.history.select(torch.tensor([q])).values.tolist()
            want = _reference(data, float(queries.times[q]), history, int(items[m]))
            assert got[m].tolist() == pytest.approx(want, abs=1e-6), (split, m)
    # "now" (serving): every training interaction counts
    now = data.user_table(torch.tensor([0, 3]))
    got = ctx.features(now, torch.tensor([0, 1]), torch.tensor([2, 5]))
    for m, (user, item) in enumerate(((0, 2), (3, 5))):
        assert now.history is not None
        history = now.history.select(torch.tensor([m])).values.tolist()
        assert history == data.users.history.select(torch.tensor([user])).values.tolist()
        want = _reference(data, None, history, item)
        assert got[m].tolist() == pytest.approx(want, abs=1e-6)


def test_training_query_never_counts_its_own_interaction() -> None:
    data = _data(seed=3)
    ctx = build_pair_context(data, [])
    train = data.splits["train"]
    own = ctx.features(train, torch.arange(len(train)), train.item_rows)  # [T, F]
    assert train.times is not None
    first_time = float(train.times.min())
    at_start = train.times == first_time  # nothing strictly before them
    assert bool((own[at_start, :3] == 0).all())  # popularity windows and age are all 0


def test_last_per_user_keeps_each_users_latest_examples() -> None:
    data = _data(seed=5)
    train = data.splits["train"]
    kept = last_per_user(train, 2)
    assert kept.times is not None and train.times is not None
    for user in train.user_rows.unique().tolist():
        mine = train.times[train.user_rows == user]
        theirs = kept.times[kept.user_rows == user]
        assert len(theirs) == min(2, len(mine))
        assert sorted(theirs.tolist()) == sorted(mine.tolist())[-len(theirs) :]

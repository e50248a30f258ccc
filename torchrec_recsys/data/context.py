"""Context features of (query, candidate item) pairs: what a second-stage ranker knows and
the retriever does not, computed from the *training* interactions before the query's time.

    training interactions, ordered by time -> log (time, item) [T] and per-user sequences
    query: time t, history (catalogue rows of the user's previous items), candidate c
      p = number of training interactions strictly before t ("now": p = T)
      recent_popularity_<N>  log1p(#c among training interactions p-N .. p-1) / log1p(N)
      item_age               log1p(p - first training position of c) / log1p(T) (0 if unseen)
      co_occurrence_last     log1p(#users whose training sequence had c within WINDOW items
                             after the query's last history item, before t) / log1p(U)
      co_occurrence_recent   the same summed over the last RECENT history items
      history_share_<key>    share of the user's history items sharing a token of item
                             feature <key> (genres, author, ...) with c

Only training interactions strictly before the query's time are counted, so a training
query never sees its own interaction (nor later ones) and a test query sees exactly what a
model serving at that time would have had. The retrieval score and rank
(``retrieval/candidates.py``) are the other pair features; ``retrieval.candidates.
pipeline_pairs`` is the one place both are assembled, for training, evaluation and serving.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

from torchrec_recsys.data.jagged import JaggedColumn
from torchrec_recsys.data.tables import ExampleTable, ItemCatalogue

POPULARITY_WINDOWS = (1_000, 10_000)
"""Sizes (in training interactions) of the recent-popularity windows."""
WINDOW = 3
"""Co-occurrence: an item counts as following another within this many later items."""
RECENT = 5
"""Co-occurrence over the last this many history items."""
MAX_TOKEN_BITS = 63
"""A multi-valued attribute's tokens are compared as bits of ``token % 63`` (exact for
vocabularies of at most 63 tokens such as genres); single-valued ones by equality."""


def context_feature_names(attribute_keys: list[str]) -> list[str]:
    """Names of the context features, in column order."""
    return [
        *(f"recent_popularity_{n}" for n in POPULARITY_WINDOWS),
        "item_age",
        "co_occurrence_last",
        "co_occurrence_recent",
        *(f"history_share_{key}" for key in attribute_keys),
    ]


@dataclass
class PairContext:
    """The training-interaction statistics the context features read (built once per
    dataset by :func:`build_pair_context`; deterministic, so never saved)."""

    train_times: torch.Tensor  # [T] float64, sorted ascending
    item_position_keys: torch.Tensor  # [T] int64 sorted: item * (T + 1) + time position
    first_position: torch.Tensor  # [I] int64: first training position of each item (T: none)
    pair_keys: torch.Tensor  # [P] int64 sorted: (a * I + b) * (T + 1) + position of b
    attributes: dict[str, tuple[torch.Tensor, bool]]
    """item feature -> ([I] int64 token, or bit mask when multi-valued; is multi-valued)"""
    num_items: int
    num_users: int

    @property
    def feature_names(self) -> list[str]:
        return context_feature_names(list(self.attributes))

    def positions(self, times: torch.Tensor | None, n: int) -> torch.Tensor:
        """Training interactions strictly before each query time [n] (None: all of them)."""
        total = len(self.train_times)
        if times is None:
            return torch.full((n,), total, dtype=torch.int64)
        return torch.searchsorted(self.train_times, times.double(), side="left")

    def features(
        self, queries: ExampleTable, index: torch.Tensor, items: torch.Tensor
    ) -> torch.Tensor:
        """Context features [M, F] of pairs (``queries[index[m]]``, catalogue row ``items[m]``)."""
        total = len(self.train_times)
        position = self.positions(queries.times, len(queries))[index]  # [M]
        items = items.long()
        span = total + 1
        cols = []
        for n in POPULARITY_WINDOWS:
            base = items * span
            upper = torch.searchsorted(self.item_position_keys, base + position)
            lower = torch.searchsorted(self.item_position_keys, base + (position - n).clamp(min=0))
            cols.append(torch.log1p((upper - lower).float()) / math.log1p(n))
        first = self.first_position[items]  # [M]
        age = (position - first).clamp(min=0).float()
        cols.append(torch.log1p(age) / math.log1p(max(total, 1)))
        history = _padded_tail(queries.history, len(queries), RECENT)[index]  # [M, R], -1 = none
        counts = self._co_occurrence(history, items, position)  # [M, R]
        scale = math.log1p(max(self.num_users * WINDOW, 1))
        cols.append(torch.log1p(counts[:, -1].float()) / scale)
        cols.append(torch.log1p(counts.sum(1).float()) / scale)
        full = _padded_tail(queries.history, len(queries), None)[index]  # [M, H]
        valid = full >= 0
        size = valid.sum(1).clamp(min=1).float()  # [M]
        for tokens, multi in self.attributes.values():
            mine = tokens[items][:, None]  # [M, 1]
            theirs = tokens[full.clamp(min=0)]  # [M, H]
            same = (mine & theirs) != 0 if multi else mine == theirs
            cols.append((same & valid & (mine != 0)).sum(1).float() / size)
        return torch.stack(cols, dim=1) if cols else torch.zeros(len(items), 0)

    def _co_occurrence(
        self, history: torch.Tensor, items: torch.Tensor, position: torch.Tensor
    ) -> torch.Tensor:
        """Counts [M, R]: training transitions history[m, r] -> items[m] before position[m]."""
        span = len(self.train_times) + 1
        pair = (history.clamp(min=0) * self.num_items + items[:, None]) * span  # [M, R]
        upper = torch.searchsorted(self.pair_keys, pair + position[:, None])
        lower = torch.searchsorted(self.pair_keys, pair)
        return (upper - lower).masked_fill(history < 0, 0)


class ContextSource(Protocol):
    """What :func:`build_pair_context` reads of a dataset (a ``RecDataset`` is one)."""

    splits: dict[str, ExampleTable]
    items: ItemCatalogue
    user_ids: list[str]


def build_pair_context(data: ContextSource, attribute_keys: list[str]) -> PairContext:
    """The statistics of ``data``'s training split (it must carry times and histories, as
    :func:`~torchrec_recsys.data.dataset.build_dataset` makes them); ``attribute_keys``:
    item sparse features (e.g. ``item_genres``) compared with the user's history."""
    train = data.splits["train"]
    num_items = len(data.items)
    times = train.times if train.times is not None else torch.arange(len(train)).double()
    order = torch.argsort(times, stable=True)
    train_times = times[order].contiguous()  # [T]
    total = len(order)
    span = total + 1
    item_seq = train.item_rows[order]  # [T] items in time order
    position = torch.arange(total)
    item_keys = torch.sort(item_seq * span + position).values
    first = torch.full((num_items,), total, dtype=torch.int64)
    first.scatter_reduce_(0, item_seq, position, reduce="amin")
    # per user, training items in time order -> (a, b) for b within WINDOW after a
    users = train.user_rows[order]
    by_user = torch.argsort(users, stable=True)  # time order kept within a user
    u, it, pos = users[by_user], item_seq[by_user], position[by_user]
    keys = []
    for d in range(1, WINDOW + 1):
        same = u[d:] == u[:-d]
        keys.append(((it[:-d] * num_items + it[d:]) * span + pos[d:])[same])
    pair_keys = torch.sort(torch.cat(keys)).values if keys else torch.zeros(0, dtype=torch.int64)
    attributes: dict[str, tuple[torch.Tensor, bool]] = {}
    for key in attribute_keys:
        column = data.items.sparse[key]
        if int(column.lengths.max()) <= 1:
            token = torch.zeros(num_items, dtype=torch.int64)
            has = column.lengths > 0
            token[has] = column.values[column.offsets[:-1][has]]
            attributes[key] = (token, False)
        else:
            rows = torch.repeat_interleave(torch.arange(num_items), column.lengths)
            bit = column.values % MAX_TOKEN_BITS
            attributes[key] = (_bit_masks(rows, bit, num_items), True)
    return PairContext(
        train_times=train_times,
        item_position_keys=item_keys,
        first_position=first,
        pair_keys=pair_keys,
        attributes=attributes,
        num_items=num_items,
        num_users=len(data.user_ids),
    )


def _bit_masks(rows: torch.Tensor, bits: torch.Tensor, n: int) -> torch.Tensor:
    """Per row [n] int64: the OR of ``1 << bits`` over that row's values."""
    hot = torch.zeros(n, MAX_TOKEN_BITS, dtype=torch.int64)
    hot[rows, bits] = 1
    return (hot << torch.arange(MAX_TOKEN_BITS)).sum(1)  # distinct bits: sum == OR


def _padded_tail(column: JaggedColumn | None, n: int, last: int | None) -> torch.Tensor:
    """The last ``last`` (None: all) values of each row, right-aligned, -1 padded [n, L]."""
    if column is None:
        return torch.full((n, 1), -1, dtype=torch.int64)
    lengths = column.lengths
    width = max(int(lengths.max()) if len(lengths) else 0, 1)
    width = width if last is None else min(width, last)
    out = torch.full((n, width), -1, dtype=torch.int64)
    take = lengths.clamp(max=width)  # [n]
    for j in range(width):  # column j from the right: value at offsets[i+1] - 1 - j
        has = take > j
        out[has, width - 1 - j] = column.values[column.offsets[1:][has] - 1 - j]
    return out

"""The encoded tables of a dataset: examples per split, the item catalogue, the users.

Plain column containers (``data/jagged.py`` columns + tensors) with no construction logic;
``data/dataset.py`` builds them from raw interactions and ``data/context.py`` reads them,
so both import them from here and neither imports the other backwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from torchrec_recsys.data.jagged import JaggedColumn


@dataclass
class ExampleTable:
    """The examples of one split, column-wise (row ``i`` is one interaction)."""

    sparse: dict[str, JaggedColumn]  # KJT key -> per-example values
    dense: torch.Tensor  # [N, num_dense] float32
    labels: torch.Tensor  # [N] float32 (1 = positive)
    user_rows: torch.Tensor  # [N] int64, index into RecDataset.user_ids
    item_rows: torch.Tensor  # [N] int64, index into ItemCatalogue.item_ids
    times: torch.Tensor | None = None
    """[N] float64 time of each interaction (None: "now", after every interaction)."""
    history: JaggedColumn | None = None
    """Per example: catalogue rows of the user's previous items, oldest first (None: none
    known). Read by the pipeline ranker's context features (``data/context.py``)."""

    def __len__(self) -> int:
        return self.labels.numel()

    def select(self, rows: torch.Tensor) -> ExampleTable:
        """The examples at ``rows`` [M], in that order."""
        return ExampleTable(
            sparse={k: c.select(rows) for k, c in self.sparse.items()},
            dense=self.dense[rows],
            labels=self.labels[rows],
            user_rows=self.user_rows[rows],
            item_rows=self.item_rows[rows],
            times=None if self.times is None else self.times[rows],
            history=None if self.history is None else self.history.select(rows),
        )


@dataclass
class ItemCatalogue:
    """Every item of the items file, with its item-side features."""

    item_ids: list[str]  # raw IDs, row order
    texts: list[str]  # free text per item (for semantic IDs and display)
    sparse: dict[str, JaggedColumn]  # item-tower KJT key -> per-item values
    dense: torch.Tensor  # [I, num_item_dense] float32
    train_counts: torch.Tensor  # [I] int64, training interactions per item
    cold: torch.Tensor  # [I] bool, items whose training interactions were held out

    def __len__(self) -> int:
        return len(self.item_ids)

    @cached_property
    def row_of(self) -> dict[str, int]:
        """Raw item id -> catalogue row (built once; the catalogue is not mutated)."""
        return {item: i for i, item in enumerate(self.item_ids)}


@dataclass
class UserTable:
    """Every user, with their user-side features *now* (after all their interactions)."""

    sparse: dict[str, JaggedColumn]  # user-tower KJT key -> per-user values (incl. history)
    dense: torch.Tensor  # [U, num_user_dense] float32
    train_items: JaggedColumn  # per user: catalogue rows of training interactions (to exclude)
    history: JaggedColumn | None = None  # per user: catalogue rows of the last items, now

"""Collision level: one extra code that makes every item's semantic ID unique (as in TIGER).

Items whose L codes are identical form a group; inside each group the extra code numbers the
items 0, 1, 2, ... in increasing item-row order. The result depends only on the codes and the
row order, so the same input always gives the same SIDs. Items without a collision get 0.

::

    codes (L=2)    extra      SID
    item 0: 3 1      0        3 1 0
    item 1: 5 2      0        5 2 0
    item 2: 3 1      1        3 1 1
    item 3: 3 1      2        3 1 2
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from torchrec_recsys.errors import DataError


@dataclass
class CollisionResult:
    """Codes with the collision level appended, and how much it was needed."""

    codes: np.ndarray
    """[N, L + 1] int64; the last column is the collision code."""
    collision_rate: float
    """Share of items whose L codes were not unique before the extra level:
    ``1 - (distinct code tuples) / N`` (items that need a non-zero extra code)."""
    last_level_size: int
    """Cardinality of the collision level: the largest group, or the fixed size if one was given."""
    max_group_size: int
    """Items in the largest group of identical code tuples (1 = no collisions)."""


def add_collision_level(codes: np.ndarray, level_size: int | None = None) -> CollisionResult:
    """Append the collision code to codes [N, L].

    Args:
        codes: integer codes [N, L].
        level_size: fixed cardinality of the collision level (TIGER uses K); None means "as
            large as the largest group".

    Raises:
        DataError: codes are not [N, L] integers, or a group is larger than ``level_size``.
    """
    array = np.asarray(codes)
    if array.ndim != 2 or array.shape[1] == 0 or not np.issubdtype(array.dtype, np.integer):
        raise DataError(
            f"codes have shape {array.shape} and dtype {array.dtype}; expected integers [N, L]"
        )
    array = array.astype(np.int64, copy=False)  # [N, L]
    n = array.shape[0]
    if n == 0:
        return CollisionResult(np.zeros((0, array.shape[1] + 1), np.int64), 0.0, level_size or 1, 0)
    _, group, counts = np.unique(array, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)  # [N] group of each item
    order = np.argsort(group, kind="stable")  # [N] items grouped, row order kept inside
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])  # [G] first slot of each group
    rank = np.empty(n, dtype=np.int64)  # [N]
    rank[order] = np.arange(n) - starts[group[order]]
    largest = int(counts.max())
    if level_size is not None and largest > level_size:
        raise DataError(
            f"{largest} items share one code tuple but the collision level has only "
            f"{level_size} codes; use a larger collision level or more/larger codebooks"
        )
    out = np.concatenate([array, rank[:, None]], axis=1)  # [N, L + 1]
    return CollisionResult(
        codes=out,
        collision_rate=1.0 - len(counts) / n,
        last_level_size=level_size if level_size is not None else largest,
        max_group_size=largest,
    )


def collision_rate(codes: np.ndarray) -> float:
    """``1 - distinct tuples / N`` for codes [N, L] (0.0 when every tuple is unique)."""
    array = np.asarray(codes)
    if array.shape[0] == 0:
        return 0.0
    return 1.0 - len(np.unique(array, axis=0)) / array.shape[0]

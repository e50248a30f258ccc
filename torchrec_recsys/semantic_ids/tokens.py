"""Semantic-ID codes -> sparse token ids, one TorchRec feature per token kind.

Two token kinds, in the "prefix n-gram" form of Zheng et al. (2025) for SID features in
ranking/retrieval models:

* unigram ``sid_l{i}`` (i = 1..L'): the code at level i alone; cardinality K_i.
* prefix n-gram ``sid_p{i}`` (i = 2..L'): the whole prefix (c_1..c_i) as ONE token, the exact
  mixed-radix index ``((c_1 * K_2 + c_2) * K_3 + c_3) ... * K_i + c_i``; cardinality
  K_1 * ... * K_i. No hashing, so two items get the same ``sid_p{i}`` token exactly when their
  first i codes agree. ``sid_p1`` would repeat ``sid_l1`` and is not made.
  With ``max_cardinality`` set, an index is bucketed modulo that size (then distinct prefixes
  can share a bucket); the modulo is applied at every step, so no int64 overflow.

L' counts every column of the codes, including a collision level (its K is the largest group).
Id 0 is reserved for "unknown item" in every feature: real tokens are shifted by +1, so a
feature's cardinality (embedding-table rows) is its token count + 1.

::

    codes [N=2, L'=3], K = (4, 4, 2)     sid_l1  sid_l2  sid_l3  sid_p2          sid_p3
    item a: 1 3 0                        1+1     3+1     0+1     1*4+3+1 = 8     (7*2+0)+1 = 15
    item b: 1 2 1                        1+1     2+1     1+1     1*4+2+1 = 7     (6*2+1)+1 = 14
    cardinality                          5       5       3       17              33
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from torchrec_recsys.errors import ConfigError
from torchrec_recsys.semantic_ids.base import check_codes

_INT64_LIMIT = 2**62

UNKNOWN_TOKEN = 0
"""Token id of an unknown item (not in the SID table) in every SID feature."""


@dataclass(frozen=True)
class SIDTokenFeature:
    """Token ids of one SID feature for every item, and its embedding-table size."""

    ids: np.ndarray
    """[N] int64 in ``[1, cardinality)``; 0 is reserved for an unknown item."""
    cardinality: int
    """Rows the embedding table needs, including the reserved row 0."""


def unigram_name(level: int) -> str:
    """Feature name of the level-``level`` code (1-based): ``sid_l{level}``."""
    return f"sid_l{level}"


def prefix_name(length: int) -> str:
    """Feature name of the prefix (c_1..c_length): ``sid_p{length}``."""
    return f"sid_p{length}"


def sid_token_features(
    codes: np.ndarray,
    codebook_sizes: Sequence[int],
    *,
    unigrams: bool = True,
    prefixes: bool = True,
    max_cardinality: int | None = None,
) -> dict[str, SIDTokenFeature]:
    """Token ids per feature name for codes [N, L'].

    Args:
        codes: integer codes [N, L'] (a collision level, if any, is the last column).
        codebook_sizes: K_1..K_L', one per column.
        unigrams: make ``sid_l1..sid_lL'``.
        prefixes: make ``sid_p2..sid_pL'``.
        max_cardinality: bucket prefix indices modulo this many tokens (None: exact).

    Returns:
        ``{name: SIDTokenFeature}`` in order: unigrams by level, then prefixes by length.

    Raises:
        DataError: codes out of ``[0, K_i)`` or of the wrong shape.
        ConfigError: ``max_cardinality < 1``, or an exact prefix count that overflows int64.
    """
    sizes = [int(k) for k in codebook_sizes]
    array = check_codes(codes, sizes)  # [N, L']
    if max_cardinality is not None and max_cardinality < 1:
        raise ConfigError(f"max_cardinality = {max_cardinality} is invalid; expected >= 1")
    if max_cardinality is not None and max_cardinality * max(sizes) >= _INT64_LIMIT:
        raise ConfigError(f"max_cardinality = {max_cardinality} is too large for int64 tokens")
    out: dict[str, SIDTokenFeature] = {}
    if unigrams:
        for level, size in enumerate(sizes, start=1):
            out[unigram_name(level)] = SIDTokenFeature(array[:, level - 1] + 1, size + 1)
    if prefixes:
        index = array[:, 0].copy()  # [N] prefix index of length 1
        size = sizes[0]  # exact prefix count, a Python int (never overflows)
        for length in range(2, len(sizes) + 1):
            radix = sizes[length - 1]
            size *= radix
            if max_cardinality is None and size >= _INT64_LIMIT:
                raise ConfigError(
                    f"prefix {prefix_name(length)} has {size} exact tokens, too many for int64; "
                    "set max_cardinality to bucket it"
                )
            index = index * radix + array[:, length - 1]  # [N]
            if max_cardinality is not None:
                index %= max_cardinality
            tokens = min(size, max_cardinality) if max_cardinality is not None else size
            out[prefix_name(length)] = SIDTokenFeature(index + 1, tokens + 1)
    return out

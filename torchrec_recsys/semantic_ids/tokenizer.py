"""Items and users -> tokens of a generative retriever (TIGER, Rajput et al. 2023).

Each item is spelled by its semantic-ID tuple (the quantizer levels + the collision level
that makes it unique); every level has its own token range, so the same code at two levels
is two different tokens. Token 0 is padding / the decoder's start token::

    sizes K = (4, 4, 2)        offsets = (1, 5, 9)      vocab_size = 1 + 4 + 4 + 2 = 11
    item codes (1, 3, 0)  ->   tokens (1+1, 5+3, 9+0) = (2, 8, 9)

Users get one optional token: their ID hashed (crc32, stable across runs and processes)
into ``user_buckets`` rows, row 0 unused.

:class:`PrefixTrie` holds the valid tuples for constrained decoding.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from torchrec_recsys.errors import DataError
from torchrec_recsys.semantic_ids.store import SIDTable


@dataclass
class SIDTokenizer:
    """Per-catalogue-row SID tuples and their token numbering."""

    codes: np.ndarray
    """[I, L'] int64 codes of each catalogue row (L' includes the collision level)."""
    sizes: list[int]
    """Cardinality of each code column."""

    @property
    def levels(self) -> int:
        return len(self.sizes)

    @property
    def offsets(self) -> list[int]:
        """First token of each level's range."""
        return [1 + int(sum(self.sizes[:t])) for t in range(self.levels)]

    @property
    def vocab_size(self) -> int:
        """Tokens of all levels + the padding/start token 0."""
        return 1 + int(sum(self.sizes))

    def item_tokens(self) -> torch.Tensor:
        """[I, L'] int64 token ids of every catalogue row."""
        return torch.from_numpy(self.codes + np.asarray(self.offsets, dtype=np.int64)[None, :])


def build_tokenizer(
    table: SIDTable, catalogue_ids: Sequence[str], levels: int | None = None
) -> SIDTokenizer:
    """The tokenizer of ``catalogue_ids`` (catalogue row order) from ``table``.

    Args:
        table: SID table; its last column is the collision level when the table has one.
        catalogue_ids: every item of the catalogue, in row order.
        levels: keep only the first ``levels`` quantizer levels + the collision level
            (None = all); for ablations over depth on one learned table.

    Raises:
        DataError: an item has no SID in ``table``, or two items share a SID tuple (the
            table lacks a collision level).
    """
    rows = table.rows(list(catalogue_ids))
    missing = np.flatnonzero(rows < 0)
    if len(missing):
        raise DataError(
            f"the SID table does not cover the catalogue: item {catalogue_ids[missing[0]]!r}"
            f"{f' and {len(missing) - 1} other(s)' if len(missing) > 1 else ''} "
            f"has no semantic ID; rebuild the table for this catalogue"
        )
    codes = np.asarray(table.codes[rows], dtype=np.int64)  # [I, L']
    sizes = [int(k) for k in table.codebook_sizes]
    if levels is not None and levels < codes.shape[1] - 1:
        codes = np.concatenate([codes[:, :levels], codes[:, -1:]], axis=1)
        sizes = sizes[:levels] + sizes[-1:]
    check_unique_tuples(codes, catalogue_ids)
    return SIDTokenizer(codes=codes, sizes=sizes)


def random_tokenizer(tokenizer: SIDTokenizer, seed: int) -> SIDTokenizer:
    """Control: random quantizer codes of the same shape (same level sizes), with a fresh
    collision level that makes them unique again (seeded, so reproducible)."""
    rng = np.random.default_rng(seed)
    sizes = tokenizer.sizes[:-1]
    codes = np.stack([rng.integers(0, k, len(tokenizer.codes)) for k in sizes], axis=1)
    _, group = np.unique(codes, axis=0, return_inverse=True)
    group = group.reshape(-1)
    collision = np.zeros(len(codes), dtype=np.int64)
    seen: dict[int, int] = {}
    for i, g in enumerate(group):
        collision[i] = seen.get(int(g), 0)
        seen[int(g)] = collision[i] + 1
    full = np.concatenate([codes, collision[:, None]], axis=1).astype(np.int64)
    return SIDTokenizer(codes=full, sizes=[*sizes, int(collision.max()) + 1])


def check_unique_tuples(codes: np.ndarray, item_ids: Sequence[str]) -> None:
    """Raise :class:`DataError` naming the first SID tuple shared by two items.

    Generative retrieval decodes a tuple and reads the item off it; a shared tuple makes
    that ambiguous, which is what the collision level is for.
    """
    _, first, counts = np.unique(codes, axis=0, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = first[np.argmax(counts > 1)]
        others = np.flatnonzero((codes == codes[dup]).all(axis=1))
        raise DataError(
            f"SID tuple {tuple(int(c) for c in codes[dup])} is shared by items "
            f"{item_ids[others[0]]!r} and {item_ids[others[1]]!r}: the table has duplicate "
            f"tuples without a collision level; learn it with the collision level on"
        )


def user_tokens(user_ids: Sequence[str], buckets: int) -> torch.Tensor:
    """[U] int64 hashed user tokens in ``[1, buckets]`` (row 0 stays padding)."""
    return torch.tensor(
        [1 + zlib.crc32(str(u).encode()) % buckets for u in user_ids], dtype=torch.int64
    )


class PrefixTrie:
    """The valid SID tuples as an array trie, for constrained beam search.

    Depth t has one node per distinct prefix of length t (depth 0: the root; depth L': one
    leaf per item). ``children[t]`` [nodes_t, K_t] gives the node reached from a depth-t node
    by code c, or -1 when no item has that prefix. ``item_node[t]`` [I] is each item's node
    at depth t, so per-query item masks (e.g. training items excluded) become per-node counts
    with one ``index_add``. Dense children tables cost nodes x K ints per level: fine for
    catalogues of ~10^5 items; beyond that, a CSR layout would be the next step.
    """

    def __init__(self, codes: np.ndarray | torch.Tensor, sizes: Sequence[int]) -> None:
        codes = torch.as_tensor(np.asarray(codes), dtype=torch.int64)  # [I, L']
        self.sizes = [int(k) for k in sizes]
        self.levels = len(self.sizes)
        num_items = codes.shape[0]
        self.item_node: list[torch.Tensor] = [torch.zeros(num_items, dtype=torch.int64)]
        self.children: list[torch.Tensor] = []
        for t in range(self.levels):
            prefix = codes[:, : t + 1]
            _, inverse = torch.unique(prefix, dim=0, return_inverse=True)  # node id per item
            child = torch.full((int(self.item_node[t].max()) + 1, self.sizes[t]), -1)
            child[self.item_node[t], codes[:, t]] = inverse
            self.children.append(child)
            self.item_node.append(inverse)
        leaves = self.item_node[-1]
        if len(torch.unique(leaves)) != num_items:
            raise DataError("PrefixTrie needs unique SID tuples (add a collision level)")
        self.leaf_item = torch.empty(num_items, dtype=torch.int64)
        self.leaf_item[leaves] = torch.arange(num_items)

    def to(self, device: torch.device) -> PrefixTrie:
        """This trie with its tensors on ``device`` (moved in place; returns ``self``)."""
        if self.leaf_item.device != device:
            self.children = [c.to(device) for c in self.children]
            self.item_node = [n.to(device) for n in self.item_node]
            self.leaf_item = self.leaf_item.to(device)
        return self

    def num_nodes(self, depth: int) -> int:
        return int(self.item_node[depth].max()) + 1


class AllowedBelow:
    """Per query, how many allowed items lie below given trie nodes, for constrained search.

    Built once per search from ``allowed`` [Q, I] bool, without a dense [Q, nodes] table per
    depth: items no query may have (``allowed.any(0)`` false, e.g. cold items that are never
    recommended) come off every node's count once, and the remaining disallowed (query, item)
    pairs (e.g. each user's training items, a few per query) are counted sparsely, by sorted
    key.
    """

    def __init__(self, trie: PrefixTrie, allowed: torch.Tensor) -> None:
        self.trie = trie
        self.queries = allowed.shape[0]
        self.shared = allowed.any(dim=0)  # [I] items some query may have
        self.query, self.item = (~allowed & self.shared).nonzero(as_tuple=True)  # [E], [E]

    def __call__(self, depth: int, nodes: torch.Tensor) -> torch.Tensor:
        """Allowed items below each depth-``depth`` node of ``nodes`` [Q, ...] (ids >= 0), per
        query: an int64 tensor shaped like ``nodes``."""
        item_node = self.trie.item_node[depth]  # [I]
        width = self.trie.num_nodes(depth)
        under = torch.zeros(width, dtype=torch.int64, device=nodes.device)
        under.index_add_(0, item_node, self.shared.long())  # [nodes_depth]
        count = under[nodes]
        if self.query.numel() == 0:
            return count
        keys, blocked = torch.unique(self.query * width + item_node[self.item], return_counts=True)
        rows = torch.arange(self.queries, device=nodes.device).view(-1, *[1] * (nodes.dim() - 1))
        wanted = (rows * width + nodes).flatten()  # [Q * ...]
        pos = torch.searchsorted(keys, wanted).clamp(max=keys.numel() - 1)
        hit = torch.where(keys[pos] == wanted, blocked[pos], 0)
        return count - hit.view_as(nodes)

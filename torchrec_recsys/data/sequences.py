"""The ONE sequence builder: each user's chronological items on the dataset's own split.

    RecDataset (temporal leave-last-out split, vocabularies, item table)
      -> per user, train items in time order, then the val items, then the test items
      -> per example: the previous <= history_length catalogue rows (history) -> its item
         train: every prefix of the training part -> next item (first item: no example)
         val:   the training items -> the val item
         test:  the training + val items -> the test item
      -> SequenceBatch (KJT of history tokens [+ user token]) via data.batch.build_sequence_kjt

Histories hold only items of *earlier splits* plus earlier items of the same split, so
interactions dropped from training (``cold_item_fraction``) never appear in a history, and
no example sees its own or a later split's item. How an item is spelled as tokens (one item
ID, or a semantic-ID tuple) is the caller's ``item_tokens`` map [I, T]: the same sequence
data serves SASRec and the generative retriever.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from torchrec_recsys.data.batch import SequenceBatch, build_sequence_kjt
from torchrec_recsys.data.dataset import RecDataset, history_column
from torchrec_recsys.data.features import SparseFeature
from torchrec_recsys.data.jagged import JaggedColumn
from torchrec_recsys.data.loader import ShardInfo, eval_rows, train_rows
from torchrec_recsys.errors import ConfigError

SPLIT_ORDER = ("train", "val", "test")


@dataclass
class SequenceSplit:
    """Examples of one split: history (catalogue rows, oldest first) -> target item."""

    history: JaggedColumn  # per example: <= history_length catalogue rows
    targets: torch.Tensor  # [N] int64 catalogue row
    user_rows: torch.Tensor  # [N] int64 index into RecDataset.user_ids

    def __len__(self) -> int:
        return self.targets.numel()


@dataclass
class SequenceFeatures:
    """How items (and users) become tokens of the sequence KJT."""

    item_feature: SparseFeature
    """KJT key and table of the history tokens."""
    item_tokens: torch.Tensor
    """[I, T] int64: the T tokens spelling each catalogue row (row 0 of the table = pad/OOV)."""
    user_feature: SparseFeature | None = None
    """Optional one-token user key (e.g. a hashed user ID, as TIGER does)."""
    user_tokens: torch.Tensor | None = None
    """[U] int64 token of each user, with ``user_feature``."""

    def features(self) -> list[SparseFeature]:
        """The EmbeddingCollection's features, in KJT key order."""
        return [self.item_feature] + ([self.user_feature] if self.user_feature else [])


def build_sequences(data: RecDataset, history_length: int) -> dict[str, SequenceSplit]:
    """Sequence examples of every split of ``data`` (see the module docstring).

    Raises:
        ConfigError: ``history_length`` is not positive.
    """
    if history_length <= 0:
        raise ConfigError(f"data.history_length must be positive, got {history_length}")
    users = torch.cat([data.splits[s].user_rows for s in SPLIT_ORDER])  # [N_all]
    items = torch.cat([data.splits[s].item_rows for s in SPLIT_ORDER])  # [N_all]
    split_code = torch.cat(
        [torch.full((len(data.splits[s]),), i) for i, s in enumerate(SPLIT_ORDER)]
    )
    # every split is already in (user, time) order; a stable sort by user keeps train < val < test
    order = torch.argsort(users * len(SPLIT_ORDER) + split_code, stable=True)
    users, items, split_code = users[order], items[order], split_code[order]
    history = history_column(items.numpy(), users.numpy(), history_length)
    out = {}
    for i, name in enumerate(SPLIT_ORDER):
        rows = torch.nonzero(split_code == i).flatten()
        if name == "train":  # a user's first item has nothing before it
            rows = rows[history.lengths[rows] > 0]
        out[name] = SequenceSplit(history.select(rows), items[rows], users[rows])
    return out


def make_sequence_batch(
    split: SequenceSplit, features: SequenceFeatures, rows: torch.Tensor, weights: torch.Tensor
) -> SequenceBatch:
    """The :class:`SequenceBatch` for examples ``rows`` [B] of ``split``."""
    return SequenceBatch(
        sparse_features=build_sequence_kjt(
            split.history,
            split.user_rows,
            rows,
            features.item_feature,
            features.item_tokens,
            features.user_feature,
            features.user_tokens,
        ),
        targets=split.targets[rows],
        weights=weights,
        user_rows=split.user_rows[rows],
    )


class SequenceSource:
    """Sequence splits + token spelling: training batches for the trainer, eval batches."""

    def __init__(self, splits: dict[str, SequenceSplit], features: SequenceFeatures) -> None:
        self.splits = splits
        self.features = features

    def __len__(self) -> int:
        return len(self.splits["train"])

    def order(self, batch_size: int, shard: ShardInfo) -> str:
        """Nothing: the shuffled order depends only on the split's size and the seed."""
        return ""

    def train_batches(
        self, batch_size: int, shard: ShardInfo, seed: int, epoch: int, start_sample: int = 0
    ) -> Iterator[SequenceBatch]:
        ones = torch.ones(batch_size)
        split = self.splits["train"]
        for rows in train_rows(len(split), batch_size, shard, seed, epoch, start_sample):
            yield make_sequence_batch(split, self.features, rows, ones)

    def eval_batches(
        self, split: str, batch_size: int, shard: ShardInfo
    ) -> Iterator[SequenceBatch]:
        table = self.splits[split]
        for rows, weights in eval_rows(len(table), batch_size, shard):
            yield make_sequence_batch(table, self.features, rows, weights)

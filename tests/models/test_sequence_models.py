"""Both sequence models learn a deterministic next-item rule on a tiny synthetic catalogue.

The next item is a fixed permutation of the last one (``_sequence_data.next_item``); after a
few hundred Adam steps (unsharded, tables on CPU) both SASRec (item IDs) and the generative
retriever (random unique SID tuples, constrained beam search) put the right item first for
at least 90% of held-out histories.
"""

from __future__ import annotations

import torch
from _sequence_data import chain_split, item_id_features, sid_features, unique_codes

from torchrec_recsys.data.loader import ShardInfo
from torchrec_recsys.data.sequences import SequenceSource, make_sequence_batch
from torchrec_recsys.metrics.retrieval import list_ranks
from torchrec_recsys.models.generative import GenerativeRetriever
from torchrec_recsys.models.sasrec import SASRec
from torchrec_recsys.models.tasks import GenerativeTask, NextItemTask

ITEMS, HISTORY, DIM = 24, 4, 32


def _recall_at_1(task: torch.nn.Module, source: SequenceSource, steps: int) -> float:
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(task.parameters(), lr=5e-3)
    task.train()
    epoch = 0
    done = 0
    while done < steps:
        for batch in source.train_batches(64, ShardInfo(), seed=0, epoch=epoch):
            loss, _ = task(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
            if done == steps:
                break
        epoch += 1
    task.eval()
    test = source.splits["test"]
    rows = torch.arange(len(test))
    batch = make_sequence_batch(test, source.features, rows, torch.ones(len(test)))
    exclude = torch.zeros(len(test), ITEMS, dtype=torch.bool)
    items, _ = task.model.rank_items(batch.sparse_features, exclude, 10)
    return float((list_ranks(items, batch.targets) == 0).float().mean())


def _splits() -> dict:
    return {
        "train": chain_split(512, ITEMS, HISTORY, seed=0),
        "test": chain_split(128, ITEMS, HISTORY, seed=1),
    }


def test_sasrec_learns_the_next_item_rule() -> None:
    torch.manual_seed(0)
    source = SequenceSource(_splits(), item_id_features(ITEMS, DIM))
    model = SASRec(source.features.item_feature, ITEMS, HISTORY, 1, 2, 64, 0.0, "cpu", "cpu")
    assert _recall_at_1(NextItemTask(model), source, steps=150) >= 0.9


def test_generative_retriever_learns_the_next_item_rule() -> None:
    torch.manual_seed(0)
    sizes = [4, 8]
    codes = unique_codes(ITEMS, sizes, seed=0)  # [I, 2]
    features = sid_features(codes, sizes, DIM)
    source = SequenceSource(_splits(), features)
    model = GenerativeRetriever(
        features.item_feature,
        features.user_feature,
        features.item_tokens,
        sizes,
        HISTORY,
        1,
        2,
        64,
        0.0,
        10,
        "cpu",
        "cpu",
    )
    assert _recall_at_1(GenerativeTask(model), source, steps=200) >= 0.9

"""Batched inference with a plain (unsharded) task module: query / item embeddings, scores.

A trained model reaches this module as anything with ``task`` (a plain task module on CPU, in
eval mode) and ``data`` (the dataset it was trained on): :class:`TrainedTask`.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from torchrec_recsys.data.dataset import ExampleTable, RecDataset
from torchrec_recsys.data.loader import ShardInfo, eval_batches


class TrainedTask(Protocol):
    """A plain trained task with the dataset it was trained on (``app.trained.TrainedModel``)."""

    @property
    def task(self) -> nn.Module | None: ...

    @property
    def data(self) -> RecDataset: ...


@torch.no_grad()
def predict(
    task: torch.nn.Module, table: ExampleTable, data: RecDataset, output: str
) -> torch.Tensor:
    """Query embeddings [N, D], item embeddings [N, D] or ranker probabilities [N] of every
    row of ``table`` (``output`` = ``query``, ``item`` or ``ranking``), with a plain task."""
    out = []
    batch_size = max(1, min(4096, len(table)))  # a small request is not padded to 4096 rows
    for batch in eval_batches(table, data.spec, batch_size, ShardInfo()):
        if output == "ranking":
            out.append(torch.sigmoid(task.model(batch.dense_features, batch.sparse_features)[:, 0]))
        else:
            query, item = task.model(batch.dense_features, batch.sparse_features)
            out.append(query if output == "query" else item)
    return torch.cat(out)[: len(table)]


def item_embeddings(task: nn.Module, data: RecDataset) -> torch.Tensor:
    """Candidate-tower embeddings of every catalogue item with a plain two-tower task. [I, D]"""
    return predict(task, data.catalogue_table(), data, "item")

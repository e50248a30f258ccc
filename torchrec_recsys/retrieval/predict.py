"""Batched inference with a plain (unsharded) task module: query / item embeddings, scores.

A trained model reaches this module as anything with ``task`` (a plain task module on CPU, in
eval mode) and ``data`` (the dataset it was trained on): :class:`TrainedTask`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_recsys.data.batch import Batch
from torchrec_recsys.data.dataset import ExampleTable, RecDataset
from torchrec_recsys.data.loader import ShardInfo, eval_batches, whole_batch


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
    if 0 < len(table) <= 4096:  # one batch: the table itself, no row gather, no padding
        batches: Iterable[Batch] = [whole_batch(table, data.spec)]
    else:
        batches = eval_batches(table, data.spec, 4096, ShardInfo())
    for batch in batches:
        out.append(predict_batch(task, batch.dense_features, batch.sparse_features, output))
    return torch.cat(out)[: len(table)]


@torch.no_grad()
def predict_batch(
    task: torch.nn.Module, dense: torch.Tensor, sparse: KeyedJaggedTensor, output: str
) -> torch.Tensor:
    """:func:`predict` of one assembled batch: dense [B, num_dense] + KJT of every spec key
    -> query [B, D], item [B, D] or ranker probabilities [B]."""
    if output == "ranking":
        return torch.sigmoid(task.model(dense, sparse)[:, 0])
    query, item = task.model(dense, sparse)
    return query if output == "query" else item


def item_embeddings(task: nn.Module, data: RecDataset) -> torch.Tensor:
    """Candidate-tower embeddings of every catalogue item with a plain two-tower task. [I, D]"""
    return predict(task, data.catalogue_table(), data, "item")

"""A sharded EmbeddingCollection (SASRec's) equals the unsharded model.

On CPU (CI): 2 processes over gloo; where CUDA is visible, also one process per GPU over NCCL.

Both ranks build the same seeded reference SASRec (plain tables), load its weights into a
meta-built DMP model, and run one global batch of item sequences split across the ranks.
Checked per sharding type: each rank's loss and target scores (forward), and, after one
backward + step (fused SGD for the table, Adam for the transformer), the gathered weights.
The reference step's gradient is the mean over ranks of each rank's local loss, the same
convention as tests/distributed/test_sharded_models.py.

data_parallel is left out: on this pin set (torchrec 1.8, CPU, gloo) a data-parallel
EmbeddingCollection fails in its own forward (``construct_jagged_tensors``: "split_with_sizes
expects split_sizes to sum exactly to 8 ... got [20]"), before any of our code sees the output.
"""

from __future__ import annotations

import copy

import pytest
import torch
from _dist import run_distributed
from _sequence_data import chain_split, item_id_features

from torchrec_recsys.config import OptimizerConfig, ShardingConfig
from torchrec_recsys.data.loader import ShardInfo
from torchrec_recsys.data.sequences import SequenceSource
from torchrec_recsys.distributed.env import init_distributed
from torchrec_recsys.distributed.sharding import shard_model
from torchrec_recsys.distributed.state import gather_full_state, load_full_state
from torchrec_recsys.models.sasrec import SASRec
from torchrec_recsys.models.tasks import NextItemTask

SHARDING_TYPES = ["table_wise", "row_wise", "column_wise"]
BATCH, ITEMS, DIM = 8, 30, 8
SPARSE_LR, DENSE_LR = 0.5, 0.01


def _task(source: SequenceSource, device: str, dense_device: str = "cpu") -> NextItemTask:
    model = SASRec(source.features.item_feature, ITEMS, 6, 1, 2, 16, 0.0, device, dense_device)
    return NextItemTask(model)


def _check(rank: int, world: int) -> dict[str, tuple[float, float]]:
    torch.set_num_threads(1)
    ctx = init_distributed()
    source = SequenceSource(
        {"train": chain_split(64, ITEMS, 6, seed=0)}, item_id_features(ITEMS, DIM)
    )
    # Adam's first step moves every weight by ~lr whatever its gradient's size, so gradients
    # at float-noise level (CUDA vs CPU summation order) would flip it: SGD on the GPU.
    dense_opt = "adam" if ctx.device.type == "cpu" else "sgd"
    results = {}
    for kind in SHARDING_TYPES:
        torch.manual_seed(0)
        ref = _task(source, "cpu")
        full_state = copy.deepcopy(ref.state_dict())
        torch.manual_seed(1)
        model, optimizer = shard_model(
            _task(source, "meta", str(ctx.device)),
            ["t_item_id"],
            ShardingConfig(default=kind),
            OptimizerConfig(sparse="sgd", sparse_lr=SPARSE_LR, dense=dense_opt, dense_lr=DENSE_LR),
            ctx,
            batch_size=BATCH,
        )
        prefix = (
            "_dmp_wrapped_module." if any(k.startswith("_dmp") for k in model.state_dict()) else ""
        )
        load_full_state(model, {f"{prefix}{k}": v for k, v in full_state.items()})
        batches = [
            next(source.train_batches(BATCH, ShardInfo(r, world), seed=0, epoch=0))
            for r in range(world)
        ]
        loss, (_, scores, _, _) = model(batches[rank].to(ctx.device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

        outputs = [ref(b) for b in batches]
        torch.stack([out[0] for out in outputs]).mean().backward()
        tables = [p for n, p in ref.named_parameters() if "embeddings" in n and ".ec." in n]
        dense = [p for n, p in ref.named_parameters() if not ("embeddings" in n and ".ec." in n)]
        torch.optim.SGD(tables, lr=SPARSE_LR).step()
        (torch.optim.Adam if dense_opt == "adam" else torch.optim.SGD)(dense, lr=DENSE_LR).step()
        expected = torch.cat([outputs[rank][0].detach()[None], outputs[rank][1][1]])
        mine = torch.cat([loss.detach()[None], scores]).cpu()
        forward_diff = float((mine - expected).abs().max())
        after = gather_full_state(model)
        step_diff = 0.0
        if rank == 0:
            reference = ref.state_dict()
            step_diff = max(
                float((after[f"{prefix}{k}"].cpu() - v).abs().max()) for k, v in reference.items()
            )
            table_key = next(k for k in reference if ".ec." in k)
            moved = float((reference[table_key] - full_state[table_key]).abs().max())
            assert moved > 1e-3, "the step must move the table for the check to mean anything"
        results[kind] = (forward_diff, step_diff)
    return results


@pytest.mark.slow
def test_sharded_embedding_collection_matches_unsharded() -> None:
    for rank, results in enumerate(run_distributed(_check, 2)):
        assert set(results) == set(SHARDING_TYPES)
        for kind, (forward_diff, step_diff) in results.items():
            assert forward_diff < 1e-5, f"rank {rank} {kind}: forward differs by {forward_diff}"
            assert step_diff < 1e-5, f"rank {rank} {kind}: step differs by {step_diff}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_sharded_embedding_collection_on_gpus_matches_cpu_reference() -> None:
    """One process per visible GPU over NCCL: the CUDA EC kernels equal the CPU reference."""
    per_rank = run_distributed(_check, torch.cuda.device_count(), backend="nccl")
    for rank, results in enumerate(per_rank):
        assert set(results) == set(SHARDING_TYPES)
        for kind, (forward_diff, step_diff) in results.items():
            # CUDA vs CPU float32 (attention, softmax): a looser bound than CPU-CPU.
            assert forward_diff < 1e-4, f"rank {rank} {kind}: forward differs by {forward_diff}"
            assert step_diff < 1e-4, f"rank {rank} {kind}: step differs by {step_diff}"

"""2 processes on gloo: the sharded DLRM equals the unsharded model, forward and one step.

For each sharding type that runs on CPU, both ranks build the same reference DLRM (seeded,
plain ``nn.EmbeddingBag`` tables), load its weights into a meta-built DMP model, and run one
global batch split across the ranks. Checked:

* forward: each rank's logits equal the reference's logits for its slice;
* one step: after backward + optimizer step, the gathered weights equal the reference's.

Reference semantics of a step: every gradient is that of the *global* batch mean. DDP
averages dense gradients across ranks, and TorchRec scales the gradients of sharded pooled
embeddings by 1 / world size in the output all-to-all so that tables see the same average.
Model-parallel tables are updated by the fused optimizer (exact SGD here), data-parallel
tables by the dense one (Adam), like the MLPs.
"""

from __future__ import annotations

import copy

import pytest
import torch
from _dist import run_distributed

from torchrec_recsys.data.dataset import DatasetOptions, build_dataset
from torchrec_recsys.data.loader import ShardInfo, train_batches
from torchrec_recsys.data.readers import read_files
from torchrec_recsys.distributed.env import init_distributed
from torchrec_recsys.distributed.sharding import OptimizerOptions, ShardingOptions, shard_model
from torchrec_recsys.distributed.state import gather_full_state, load_full_state
from torchrec_recsys.models.dlrm import RankingTask, build_dlrm

SHARDING_TYPES = ["table_wise", "column_wise", "table_column_wise", "row_wise", "data_parallel"]
BATCH = 16  # per rank
SPARSE_LR, DENSE_LR = 0.5, 0.01


def _dataset(paths):  # type: ignore[no-untyped-def]
    raw = read_files(
        str(paths.interactions),
        str(paths.items),
        str(paths.users),
        ["genres", "decade"],
        ["gender", "occupation"],
    )
    return build_dataset(
        raw,
        DatasetOptions(
            ["genres", "decade"], ["gender", "occupation"], embedding_dim=8, history_length=4
        ),
    )


def _reference_step(ref: RankingTask, batch, dp_tables: bool) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """One step of the plain model on the global batch."""
    loss, (_, logits, _, _) = ref(batch)  # logits [world * B]; loss = mean over the global batch
    loss.backward()
    tables, dense = [], []
    for name, p in ref.named_parameters():
        (tables if "embedding_bags" in name and not dp_tables else dense).append(p)
    torch.optim.SGD(tables, lr=SPARSE_LR).step() if tables else None
    torch.optim.Adam(dense, lr=DENSE_LR).step()
    return logits.detach()


def _check_sharding_types(rank: int, world: int, paths) -> dict[str, tuple[float, float]]:  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    ctx = init_distributed()
    data = _dataset(paths)
    results = {}
    for kind in SHARDING_TYPES:
        torch.manual_seed(0)
        ref = RankingTask(build_dlrm(data.spec, [16, 8], [16, 1], sparse_device="cpu"))
        full_state = copy.deepcopy(ref.state_dict())

        torch.manual_seed(1)  # different init: the copy below must be what makes them equal
        task = RankingTask(build_dlrm(data.spec, [16, 8], [16, 1], sparse_device="meta"))
        model, optimizer = shard_model(
            task,
            data.spec.table_names(),
            ShardingOptions(default=kind),
            OptimizerOptions(sparse="sgd", sparse_lr=SPARSE_LR, dense="adam", dense_lr=DENSE_LR),
            ctx,
            batch_size=BATCH,
        )
        prefix = (
            "_dmp_wrapped_module." if any(k.startswith("_dmp") for k in model.state_dict()) else ""
        )
        load_full_state(model, {f"{prefix}{k}": v for k, v in full_state.items()})

        batch = next(
            train_batches(data.splits["train"], data.spec, BATCH, ShardInfo(rank, world), 0, 0)
        )
        global_batch = next(
            train_batches(data.splits["train"], data.spec, BATCH * world, ShardInfo(), 0, 0)
        )
        loss, (_, logits, _, _) = model(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

        ref_logits = _reference_step(ref, global_batch, dp_tables=kind == "data_parallel")
        forward_diff = float((logits - ref_logits[rank * BATCH : (rank + 1) * BATCH]).abs().max())
        after = gather_full_state(model)
        step_diff = 0.0
        if rank == 0:
            reference = ref.state_dict()
            assert set(after) == {f"{prefix}{k}" for k in reference}
            step_diff = max(
                float((after[f"{prefix}{k}"] - v).abs().max()) for k, v in reference.items()
            )
            moved = max(float((reference[k] - full_state[k]).abs().max()) for k in reference)
            assert moved > 1e-3, (
                "the step must change the weights for the comparison to mean anything"
            )
        results[kind] = (forward_diff, step_diff)
    return results


@pytest.mark.slow
def test_sharded_dlrm_matches_unsharded_reference(synthetic_paths) -> None:  # type: ignore[no-untyped-def]
    per_rank = run_distributed(_check_sharding_types, 2, synthetic_paths)
    for rank, results in enumerate(per_rank):
        assert set(results) == set(SHARDING_TYPES)
        for kind, (forward_diff, step_diff) in results.items():
            assert forward_diff < 1e-5, f"rank {rank} {kind}: forward differs by {forward_diff}"
            assert step_diff < 1e-5, (
                f"rank {rank} {kind}: weights after one step differ by {step_diff}"
            )

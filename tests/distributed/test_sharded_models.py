"""Sharded DLRM and two-tower equal the unsharded model, forward and step.

On CPU (CI): 2 processes over gloo. Where CUDA is visible, the same check also runs with one
process per GPU over NCCL (tables and MLPs on the GPU, reference on the CPU).

For each model and each sharding type that runs on CPU, both ranks build the same reference
model (seeded, plain ``nn.EmbeddingBag`` tables), load its weights into a meta-built DMP model,
and run one global batch split across the ranks. Checked:

* forward: each rank's loss and scores equal the reference's on that rank's slice;
* one step: after backward + optimizer step, the gathered weights equal the reference's.

Reference semantics of a step: the gradient is the average over ranks of each rank's local
loss gradient. DDP averages dense gradients across ranks, and TorchRec scales the gradients of
sharded pooled embeddings by 1 / world size in the output all-to-all so that tables see the
same average. Model-parallel tables are updated by the fused optimizer (exact SGD here),
data-parallel tables by the dense one (Adam), like the MLPs.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from _configs import dataset_configs
from _dist import run_distributed

from torchrec_recsys.config import OptimizerConfig, ShardingConfig
from torchrec_recsys.data.dataset import ItemTokens, build_dataset
from torchrec_recsys.data.loader import ShardInfo, train_batches
from torchrec_recsys.data.readers import read_files
from torchrec_recsys.distributed.env import init_distributed
from torchrec_recsys.distributed.sharding import shard_model
from torchrec_recsys.distributed.state import gather_full_state, load_full_state
from torchrec_recsys.models.dlrm import build_dlrm
from torchrec_recsys.models.tasks import RankingTask, RetrievalTask
from torchrec_recsys.models.two_tower import TwoTower, item_log_q
from torchrec_recsys.semantic_ids.tokens import sid_token_features

SHARDING_TYPES = ["table_wise", "column_wise", "table_column_wise", "row_wise", "data_parallel"]
BATCH = 16  # per rank
SPARSE_LR, DENSE_LR = 0.5, 0.01


def _sid_tokens(num_items: int) -> dict[str, tuple[np.ndarray, int]]:
    """Semantic-ID token features of random 3-level codes (the learning is tested elsewhere)."""
    codes = np.random.default_rng(0).integers(0, 4, size=(num_items, 3))  # [I, 3]
    features = sid_token_features(codes, [4, 4, 4])
    return {name: (f.ids, f.cardinality) for name, f in features.items()}


def _dataset(paths, with_sid: bool = False):  # type: ignore[no-untyped-def]
    raw = read_files(
        str(paths.interactions),
        str(paths.items),
        str(paths.users),
        ["genres", "decade"],
        ["gender", "occupation"],
    )
    data_cfg, features = dataset_configs(
        ["genres", "decade"], ["gender", "occupation"], embedding_dim=8, history_length=4
    )
    tokens = ItemTokens(_sid_tokens(len(raw.items)) if with_sid else {})
    return build_dataset(raw, data_cfg, features, tokens)


def _build(model: str, data, device: str, dense_device: str = "cpu") -> torch.nn.Module:  # type: ignore[no-untyped-def]
    if model.startswith("dlrm"):
        return RankingTask(
            build_dlrm(data.spec, [16, 8], [16, 1], sparse_device=device, dense_device=dense_device)
        )
    tower = TwoTower(data.spec, [16, 8], sparse_device=device, dense_device=dense_device)
    return RetrievalTask(tower, item_log_q(data.items.train_counts), temperature=0.1)


def _reference_step(ref, rank_batches, dp_tables: bool) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
    """One step of the plain model: the mean over ranks of each rank's local loss."""
    outputs = [ref(b) for b in rank_batches]
    loss = torch.stack([loss for loss, _ in outputs]).mean()
    loss.backward()
    tables, dense = [], []
    for name, p in ref.named_parameters():
        (tables if "embedding_bags" in name and not dp_tables else dense).append(p)
    torch.optim.SGD(tables, lr=SPARSE_LR).step() if tables else None
    torch.optim.Adam(dense, lr=DENSE_LR).step()
    return [torch.cat([loss.detach()[None], scores]) for loss, (_, scores, _, _) in outputs]


def _check_sharding_types(
    rank: int, world: int, paths, model_name: str
) -> dict[str, tuple[float, float]]:  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    ctx = init_distributed()
    data = _dataset(paths, with_sid=model_name.endswith("_sid"))
    results = {}
    for kind in SHARDING_TYPES:
        torch.manual_seed(0)
        ref = _build(model_name, data, "cpu")
        full_state = copy.deepcopy(ref.state_dict())

        torch.manual_seed(1)  # different init: the copy below must be what makes them equal
        task = _build(model_name, data, "meta", dense_device=str(ctx.device))
        model, optimizer = shard_model(
            task,
            data.spec.table_names(),
            ShardingConfig(default=kind),
            OptimizerConfig(sparse="sgd", sparse_lr=SPARSE_LR, dense="adam", dense_lr=DENSE_LR),
            ctx,
            batch_size=BATCH,
        )
        prefix = (
            "_dmp_wrapped_module." if any(k.startswith("_dmp") for k in model.state_dict()) else ""
        )
        load_full_state(model, {f"{prefix}{k}": v for k, v in full_state.items()})

        rank_batches = [
            next(train_batches(data.splits["train"], data.spec, BATCH, ShardInfo(r, world), 0, 0))
            for r in range(world)
        ]
        loss, (_, scores, _, _) = model(rank_batches[rank].to(ctx.device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

        ref_outputs = _reference_step(ref, rank_batches, dp_tables=kind == "data_parallel")
        mine = torch.cat([loss.detach()[None], scores]).cpu()  # [1 + B]: loss, then scores
        forward_diff = float((mine - ref_outputs[rank]).abs().max())
        after = gather_full_state(model)
        step_diff = 0.0
        if rank == 0:
            reference = ref.state_dict()
            assert set(after) == {f"{prefix}{k}" for k in reference}
            step_diff = max(
                float((after[f"{prefix}{k}"].cpu() - v).abs().max()) for k, v in reference.items()
            )
            moved = max(float((reference[k] - full_state[k]).abs().max()) for k in reference)
            assert moved > 1e-3, (
                "the step must change the weights for the comparison to mean anything"
            )
        results[kind] = (forward_diff, step_diff)
    return results


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["dlrm", "two_tower", "two_tower_sid"])
def test_sharded_model_matches_unsharded_reference(synthetic_paths, model_name: str) -> None:  # type: ignore[no-untyped-def]
    per_rank = run_distributed(_check_sharding_types, 2, synthetic_paths, model_name)
    for rank, results in enumerate(per_rank):
        assert set(results) == set(SHARDING_TYPES)
        for kind, (forward_diff, step_diff) in results.items():
            assert forward_diff < 1e-5, f"rank {rank} {kind}: forward differs by {forward_diff}"
            assert step_diff < 1e-5, (
                f"rank {rank} {kind}: weights after one step differ by {step_diff}"
            )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("model_name", ["dlrm", "two_tower", "two_tower_sid"])
def test_sharded_model_on_gpus_matches_cpu_reference(synthetic_paths, model_name: str) -> None:  # type: ignore[no-untyped-def]
    """One process per visible GPU over NCCL: fbgemm's CUDA kernels equal the CPU reference."""
    world = torch.cuda.device_count()
    per_rank = run_distributed(
        _check_sharding_types, world, synthetic_paths, model_name, backend="nccl"
    )
    for rank, results in enumerate(per_rank):
        assert set(results) == set(SHARDING_TYPES)
        for kind, (forward_diff, step_diff) in results.items():
            # CUDA vs CPU float32: different reduction orders, so a looser bound than CPU-CPU.
            assert forward_diff < 1e-4, f"rank {rank} {kind}: forward differs by {forward_diff}"
            assert step_diff < 1e-4, f"rank {rank} {kind}: weights differ by {step_diff}"


def test_sid_features_reach_the_batch_with_history_lengths(synthetic_paths) -> None:  # type: ignore[no-untyped-def]
    data = _dataset(synthetic_paths, with_sid=True)
    sid_keys = [k for k in data.spec.sparse_names() if "sid" in k]
    assert sid_keys == [f"item_sid_{n}" for n in ("l1", "l2", "l3", "p2", "p3")] + [
        f"user_history_sid_{n}" for n in ("l1", "l2", "l3", "p2", "p3")
    ]
    spec = data.spec
    assert spec.feature("user_history_sid_p2").table == spec.feature("item_sid_p2").table
    assert spec.feature("item_sid_p3").num_embeddings == 4**3 + 1
    batch = next(train_batches(data.splits["train"], spec, BATCH, ShardInfo(), 0, 0))
    kjt = batch.sparse_features.to_dict()
    assert (kjt["item_sid_l1"].lengths() == 1).all()
    assert torch.equal(kjt["user_history_sid_l1"].lengths(), kjt["user_history"].lengths())
    tokens = _sid_tokens(len(data.items))["sid_l2"][0]
    assert kjt["item_sid_l2"].values().tolist() == tokens[batch.item_rows.numpy()].tolist()

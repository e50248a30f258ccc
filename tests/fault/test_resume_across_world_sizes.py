"""Checkpoints written by 1 process resume with 2, and the reverse (DCP reshards).

Tables: ``t_user_id`` data-parallel (dense optimizer: Adam), ``t_item_id`` row-wise and the
rest table-wise (fused row-wise Adagrad, whose per-row state is sharded like the rows).

* State: one checkpoint loaded with 1 and with 2 processes gives the same full weights and
  optimizer state, bit for bit; a checkpoint re-saved by 2 processes loads back into 1 equal.
* Position: a mid-epoch checkpoint continues at the next unseen example. The global batch
  changes with the world size (64 x world), so the step number does not carry over; the
  sample offset does (``TrainerState.samples_in_epoch``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from _dist import run_distributed
from conftest import tiny_overrides
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torch.optim import Optimizer

from torchrec_recsys.app import builders
from torchrec_recsys.app.train import main
from torchrec_recsys.config import load_config
from torchrec_recsys.data.synthetic import SyntheticPaths
from torchrec_recsys.distributed.env import init_distributed, shutdown_distributed
from torchrec_recsys.training.checkpoint_io import load_checkpoint, save_checkpoint
from torchrec_recsys.training.state import TrainerState

SHARDING = [
    "--sharding.per_table.t_user_id=data_parallel",
    "--sharding.per_table.t_item_id=row_wise",
]
TRAIN_EXAMPLES = 1380


def _overrides(paths: SyntheticPaths, out: Path) -> list[str]:
    return [
        *tiny_overrides(paths, out),
        *SHARDING,
        "--train.epochs=1",
        "--train.checkpoint_every_steps=4",
        "--train.keep_last_checkpoints=0",
    ]


def _build(overrides: list[str]) -> tuple[nn.Module, Optimizer]:
    cfg = load_config(None, overrides)
    ctx = init_distributed()
    return builders.build_sharded(cfg, builders.build_data(cfg), ctx)


Pieces = dict[str, list[tuple[tuple[int, ...], torch.Tensor]]]


def _pieces(tensor: torch.Tensor) -> list[tuple[tuple[int, ...], torch.Tensor]]:
    if isinstance(tensor, ShardedTensor):
        return [(tuple(s.metadata.shard_offsets), s.tensor.clone()) for s in tensor.local_shards()]
    return [((0,) * tensor.dim(), tensor.detach().clone())]


def _local_state(model: nn.Module, optimizer: Optimizer) -> Pieces:
    """This rank's pieces (offsets, tensor) of every weight and optimizer-state tensor.

    No collectives: with table-wise sharding a rank holds optimizer state only for its own
    tables, so ranks do not even share the key set.
    """
    out = {f"model/{k}": _pieces(v) for k, v in model.state_dict().items()}
    for param, states in optimizer.state_dict()["state"].items():
        for name, value in states.items():
            if isinstance(value, torch.Tensor):
                out[f"optim/{param}/{name}"] = _pieces(value)
    return out


def _assemble(per_rank: list[Pieces]) -> dict[str, torch.Tensor]:
    """Full tensors from every rank's pieces (replicated pieces must agree)."""
    full: dict[str, torch.Tensor] = {}
    shapes: dict[str, list[int]] = {}
    for pieces in per_rank:
        for key, parts in pieces.items():
            if not parts:  # a table (and its optimizer state) that lives on another rank
                continue
            shape = shapes.setdefault(key, [0] * parts[0][1].dim())
            for offsets, part in parts:
                for d, (o, n) in enumerate(zip(offsets, part.shape, strict=True)):
                    shape[d] = max(shape[d], o + n)
    for key, shape in shapes.items():
        full[key] = torch.full(shape, float("nan"))
    for pieces in per_rank:
        for key, parts in pieces.items():
            for offsets, part in parts:
                index = tuple(slice(o, o + n) for o, n in zip(offsets, part.shape, strict=True))
                target = full[key][index]
                assert target.isnan().all() or torch.equal(target, part.float()), key
                full[key][index] = part.float()
    for key, value in full.items():
        assert not value.isnan().any(), f"{key} has rows no rank holds"
    return full


def _in_two_processes(
    rank: int, world: int, overrides: list[str], written_by_1: str, resave: str, resume: list[str]
) -> tuple[Pieces, dict]:
    model, optimizer = _build(overrides)
    load_checkpoint(Path(written_by_1), model, optimizer)
    state = _local_state(model, optimizer)
    save_checkpoint(Path(resave), model, optimizer, TrainerState(global_step=21, epoch=1))
    summary = main(resume)  # reuses this process group
    return state, summary


def test_checkpoints_move_between_one_and_two_processes(
    synthetic_paths: SyntheticPaths, tmp_path: Path
) -> None:
    overrides = _overrides(synthetic_paths, tmp_path)
    one = main([*overrides, "--run-dir", str(tmp_path / "one")])  # 21 steps of 64
    assert one["final_state"]["epoch_batches"] == [21]
    assert "data_parallel" in one["plan"] and "row_wise" in one["plan"]
    written_by_1 = tmp_path / "one" / "checkpoints" / "step_00000021"

    # 1 -> 2 mid-epoch: keep checkpoints up to step 8 (512 examples in)
    shutil.copytree(tmp_path / "one", tmp_path / "one_to_two")
    for late in ("step_00000012", "step_00000016", "step_00000020", "step_00000021"):
        shutil.rmtree(tmp_path / "one_to_two" / "checkpoints" / late)
    resume_2 = [*overrides, "--resume", "--run-dir", str(tmp_path / "one_to_two")]
    results = run_distributed(
        _in_two_processes, 2, overrides, str(written_by_1), str(tmp_path / "resaved"), resume_2
    )
    state_2 = _assemble([state for state, _ in results])
    two = results[0][1]

    # the world-2 run continued at example 512 with global batches of 128: 6 more steps
    assert two["world_size"] == 2
    assert two["final_state"]["epoch_batches"] == [8 + (TRAIN_EXAMPLES - 512) // 128]
    assert two["final_state"]["epoch_samples"] == [512 + (TRAIN_EXAMPLES - 512) // 128 * 128]
    assert 0.0 < two["test"]["auc"] < 1.0

    ctx = init_distributed()
    try:
        # the same checkpoint, loaded by 1 process, equals what 2 processes loaded
        model, optimizer = _build(overrides)
        fresh = _assemble([_local_state(model, optimizer)])
        load_checkpoint(written_by_1, model, optimizer)
        state_1 = _assemble([_local_state(model, optimizer)])
        assert state_1.keys() == state_2.keys()
        assert any("momentum1" in k for k in state_1)  # fused row-wise Adagrad state
        assert any("t_user_id" in k and "exp_avg" in k for k in state_1)  # data-parallel: Adam
        for key, value in state_1.items():
            assert torch.equal(value, state_2[key]), key
        item_table = (
            "model/model.sparse_arch.embedding_bag_collection.embedding_bags.t_item_id.weight"
        )
        assert not torch.equal(fresh[item_table], state_1[item_table])  # something was loaded
        # written by 2 processes, loaded by 1: the same state again
        model, optimizer = _build(overrides)
        load_checkpoint(tmp_path / "resaved" / "checkpoints" / "step_00000021", model, optimizer)
        for key, value in _assemble([_local_state(model, optimizer)]).items():
            assert torch.equal(value, state_2[key]), key
        assert ctx.world_size == 1
    finally:
        shutdown_distributed()

    # 2 -> 1 mid-epoch: the world-2 run checkpointed at global step 12 (8 x 64 + 4 x 128)
    shutil.copytree(tmp_path / "one_to_two", tmp_path / "two_to_one")
    shutil.rmtree(tmp_path / "two_to_one" / "checkpoints" / "step_00000014")
    back = main([*overrides, "--resume", "--run-dir", str(tmp_path / "two_to_one")])
    in_epoch = 512 + 4 * 128
    assert back["world_size"] == 1
    assert back["final_state"]["epoch_batches"] == [12 + (TRAIN_EXAMPLES - in_epoch) // 64]
    assert back["final_state"]["epoch_samples"] == [
        in_epoch + (TRAIN_EXAMPLES - in_epoch) // 64 * 64
    ]

"""Exact resume in one process: determinism, a failure mid-epoch, RNG and data position.

* Same seed, same world size -> identical metrics (two uninterrupted runs).
* A run that fails after step 7 (checkpoints every 5 steps) leaves only complete checkpoints
  and no summary.json; ``--resume-if-any`` on the same run directory resumes mid-epoch from
  step 5 and ends exactly where the uninterrupted run ends.
* Checkpoints restore every rank's python / numpy / torch RNG states and Adam's moments.
* ``train_batches`` resumes at any sample offset, for any world size, without overlap.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from _configs import dataset_configs
from conftest import tiny_overrides
from torch import nn

from torchrec_recsys.app.train import (
    FAULT_MARKER,
    FAULT_MODE_ENV,
    FAULT_STEP_ENV,
    SUMMARY_FILE,
    main,
)
from torchrec_recsys.data.dataset import build_dataset
from torchrec_recsys.data.loader import ShardInfo, num_train_steps, train_batches
from torchrec_recsys.data.readers import read_files
from torchrec_recsys.data.synthetic import SyntheticPaths
from torchrec_recsys.distributed.env import init_distributed, shutdown_distributed
from torchrec_recsys.errors import DataError, UserError
from torchrec_recsys.training import checkpoint_io as ckpt
from torchrec_recsys.training.checkpoint_io import (
    METADATA_FILE,
    STATE_FILE,
    TrainerState,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from torchrec_recsys.training.trainer import check_data_position

TOLERANCE = 1e-6
STEPS_PER_EPOCH = 1380 // 64  # tiny config: 1,380 training examples, batch 64, one process


def _args(paths: SyntheticPaths, out: Path) -> list[str]:
    return [
        *tiny_overrides(paths, out),
        "--train.checkpoint_every_steps=5",
        "--train.keep_last_checkpoints=0",
    ]


@pytest.fixture(scope="module")
def reference(synthetic_paths: SyntheticPaths, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An uninterrupted 2-epoch run, one process."""
    out = tmp_path_factory.mktemp("reference")
    return main([*_args(synthetic_paths, out), "--run-id=ref"])


def _assert_same_run(got: dict, expected: dict) -> None:
    assert got["final_state"]["epoch_batches"] == expected["final_state"]["epoch_batches"]
    assert got["final_state"]["epoch_samples"] == expected["final_state"]["epoch_samples"]
    assert got["final_state"]["global_step"] == expected["final_state"]["global_step"]
    for mine, theirs in zip(got["epochs"], expected["epochs"], strict=True):
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], abs=TOLERANCE)
        assert mine["val"] == pytest.approx(theirs["val"], abs=TOLERANCE)
    assert got["test"] == pytest.approx(expected["test"], abs=TOLERANCE)


@pytest.mark.slow
def test_same_seed_same_world_gives_same_metrics(
    reference: dict, synthetic_paths: SyntheticPaths, tmp_path: Path
) -> None:
    again = main([*_args(synthetic_paths, tmp_path), "--run-id=again"])
    _assert_same_run(again, reference)
    assert reference["final_state"]["epoch_batches"] == [STEPS_PER_EPOCH] * 2
    assert reference["final_state"]["epoch_samples"] == [STEPS_PER_EPOCH * 64] * 2


@pytest.mark.slow
def test_failure_mid_epoch_leaves_complete_state_and_resume_matches(
    reference: dict,
    synthetic_paths: SyntheticPaths,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = [*_args(synthetic_paths, tmp_path), "--run-id=faulted", "--resume-if-any"]
    monkeypatch.setenv(FAULT_STEP_ENV, "7")
    monkeypatch.setenv(FAULT_MODE_ENV, "raise")
    with pytest.raises(RuntimeError, match="injected fault after global step 7"):
        main(args)
    run_dir = tmp_path / "tiny" / "faulted"
    assert (run_dir / FAULT_MARKER).is_file()
    assert not (run_dir / SUMMARY_FILE).exists() and not list(run_dir.glob("*.tmp"))
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert checkpoints == ["step_00000005"]  # nothing incomplete without the .tmp suffix
    for name in (STATE_FILE, METADATA_FILE, "rng_rank0.json"):
        assert (run_dir / "checkpoints" / "step_00000005" / name).is_file()

    resumed = main(args)  # the marker makes the fault fire once per run directory
    assert resumed["run_dir"] == str(run_dir)
    _assert_same_run(resumed, reference)


def test_resume_if_any_starts_afresh_when_there_is_nothing(
    synthetic_paths: SyntheticPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first attempt of a retried job: the env the torchx component sets, no checkpoint."""
    monkeypatch.setenv("TORCHREC_RECSYS_RUN_ID", "app-123")
    monkeypatch.setenv("TORCHREC_RECSYS_RESUME_IF_ANY", "1")
    summary = main(
        [
            *tiny_overrides(synthetic_paths, tmp_path),
            "--train.epochs=1",
            "--train.max_steps_per_epoch=2",
        ]
    )
    assert summary["run_dir"] == str(tmp_path / "tiny" / "app-123")
    assert summary["final_state"]["epoch_batches"] == [2]


# --- checkpoint internals on a small plain model (one process) -------------------------


@pytest.fixture
def one_process() -> object:
    ctx = init_distributed()
    yield ctx
    shutdown_distributed()


def _model_and_optimizer() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    return model, torch.optim.Adam(model.parameters(), lr=0.1)


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    loss = model(torch.ones(2, 4)).square().sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def _draws() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_checkpoint_restores_rng_states_and_adam_moments(
    one_process: object, tmp_path: Path
) -> None:
    model, optimizer = _model_and_optimizer()
    _train_step(model, optimizer)
    path = save_checkpoint(tmp_path, model, optimizer, TrainerState(global_step=1))
    expected_draws = _draws()
    _train_step(model, optimizer)
    expected_weight = model.weight.detach().clone()

    fresh, fresh_optimizer = _model_and_optimizer()  # Adam state is created lazily: empty now
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    load_checkpoint(path, fresh, fresh_optimizer, restore_rng=True)
    assert _draws() == expected_draws
    _train_step(fresh, fresh_optimizer)  # continues with the saved moments, not fresh ones
    assert torch.equal(fresh.weight, expected_weight)


def test_failed_save_leaves_no_complete_checkpoint(
    one_process: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, optimizer = _model_and_optimizer()
    save_checkpoint(tmp_path, model, optimizer, TrainerState(global_step=1))

    def crash(state: dict, checkpoint_id: str) -> None:
        Path(checkpoint_id, "__0_0.distcp").write_bytes(b"half a shard")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.dcp, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, model, optimizer, TrainerState(global_step=2))
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step_00000001"
    assert (tmp_path / "checkpoints" / "step_00000002.tmp").is_dir()  # never resumed from
    assert not (tmp_path / "checkpoints" / "step_00000002").exists()

    monkeypatch.undo()  # the next successful save sweeps the abandoned .tmp folder
    save_checkpoint(tmp_path, model, optimizer, TrainerState(global_step=3), keep_last=0)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_00000001", "step_00000003"]


# --- data position ---------------------------------------------------------------------


def test_train_batches_resume_at_any_sample_for_any_world_size(
    synthetic_paths: SyntheticPaths,
) -> None:
    raw = read_files(
        str(synthetic_paths.interactions), str(synthetic_paths.items), "", ["genres"], []
    )
    data = build_dataset(raw, *dataset_configs(["genres"], [], embedding_dim=4))
    train = data.splits["train"]
    train = dataclasses.replace(train, user_rows=torch.arange(len(train)))  # row = example id

    def examples(world: int, start: int, steps: int | None = None) -> list[int]:
        per_rank = [
            itertools.islice(
                train_batches(train, data.spec, 64, ShardInfo(r, world), 3, 0, start), steps
            )
            for r in range(world)
        ]
        return [int(x) for step in zip(*per_rank, strict=True) for b in step for x in b.user_rows]

    full = examples(1, 0)
    assert len(full) == num_train_steps(len(train), 64, ShardInfo()) * 64 == 21 * 64
    # world 2 for 3 steps (384 examples), then world 1 from sample 384: the same order
    assert examples(2, 0, 3) + examples(1, 384) == full
    # world 1 for 5 steps (320 examples), then world 2 from sample 320: no overlap, no gap
    mixed = examples(1, 0, 5) + examples(2, 320)
    assert mixed == full[: len(mixed)] and len(set(mixed)) == len(mixed)
    assert len(mixed) == 320 + (len(train) - 320) // 128 * 128  # last partial batch dropped
    with pytest.raises(DataError, match="training position 9999 is outside"):
        next(train_batches(train, data.spec, 64, ShardInfo(), 3, 0, 9999))


def test_mid_epoch_position_needs_the_same_data_and_seed() -> None:
    state = TrainerState(epoch=1, samples_in_epoch=40, train_examples=90, shuffle_seed=1)
    with pytest.raises(UserError, match="stopped mid-epoch 1 after 40 examples of a 90-example"):
        check_data_position(state, train_examples=100, seed=1)
    with pytest.raises(
        UserError, match="shuffled with seed 1, but this run has 90 examples and seed 2"
    ):
        check_data_position(state, train_examples=90, seed=2)
    check_data_position(state, train_examples=90, seed=1)  # same order: accepted
    at_boundary = TrainerState(epoch=1, train_examples=90, shuffle_seed=7)
    check_data_position(at_boundary, train_examples=100, seed=1)  # nothing to find: accepted
    assert (at_boundary.train_examples, at_boundary.shuffle_seed) == (100, 1)

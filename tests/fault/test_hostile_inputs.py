"""Bad inputs end in one clear :class:`UserError` sentence, never in silent damage.

The rest of the catalogue is tested where the code lives (see the "Damaged and hostile
inputs" table of docs/fault_tolerance.md): config keys and types (tests/test_config.py),
missing files, columns and malformed rows (tests/data/test_readers.py), out-of-range and
negative IDs (tests/data/test_batch.py), unknown items (tests/data/test_dataset.py), FAISS
indexes of another dimension or metric or truncated (tests/retrieval/test_faiss_index.py).
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest
import torch
from conftest import tiny_overrides
from torch import nn

from torchrec_recsys.app import builders
from torchrec_recsys.app.train import main
from torchrec_recsys.config import load_config
from torchrec_recsys.data.jagged import JaggedColumn
from torchrec_recsys.data.loader import ShardInfo, make_batch, train_batches
from torchrec_recsys.data.readers import read_files
from torchrec_recsys.data.synthetic import SyntheticPaths
from torchrec_recsys.distributed.env import init_distributed, shutdown_distributed
from torchrec_recsys.errors import DataError, UserError
from torchrec_recsys.training.checkpoint_io import (
    METADATA_FILE,
    STATE_FILE,
    TrainerState,
    load_checkpoint,
    save_checkpoint,
)

# --- data ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "line"),
    [("1,3,nan,5", 3), ("1,3,inf,5", 3), ("1,3,4,-inf", 3), ("1,3,4,yesterday", 3)],
)
def test_non_finite_or_non_numeric_rating_or_timestamp(tmp_path: Path, row: str, line: int) -> None:
    inter = tmp_path / "i.csv"
    inter.write_text(f"user_id,item_id,rating,timestamp\n1,2,3,4\n{row}\n")
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\n2,a\n3,b\n")
    with pytest.raises(DataError, match=f"1 malformed row\\(s\\).*first at line {line}"):
        read_files(str(inter), str(items), "", ["title"], [])


@pytest.fixture(scope="module")
def tiny_data(synthetic_paths: SyntheticPaths, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    cfg = load_config(None, tiny_overrides(synthetic_paths, tmp_path_factory.mktemp("out")))
    return cfg, builders.build_data(cfg)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_dense_value_is_stopped_before_the_model(tiny_data, bad: float) -> None:  # type: ignore[no-untyped-def]
    _, data = tiny_data
    train = data.splits["train"]
    dense = train.dense.clone()
    dense[5, 1] = bad
    broken = dataclasses.replace(train, dense=dense)
    name = data.spec.dense_names()[1]
    make_batch(broken, data.spec, torch.tensor([0, 1, 2]), torch.ones(3))  # clean rows: fine
    with pytest.raises(DataError, match=f"dense feature '{name}' has 1 NaN or infinite value"):
        make_batch(broken, data.spec, torch.tensor([4, 5]), torch.ones(2))
    with pytest.raises(DataError, match="NaN or infinite"):  # ... and in the training loop
        list(train_batches(broken, data.spec, 64, ShardInfo(), seed=0, epoch=0))


def test_dense_width_must_match_the_spec(tiny_data) -> None:  # type: ignore[no-untyped-def]
    _, data = tiny_data
    train = data.splits["train"]
    narrow = dataclasses.replace(train, dense=train.dense[:, :1])
    with pytest.raises(
        DataError, match=r"dense features have shape \(2, 1\), expected \[batch, 2\]"
    ):
        make_batch(narrow, data.spec, torch.tensor([0, 1]), torch.ones(2))


@pytest.mark.parametrize(
    ("offsets", "values", "message"),
    [
        (
            [0, 2, 3],
            [1, 2],
            "offsets run from 0 to 3, but they must run from 0 to the number of values \\(2\\)",
        ),
        ([1, 2, 3], [1, 2, 3], "offsets run from 1 to 3"),
        ([0, 2, 1, 3], [1, 2, 3], "offsets decrease at row 1"),
        ([], [], "needs 1-D offsets"),
    ],
)
def test_jagged_offsets_that_disagree_with_values(
    offsets: list[int], values: list[int], message: str
) -> None:
    with pytest.raises(DataError, match=message):
        JaggedColumn(torch.tensor(offsets, dtype=torch.int64), torch.tensor(values))


def test_jagged_lengths_that_disagree_with_values() -> None:
    with pytest.raises(DataError, match="lengths and values disagree"):
        JaggedColumn.from_lengths(torch.tensor([1, 2]), torch.tensor([7, 8]))
    with pytest.raises(DataError, match="offsets decrease at row 0"):
        JaggedColumn.from_lengths(torch.tensor([-1, 2]), torch.tensor([7]))
    with pytest.raises(DataError, match="int64 offsets and values, got torch.int32"):
        JaggedColumn(torch.tensor([0, 1], dtype=torch.int32), torch.tensor([7]))
    assert JaggedColumn.from_lists([[], [3], []]).lengths.tolist() == [0, 1, 0]  # empty rows ok


def test_a_feature_with_only_empty_bags_trains(tiny_data) -> None:  # type: ignore[no-untyped-def]
    """TorchRec's EBC takes empty bags: they pool to zeros (sum and mean alike) and get no
    gradient. An all-empty feature (e.g. user_history of users without earlier items) trains."""
    cfg, data = tiny_data
    train = data.splits["train"]
    empty = JaggedColumn.from_lengths(torch.zeros(len(train), dtype=torch.int64), torch.zeros(0))
    train = dataclasses.replace(train, sparse={**train.sparse, "user_history": empty})
    init_distributed()
    try:
        model, optimizer = builders.build_sharded(cfg, data, init_distributed())
        losses = []
        for batch in list(train_batches(train, data.spec, 64, ShardInfo(), seed=0, epoch=0))[:4]:
            assert int(batch.sparse_features["user_history"].lengths().sum()) == 0
            loss, _ = model(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        assert all(torch.isfinite(torch.tensor(losses)))
        for name, tensor in model.state_dict().items():
            local = tensor.local_shards()[0].tensor if hasattr(tensor, "local_shards") else tensor
            assert torch.isfinite(local).all(), name
    finally:
        shutdown_distributed()


# --- checkpoints -----------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A complete checkpoint of a small Linear + Adam (one process)."""
    init_distributed()
    torch.manual_seed(0)
    model = nn.Linear(16, 8)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(2, 16)).sum().backward()
    optimizer.step()
    yield save_checkpoint(tmp_path, model, optimizer, TrainerState(global_step=1))
    shutdown_distributed()


def _load_into(path: Path, model: nn.Module) -> TrainerState:
    return load_checkpoint(path, model, torch.optim.Adam(model.parameters()), restore_rng=True)


def test_checkpoint_round_trip(saved: Path) -> None:
    assert _load_into(saved, nn.Linear(16, 8)).global_step == 1


def test_truncated_shard_file(saved: Path) -> None:
    (shard,) = saved.glob("*.distcp")
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(UserError, match="cannot be loaded into this model: it is truncated"):
        _load_into(saved, nn.Linear(16, 8))


def test_checkpoint_of_another_model(saved: Path) -> None:
    with pytest.raises(UserError, match="from another model .*Size mismatch"):
        _load_into(saved, nn.Linear(16, 4))
    with pytest.raises(UserError, match="from another model .*Missing key"):
        _load_into(saved, nn.Sequential(nn.Linear(16, 8)))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (STATE_FILE, None, "is incomplete: trainer_state.json is missing"),
        (STATE_FILE, "{not json", "unreadable trainer_state.json"),
        (
            STATE_FILE,
            '{"global_step": 1, "optimizer": "adam"}',
            "unexpected keys \\['optimizer'\\]",
        ),
        (METADATA_FILE, None, "is incomplete: .metadata is missing"),
        (METADATA_FILE, "garbage", "truncated, corrupt or from another model"),
        ("rng_rank0.json", "[1, 2", "rng_rank0.json' is not valid JSON"),
        ("rng_rank0.json", '{"python": 1}', "saved RNG state is malformed"),
    ],
)
def test_damaged_checkpoint_files(
    saved: Path, name: str, content: str | None, message: str
) -> None:
    if content is None:
        (saved / name).unlink()
    else:
        (saved / name).write_text(content)
    with pytest.raises(UserError, match=message):
        _load_into(saved, nn.Linear(16, 8))


class _Payload:
    """Unpickling this would run ``os.system`` (what a hostile .metadata would do)."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        import os

        return (os.system, ("touch pwned",))


def test_hostile_metadata_pickle_is_refused_not_run(
    saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (saved / METADATA_FILE).write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(UserError, match="refused to unpickle posix.system"):
        _load_into(saved, nn.Linear(16, 8))
    assert not (tmp_path / "pwned").exists()


@pytest.mark.slow
def test_resume_with_a_changed_model_is_a_clear_error(
    synthetic_paths: SyntheticPaths, tmp_path: Path
) -> None:
    args = [*tiny_overrides(synthetic_paths, tmp_path), "--run-id=a", "--train.epochs=1"]
    main([*args, "--train.max_steps_per_epoch=1"])
    wider = ["--features.embedding_dim=16", "--model.dense_arch_layers=[16, 16]"]
    with pytest.raises(UserError, match=r"this run changes .*features.embedding_dim \(8 -> 16\)"):
        main([*args, "--resume", *wider])
    with pytest.raises(UserError, match="this run changes model.name \\('dlrm' -> 'two_tower'\\)"):
        main([*args, "--resume", "--model", "two_tower"])
    # without the run's config.json to compare with, the checkpoint load itself says why
    (tmp_path / "tiny" / "a" / "config.json").unlink()
    with pytest.raises(UserError, match="step_00000001' cannot be loaded .*Size mismatch"):
        main([*args, "--resume", *wider])
    with pytest.raises(UserError, match="cannot be loaded .*Missing key .*tower"):
        main([*args, "--resume", "--model", "two_tower"])


class _WithExtraState(nn.Linear):
    """A module whose state holds a non-tensor object (DCP stores it as bytes)."""

    def __init__(self, extra: object) -> None:
        super().__init__(16, 8)
        self.extra = extra

    def get_extra_state(self) -> object:
        return self.extra

    def set_extra_state(self, state: object) -> None:
        self.extra = state


def test_non_tensor_items_load_with_weights_only(
    saved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    model = _WithExtraState("plain data")
    optimizer = torch.optim.SGD(model.parameters())
    path = save_checkpoint(tmp_path / "extra", model, optimizer, TrainerState(global_step=1))
    fresh = _WithExtraState("")
    load_checkpoint(path, fresh, torch.optim.SGD(fresh.parameters()))
    assert fresh.extra == "plain data"

    hostile = _WithExtraState(_Payload())
    path = save_checkpoint(tmp_path / "hostile", hostile, optimizer, TrainerState(global_step=1))
    with pytest.raises(UserError, match="cannot be loaded .*UnpicklingError"):
        load_checkpoint(path, _WithExtraState(""), torch.optim.SGD(fresh.parameters()))
    assert not (tmp_path / "pwned").exists()

"""``train`` streams preprocess shards (data.source = "shards"): exact resume, bad shards fail.

Criteo-format shards, and shards of the tiny synthetic files source (jagged features), whose
DLRM run equals the in-memory one."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny_overrides

from torchrec_recsys.app.preprocess import main as preprocess_main
from torchrec_recsys.app.train import FAULT_MODE_ENV, FAULT_STEP_ENV, STREAM_FILE, main
from torchrec_recsys.config import CriteoConfig, load_config
from torchrec_recsys.data.criteo import write_synthetic_criteo
from torchrec_recsys.data.shards import preprocess_criteo
from torchrec_recsys.data.synthetic import SyntheticPaths
from torchrec_recsys.errors import ConfigError, DataError, UserError

TRAIN_ROWS = 1600  # of 2,000 rows: then 200 validation and 200 test rows, the file's last
STEPS = TRAIN_ROWS // 64


def _preprocess(tsv: Path, out: Path, hash_rows: int = 500) -> Path:
    settings = CriteoConfig(
        path=str(tsv), hash_rows=hash_rows, chunk_rows=256, val_fraction=0.1, test_fraction=0.1
    )
    preprocess_criteo(settings, out, rows_per_shard=300, progress=False)
    return out


@pytest.fixture(scope="module")
def tsv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_criteo(tmp_path_factory.mktemp("c") / "d.tsv", 2000, cardinality=300)


@pytest.fixture(scope="module")
def shard_dir(tsv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _preprocess(tsv, tmp_path_factory.mktemp("shards"))


def _args(shards: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--name=shards",
        "--data.source=shards",
        f"--data.shards_dir={shards}",
        "--data.loader_workers=2",
        "--features.embedding_dim=8",
        "--model.dense_arch_layers=[16, 8]",
        "--model.over_arch_layers=[16, 1]",
        "--train.epochs=2",
        "--train.batch_size=64",
        "--train.eval_batch_size=128",
        "--train.progress_bar=false",
        "--train.checkpoint_every_steps=5",
        "--train.keep_last_checkpoints=0",
        f"--train.output_dir={out}",
        *extra,
    ]


@pytest.fixture(scope="module")
def reference(shard_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An uninterrupted 2-epoch run on the shards."""
    return main(_args(shard_dir, tmp_path_factory.mktemp("ref"), "--run-id=ref"))


def test_train_streams_every_split_of_the_shards(reference: dict) -> None:
    assert reference["dataset"]["train"] == TRAIN_ROWS
    assert (reference["dataset"]["val"], reference["dataset"]["test"]) == (200, 200)
    assert reference["final_state"]["epoch_batches"] == [STEPS, STEPS]
    assert all(e["val"]["auc"] > 0 for e in reference["epochs"])  # validated every epoch
    assert set(reference["test"]) == {"loss", "auc", "ne"}
    assert reference["final_state"]["data_order"].endswith("2 loader worker(s), batch 64")


@pytest.mark.slow
def test_resume_mid_epoch_gives_the_uninterrupted_metrics(
    reference: dict, shard_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails after global step 7, resumes from the step-5 checkpoint with 2 loader workers
    (the resumed DataLoader starts mid-round-robin): same losses and metrics, bit for bit."""
    args = _args(shard_dir, tmp_path, "--run-id=faulted", "--resume-if-any")
    monkeypatch.setenv(FAULT_STEP_ENV, "7")
    monkeypatch.setenv(FAULT_MODE_ENV, "raise")
    with pytest.raises(RuntimeError, match="injected fault after global step 7"):
        main(args)
    resumed = main(args)
    assert resumed["final_state"]["epoch_batches"] == reference["final_state"]["epoch_batches"]
    assert [e["train_loss"] for e in resumed["epochs"]] == [
        e["train_loss"] for e in reference["epochs"]
    ]
    assert [e["val"] for e in resumed["epochs"]] == [e["val"] for e in reference["epochs"]]
    assert resumed["test"] == reference["test"]


def test_resume_mid_epoch_with_other_loader_workers_fails(
    shard_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = _args(shard_dir, tmp_path, "--run-id=r", "--resume-if-any", "--train.epochs=1")
    monkeypatch.setenv(FAULT_STEP_ENV, "6")
    monkeypatch.setenv(FAULT_MODE_ENV, "raise")
    with pytest.raises(RuntimeError, match="injected fault"):
        main(args)
    with pytest.raises(UserError, match="2 loader worker.*1 loader worker.*data.loader_workers"):
        main([*args, "--data.loader_workers=1"])


def test_resume_on_shards_from_another_preprocess_fails(
    tsv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shards = _preprocess(tsv, tmp_path / "shards")
    args = _args(shards, tmp_path, "--run-id=r", "--resume-if-any", "--train.epochs=1")
    monkeypatch.setenv(FAULT_STEP_ENV, "6")
    monkeypatch.setenv(FAULT_MODE_ENV, "raise")
    with pytest.raises(RuntimeError, match="injected fault"):
        main(args)
    _preprocess(tsv, shards, hash_rows=499)  # same folder, other vocabulary
    with pytest.raises(DataError, match="made by another preprocess"):
        main(args)


def test_truncated_shard_fails_through_train(shard_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in shard_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    victim = broken / "test-00000.parquet"
    victim.write_bytes(victim.read_bytes()[:-100])
    with pytest.raises(DataError, match="test-00000.parquet.*cannot be read"):
        main(_args(broken, tmp_path))
    assert not list((tmp_path / "shards").glob(f"*/{STREAM_FILE}"))  # nothing trained


def test_shards_source_needs_a_folder_and_the_dlrm() -> None:
    with pytest.raises(ConfigError, match="data.shards_dir"):
        load_config(None, ["--data.source=shards"])
    with pytest.raises(ConfigError, match="not 'two_tower'"):
        load_config(None, ["--data.source=shards", "--data.shards_dir=x", "--model.name=two_tower"])
    with pytest.raises(ConfigError, match="data.loader_workers"):
        load_config(None, ["--data.loader_workers=-1"])


def test_preprocess_refuses_a_config_that_reads_shards(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="reads shards already"):
        preprocess_main(["--out", str(tmp_path), "--data.source=shards", "--data.shards_dir=x"])
    assert not list(tmp_path.iterdir())


# --- shards of an in-memory source: the tiny synthetic files source ---


def _tiny(paths: SyntheticPaths, out: Path, *extra: str) -> list[str]:
    """One epoch of the tiny experiment, checkpointed every 5 of its 21 steps."""
    return [
        *tiny_overrides(paths, out),
        "--train.epochs=1",
        "--train.checkpoint_every_steps=5",
        "--train.keep_last_checkpoints=0",
        *extra,
    ]


def _preprocess_tiny(paths: SyntheticPaths, out: Path, *extra: str) -> Path:
    preprocess_main(["--out", str(out), "--rows-per-shard", "500", *_tiny(paths, out, *extra)])
    return out


def _from_shards(paths: SyntheticPaths, shards: Path, out: Path, *extra: str) -> list[str]:
    return _tiny(
        paths,
        out,
        "--data.source=shards",
        f"--data.shards_dir={shards}",
        "--data.loader_workers=1",
        *extra,
    )


@pytest.fixture(scope="module")
def tiny_shards(synthetic_paths: SyntheticPaths, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _preprocess_tiny(synthetic_paths, tmp_path_factory.mktemp("tiny_shards"))


@pytest.fixture(scope="module")
def tiny_streamed(
    synthetic_paths: SyntheticPaths, tiny_shards: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    out = tmp_path_factory.mktemp("streamed")
    return main(_from_shards(synthetic_paths, tiny_shards, out, "--run-id=ref"))


def test_dlrm_from_example_shards_equals_the_in_memory_run(
    synthetic_paths: SyntheticPaths, tiny_streamed: dict, tmp_path: Path
) -> None:
    """Same data, same example order (the shards hold the in-memory first epoch's order):
    the same training loss, validation and test metrics."""
    memory = main(_tiny(synthetic_paths, tmp_path))
    for split in ("train", "val", "test"):
        assert tiny_streamed["dataset"][split] == memory["dataset"][split]
    assert tiny_streamed["feature_spec"] == memory["feature_spec"]
    assert tiny_streamed["final_state"]["epoch_batches"] == memory["final_state"]["epoch_batches"]
    assert [e["train_loss"] for e in tiny_streamed["epochs"]] == [
        e["train_loss"] for e in memory["epochs"]
    ]
    assert [e["val"] for e in tiny_streamed["epochs"]] == [e["val"] for e in memory["epochs"]]
    assert tiny_streamed["test"] == memory["test"]
    assert set(tiny_streamed["test"]) == {"loss", "auc", "ne"}


@pytest.mark.slow
def test_resume_on_example_shards_gives_the_uninterrupted_metrics(
    synthetic_paths: SyntheticPaths,
    tiny_shards: Path,
    tiny_streamed: dict,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = _from_shards(synthetic_paths, tiny_shards, tmp_path, "--run-id=f", "--resume-if-any")
    monkeypatch.setenv(FAULT_STEP_ENV, "7")
    monkeypatch.setenv(FAULT_MODE_ENV, "raise")
    with pytest.raises(RuntimeError, match="injected fault after global step 7"):
        main(args)
    resumed = main(args)
    assert [e["train_loss"] for e in resumed["epochs"]] == [
        e["train_loss"] for e in tiny_streamed["epochs"]
    ]
    assert resumed["test"] == tiny_streamed["test"]


def test_resume_on_example_shards_from_another_preprocess_fails(
    synthetic_paths: SyntheticPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shards = _preprocess_tiny(synthetic_paths, tmp_path / "shards")
    args = _from_shards(synthetic_paths, shards, tmp_path, "--run-id=r", "--resume-if-any")
    monkeypatch.setenv(FAULT_STEP_ENV, "6")
    monkeypatch.setenv(FAULT_MODE_ENV, "raise")
    with pytest.raises(RuntimeError, match="injected fault"):
        main(args)
    # same folder, other vocabularies: the genres are no longer a feature
    _preprocess_tiny(
        synthetic_paths, shards, "--overwrite", '--data.item_categorical_columns=["decade"]'
    )
    with pytest.raises(DataError, match="made by another preprocess"):
        main(args)

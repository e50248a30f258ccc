"""End to end: ``main(argv)`` trains, evaluates, writes a summary, checkpoints and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_overrides

from torchrec_recsys.app.train import main
from torchrec_recsys.cli import main as cli_main
from torchrec_recsys.errors import ConfigError, UserError
from torchrec_recsys.training.checkpoint_io import latest_checkpoint


@pytest.mark.slow
def test_train_writes_summary_and_resume_continues_steps(synthetic_paths, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    args = tiny_overrides(synthetic_paths, tmp_path)
    first = main([*args, "--train.epochs=1"])
    run_dir = Path(first["run_dir"])
    summary = json.loads((run_dir / "summary.json").read_text())
    steps = summary["final_state"]["global_step"]
    assert steps == 1400 // 64  # 60 users x (25 - 2 held out) train examples / batch 64
    assert 0.0 <= summary["test"]["auc"] <= 1.0 and summary["test"]["ne"] > 0
    assert summary["epochs"][0]["val"]["auc"] > 0.0
    assert summary["config"]["train"]["epochs"] == 1
    assert {"popularity", "item_positive_rate"} <= set(summary["baselines_test"])
    assert (run_dir / "vocab.json").is_file() and (run_dir / "feature_spec.json").is_file()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    checkpoint = latest_checkpoint(run_dir)
    assert checkpoint is not None and checkpoint.name == f"step_{steps:08d}"

    resumed = main([*args, "--train.epochs=3", "--resume"])
    assert resumed["run_dir"] == str(run_dir)
    assert resumed["final_state"]["global_step"] == 3 * steps
    # the summary covers every epoch of the run, including the one trained before the resume
    assert [e["epoch"] for e in resumed["epochs"]] == [0, 1, 2]
    assert resumed["epochs"][0] == summary["epochs"][0]
    assert resumed["final_state"]["epoch_batches"] == [steps] * 3
    # only the newest checkpoints are kept
    kept = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert kept == [f"step_{2 * steps:08d}", f"step_{3 * steps:08d}"]


@pytest.mark.slow
@pytest.mark.parametrize("interaction", ["dot", "dcn"])
def test_training_learns_beyond_chance(synthetic_paths, tmp_path: Path, interaction: str) -> None:  # type: ignore[no-untyped-def]
    summary = main(
        [
            *tiny_overrides(synthetic_paths, tmp_path),
            "--train.epochs=6",
            "--optimizer.dense_lr=0.01",
            f"--model.interaction={interaction}",
            "--model.dcn_low_rank_dim=8",
        ]
    )
    assert summary["epochs"][-1]["train_loss"] < summary["epochs"][0]["train_loss"]
    assert summary["test"]["auc"] > 0.6


def test_resume_without_checkpoint_is_a_clear_error(synthetic_paths, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UserError, match="--resume found no run of 'tiny' with a checkpoint"):
        main([*tiny_overrides(synthetic_paths, tmp_path), "--resume"])


def test_memory_budget_too_small_names_the_planner_reason(synthetic_paths, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(
        ConfigError, match="found no plan for 1 process\\(es\\) on cpu .* 0.001 MB per-rank budget"
    ):
        main([*tiny_overrides(synthetic_paths, tmp_path), "--sharding.memory_budget_mb=0.001"])


def test_unknown_table_in_per_table_sharding(synthetic_paths, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="unknown table\\(s\\) \\['t_movie'\\]"):
        main([*tiny_overrides(synthetic_paths, tmp_path), "--sharding.per_table.t_movie=row_wise"])


def test_cli_prints_one_line_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli_main(["train", "--train.epochz=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown config key 'train.epochz'") and "\n" not in err
    assert cli_main(["bogus"]) == 2
    assert cli_main(["--help"]) == 0
    missing = tmp_path / "missing.csv"
    assert (
        cli_main(
            [
                "train",
                "--data.source=files",
                f"--data.interactions_path={missing}",
                f"--data.items_path={missing}",
                f"--train.output_dir={tmp_path}",
            ]
        )
        == 2
    )
    assert f"interactions file '{missing}' does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_two_tower_trains_and_reports_retrieval_metrics(synthetic_paths, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    summary = main(
        [
            *tiny_overrides(synthetic_paths, tmp_path),
            "--model",
            "two_tower",
            "--train.epochs=4",
            "--optimizer.dense_lr=0.01",
        ]
    )
    test = summary["test"]
    at_k = {f"{m}@{k}" for m in ("recall", "ndcg", "hr", "map") for k in (10, 50, 100)}
    assert at_k | {"mrr", "coverage@10"} <= set(test)
    assert 0 < test["mrr"] <= 1 and 0 < test["coverage@10"] <= 1
    assert test["recall@10"] <= test["recall@50"] <= test["recall@100"]
    assert summary["epochs"][-1]["train_loss"] < summary["epochs"][0]["train_loss"]
    assert "popularity" in summary["baselines_test"]

"""The typed Python API: the results the commands compute, as dataclasses; clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO_ROOT, tiny_config_file

import torchrec_recsys as trs
from torchrec_recsys import api
from torchrec_recsys.cli import main as cli_main


def test_import_is_cheap_and_exports_the_api() -> None:
    code = (
        "import sys, torchrec_recsys as t; t.load_config; t.RunResult; "
        "print(sorted(m for m in ('torch', 'torchrec', 'faiss') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    ).stdout
    assert out.strip() == "[]"
    assert trs.train is api.train and trs.load_run is api.load_run
    assert {"train", "load_config", "evaluate_pipeline", "RunResult"} <= set(dir(trs))
    with pytest.raises(AttributeError, match="has no attribute 'trian'"):
        trs.trian  # noqa: B018


def test_load_config_takes_python_values_or_override_strings(tmp_path: Path) -> None:
    cfg = api.load_config(
        REPO_ROOT / "configs" / "tiny_synthetic.toml",
        {
            "train.epochs": 3,
            "optimizer.dense_lr": 0.5,
            "model.dense_arch_layers": [4, 8],
            "data.multi_value_separator": ";",
            "train.progress_bar": True,
            "name": "mine",
        },
    )
    assert (cfg.train.epochs, cfg.optimizer.dense_lr, cfg.model.dense_arch_layers) == (
        3,
        0.5,
        [4, 8],
    )
    assert (cfg.data.multi_value_separator, cfg.train.progress_bar, cfg.name) == (";", True, "mine")
    same = api.load_config(overrides=["train.epochs=3", "--model.name=two_tower"])
    assert (same.train.epochs, same.model.name) == (3, "two_tower")
    assert api.load_config().train.epochs == trs.ExperimentConfig().train.epochs


@pytest.mark.parametrize(
    ("path", "overrides", "match"),
    [
        ("missing.toml", {}, "config file '.*missing.toml' does not exist"),
        (None, {"train.epochz": 1}, "unknown config key 'train.epochz'"),
        (None, {"train.epochs": "three"}, "train.epochs .* must be of type int, got 'three'"),
        (None, {"train.epochs": object()}, "a object is not a config value"),
        (None, "train.epochs=1", "is one string; expected a mapping or a list"),
    ],
)
def test_bad_config_input_is_a_one_line_config_error(
    tmp_path: Path, path: str | None, overrides: object, match: str
) -> None:
    with pytest.raises(trs.ConfigError, match=match) as caught:
        api.load_config(tmp_path / path if path else None, overrides)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


def test_bad_run_input_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(trs.UserError, match="run directory '.*nowhere' does not exist"):
        api.load_run(tmp_path / "nowhere")
    with pytest.raises(trs.UserError, match="is not a run directory: config.json is missing"):
        api.load_run(tmp_path)
    with pytest.raises(trs.ConfigError, match="expected an ExperimentConfig"):
        api.train("configs/tiny_synthetic.toml")  # type: ignore[arg-type]


def test_use_dataframes_writes_parquet_and_checks_columns(tmp_path: Path) -> None:
    cfg = api.load_config(
        overrides={"data.item_categorical_columns": ["genres"], "data.user_categorical_columns": []}
    )
    interactions = pd.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "item_id": ["i1", "i2"],
            "rating": [5.0, 3.0],
            "timestamp": [1, 2],
        }
    )
    items = pd.DataFrame({"item_id": ["i1", "i2"], "title": ["A", "B"], "genres": ["x", "x|y"]})
    with pytest.raises(trs.DataError, match=r"items DataFrame lacks column\(s\) \['genres'\]"):
        api.use_dataframes(cfg, tmp_path / "d", interactions, items.drop(columns="genres"))
    assert not (tmp_path / "d").exists()  # nothing written
    mine = api.use_dataframes(cfg, tmp_path / "d", interactions, items)
    assert mine.data.source == "files" and mine.data.users_path == ""
    assert pd.read_parquet(mine.data.items_path)["genres"].tolist() == ["x", "x|y"]
    with pytest.raises(trs.UserError, match="already exists; pass overwrite=True"):
        api.use_dataframes(cfg, tmp_path / "d", interactions, items)
    api.use_dataframes(cfg, tmp_path / "d", interactions, items.iloc[:1], overwrite=True)
    assert len(pd.read_parquet(mine.data.items_path)) == 1
    with pytest.raises(trs.DataError, match="data.user_categorical_columns"):
        api.use_dataframes(api.load_config(), tmp_path / "e", interactions, items)


@pytest.fixture(scope="module")
def trained(synthetic_paths, tmp_path_factory):  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("api")
    config = tiny_config_file(synthetic_paths, folder)
    common = {"train.epochs": 1, "train.output_dir": str(folder / "runs")}
    two_tower = api.train(api.load_config(config, {**common, "model.name": "two_tower"}))
    dlrm = api.train(
        api.load_config(config, {**common, "baselines.lightgbm": False}),
        run_dir=folder / "runs" / "dlrm",
    )
    return two_tower, dlrm


@pytest.mark.slow
def test_train_result_equals_the_run_folder_and_loads_back(trained) -> None:  # type: ignore[no-untyped-def]
    two_tower, dlrm = trained
    assert isinstance(dlrm, trs.RunResult) and dlrm.run_dir.name == "dlrm"
    summary = json.loads((dlrm.run_dir / "summary.json").read_text())
    assert dlrm.summary_path == dlrm.run_dir / "summary.json"
    assert dlrm.metrics == summary["test"] and {"auc", "ne"} <= set(dlrm.metrics)
    assert dlrm.epochs == summary["epochs"] and len(dlrm.epochs) == 1
    assert dlrm.global_step == summary["final_state"]["global_step"] > 0
    assert dlrm.baselines == summary["baselines_test"] and "lightgbm" not in dlrm.baselines
    assert dlrm.selected_epoch == summary["selected_epoch"]
    assert dlrm.wall_time_seconds == summary["wall_time_seconds"]
    assert dlrm.config.train.epochs == 1 and dlrm.config.model.name == "dlrm"
    assert "recall@10" in two_tower.metrics

    run = api.load_run(dlrm.run_dir)
    assert run.config == dlrm.config and run.result == dlrm and run.metrics == dlrm.metrics
    model = run.load_model()
    assert model is not None and model.task is not None and not model.task.training
    assert len(model.data.items) == 80


@pytest.mark.slow
def test_export_evaluate_and_recommend_return_results(trained, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    two_tower, dlrm = trained
    export = api.export_index(two_tower, tmp_path / "index")
    assert isinstance(export, trs.IndexExport)
    assert (export.num_items, export.dim, export.kind) == (80, 32, "flat")
    assert (export.index_dir / "index.faiss").is_file()
    with pytest.raises(trs.UserError, match="already exists; pass --overwrite"):
        api.export_index(two_tower, tmp_path / "index")

    pipeline = api.evaluate_pipeline(two_tower, [dlrm.run_dir], candidates=20)
    assert isinstance(pipeline, trs.PipelineResult)
    assert set(pipeline.metrics) == {"retrieval", "DLRM (rating)", "candidates_recall"}
    assert pipeline.methods == ["retrieval", "DLRM (rating)"]
    assert {"recall@10", "ndcg@10", "mrr", "coverage@10"} <= set(pipeline.metrics["retrieval"])
    # retrieval alone equals the retriever's own test Recall@10 (the same exact search)
    assert pipeline.metrics["retrieval"]["recall@10"] == pytest.approx(
        two_tower.metrics["recall@10"], abs=1e-6
    )
    # the command writes the same numbers: it calls the same function
    out = tmp_path / "pipeline.json"
    argv = ["--retriever", str(two_tower.run_dir), "--ranker", str(dlrm.run_dir)]
    assert cli_main(["evaluate-pipeline", *argv, "--candidates", "20", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == pipeline.metrics

    recs = api.recommend(two_tower, dlrm, user="u1", k=4, candidates=20, index=export)
    assert isinstance(recs, trs.RecommendationList) and len(recs.items) == 4
    scores = [r.ranking_score for r in recs.items]
    assert scores == sorted(scores, reverse=True) and not recs.cold_start
    with pytest.raises(trs.UserError, match="k = 30 must not exceed the number of candidates"):
        api.recommend(two_tower, dlrm, user="u1", k=30, candidates=20, index=export)

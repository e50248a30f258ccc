"""Every script in examples/ runs on tiny data and prints what it computed."""

from __future__ import annotations

import importlib.util
import json
import re
from types import ModuleType

import pandas as pd
import pytest
from conftest import REPO_ROOT, tiny_config_file

EXAMPLES = REPO_ROOT / "examples"


def example(name: str) -> ModuleType:
    """The example script ``name`` as a module (its ``main(argv)`` is what ``__main__`` runs)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_is_tested() -> None:
    tested = {"train_and_evaluate", "own_dataframe", "faiss_query"}
    assert {p.stem for p in EXAMPLES.glob("*.py")} == tested


@pytest.mark.slow
def test_train_and_evaluate_prints_the_runs_metrics(synthetic_paths, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    config = tiny_config_file(synthetic_paths, tmp_path)
    argv = ["--config", str(config), "--output-dir", str(tmp_path / "runs")]
    result = example("train_and_evaluate").main(
        [*argv, "--set", "train.epochs=1", "--set", "baselines.lightgbm=false"]
    )
    out = capsys.readouterr().out
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert re.search(r"^epoch 1: train loss \d+\.\d{4}$", out, re.M)
    for name in ("auc", "ne", "loss"):
        assert f"test {name} = {summary['test'][name]:.4f}\n" in out
    assert f"dlrm run: {result.run_dir}" in out
    assert summary["config"]["train"]["epochs"] == 1


@pytest.mark.slow
def test_own_dataframe_trains_on_the_saved_tables(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "tables"
    argv = ["--folder", str(folder), "--output-dir", str(tmp_path / "runs")]
    result = example("own_dataframe").main(
        [*argv, "--users", "40", "--items", "50", "--per-user", "15", "--epochs", "1"]
    )
    out = capsys.readouterr().out
    assert "trained on 600 interactions of 50 items" in out
    summary = json.loads((result.run_dir / "summary.json").read_text())
    auc, ne = summary["test"]["auc"], summary["test"]["ne"]
    assert f"test AUC {auc:.4f}, NE {ne:.4f}" in out
    data = summary["config"]["data"]
    assert data["source"] == "files" and data["items_path"] == str(folder / "items.parquet")
    assert len(pd.read_parquet(folder / "interactions.parquet")) == 600
    assert any(f["name"] == "item_genres" for f in summary["feature_spec"]["sparse"])
    assert summary["dataset"]["test"] == 40  # one test interaction per user


@pytest.mark.slow
def test_faiss_query_finds_the_item_itself_first(synthetic_paths, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    config = tiny_config_file(synthetic_paths, tmp_path)
    argv = ["--config", str(config), "--output-dir", str(tmp_path / "runs"), "--item", "i3"]
    neighbours = example("faiss_query").main([*argv, "--set", "train.epochs=1", "-k", "3"])
    out = capsys.readouterr().out
    assert re.search(r"indexed 80 items \(32-d, flat\) in .*index_flat", out)
    assert "items nearest to i3:" in out
    assert len(neighbours) == 3 and neighbours[0][0] == "i3"
    assert neighbours[0][1] == pytest.approx(1.0, abs=1e-4)  # cosine of an item with itself
    scores = [s for _, s in neighbours]
    assert scores == sorted(scores, reverse=True)
    assert f"  1.       i3  cosine {neighbours[0][1]:.4f}" in out

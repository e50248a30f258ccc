"""Best-epoch selection and early stopping: on histories and on a run where the best is known."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_overrides
from torch import nn

from torchrec_recsys.app import builders
from torchrec_recsys.app.train import main
from torchrec_recsys.errors import ConfigError
from torchrec_recsys.training.selection import best_checkpoint, best_epoch, should_stop


def _history(values: list[float], metric: str = "auc") -> list[dict]:
    return [{"epoch": i, "val": {metric: v}} for i, v in enumerate(values)]


def test_best_epoch_maximises_or_minimises_by_metric() -> None:
    assert best_epoch(_history([0.6, 0.8, 0.8, 0.7]), "auc").epoch == 1  # earliest on ties
    assert best_epoch(_history([0.9, 0.7, 0.8], "ne"), "ne").epoch == 1
    assert best_epoch(_history([float("nan"), 0.5]), "auc").epoch == 1
    assert best_epoch([{"epoch": 0, "val": {}}], "auc") is None
    with pytest.raises(ConfigError, match="recall@10"):
        best_epoch(_history([0.5]), "recall@10")


def test_should_stop_after_patience_epochs_without_improvement() -> None:
    assert not should_stop(_history([0.5, 0.6, 0.55]), "auc", patience=2)
    assert should_stop(_history([0.5, 0.6, 0.55, 0.58]), "auc", patience=2)
    assert not should_stop(_history([0.5, 0.4, 0.3]), "auc", patience=0)  # 0 = never


def _param_sum(model: nn.Module) -> float:
    params = [p for p in model.parameters() if p.is_floating_point()]
    return float(sum(p.detach().double().sum() for p in params))


@pytest.mark.slow
def test_run_keeps_and_tests_the_best_epoch_and_stops_early(  # type: ignore[no-untyped-def]
    synthetic_paths, tmp_path: Path, monkeypatch
) -> None:
    """Scripted validation AUCs 0.5, 0.9, 0.7, 0.6 (best: epoch 1), patience 2, 8 epochs
    asked: training stops after epoch 3 and the test split is scored with epoch 1's weights."""
    scripted = iter([0.5, 0.9, 0.7, 0.6, 0.65, 0.66, 0.67, 0.68])
    weights_at_val: list[float] = []

    def fake_evaluator(cfg, data, ctx, sequences=None, stream=None):  # type: ignore[no-untyped-def]
        def evaluate(model: nn.Module, split: str) -> dict[str, float]:
            if split == "val":
                weights_at_val.append(_param_sum(model))
                return {"auc": next(scripted)}
            return {"auc": 0.0, "weights": _param_sum(model)}

        return evaluate

    monkeypatch.setattr(builders, "build_evaluator", fake_evaluator)
    summary = main(
        [*tiny_overrides(synthetic_paths, tmp_path), "--train.epochs=8", "--train.patience=2"]
    )
    assert [e["epoch"] for e in summary["epochs"]] == [0, 1, 2, 3]
    assert summary["selected_epoch"]["epoch"] == 1
    assert summary["selected_epoch"]["value"] == 0.9
    assert summary["test"]["weights"] == pytest.approx(weights_at_val[1], rel=1e-9)
    assert summary["test"]["weights"] != pytest.approx(weights_at_val[3], rel=1e-9)
    best = best_checkpoint(Path(summary["run_dir"]))
    assert best is not None
    assert json.loads((best / "trainer_state.json").read_text())["epoch"] == 2  # after epoch 1


def test_patience_needs_a_selection_metric(synthetic_paths, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    args = [*tiny_overrides(synthetic_paths, tmp_path), "--train.patience=2"]
    with pytest.raises(ConfigError, match="train.patience"):
        main([*args, "--train.select_metric=last"])

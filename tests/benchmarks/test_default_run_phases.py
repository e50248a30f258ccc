"""The default-run benchmark's arithmetic: shares of the process and of the run, and each
baseline's cost against the model's fit, from summaries shaped like ``train`` writes them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))

import default_run_phases as drp  # noqa: E402


def _run(process: float, fit: float, logistic: float | None = None) -> dict:
    phases = {"data": 1.0, "build": 0.5, "fit": fit, "test": 0.5, "baselines": logistic or 0.0}
    baselines: dict = {"popularity": 0.6}  # a non-learned baseline: a number, not a fit
    if logistic is not None:
        baselines["logistic_regression"] = {"auc": 0.7, "fit_seconds": logistic}
    summary = {
        "phase_seconds": phases,
        "wall_time_seconds": sum(phases.values()),
        "test": {"auc": 0.8},
        "baselines_test": baselines,
    }
    return {"process_s": process, "summary": summary}


def test_shares_are_medians_of_fit_plus_test_over_process_and_run() -> None:
    row = drp.row("default", [_run(10.0, 4.0), _run(12.0, 6.0), _run(20.0, 5.0)])
    assert row["process_s"] == 12.0 and row["fit_s"] == 5.0
    # (fit + test) / process per run: 0.45, 0.5417, 0.275 -> median 0.45
    assert row["model_share_of_process"] == pytest.approx(0.45)
    # run wall = 1 + 0.5 + fit + 0.5: 4.5/6, 6.5/8, 5.5/7 -> median 5.5/7
    assert row["model_share_of_run"] == pytest.approx(round(5.5 / 7, 3))
    assert "logistic_regression_s" not in row


def test_each_learned_baseline_is_costed_against_the_fit() -> None:
    row = drp.row("baselines", [_run(10.0, 4.0, logistic=2.0), _run(10.0, 4.0, logistic=3.0)])
    assert row["logistic_regression_s"] == 2.5
    assert row["logistic_regression_share_of_fit"] == pytest.approx(0.625)
    assert "popularity_s" not in row  # not learned: nothing to cost
    table = drp.markdown([row], 3.0, "python -m torchrec_recsys train")
    assert "logistic_regression 2.50 s = 62% of the model's fit" in table


def test_unknown_variant_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        drp.main(["--variants", "default,fast"])
    assert "--variants 'fast' is not one of" in capsys.readouterr().err

"""Every benchmark script imports and answers ``--help``: a moved package name breaks here,
not months later when someone reruns the benchmark."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted(
    p
    for p in (Path(__file__).resolve().parents[2] / "benchmarks").glob("*.py")
    if p.name != "bench_utils.py"
)


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_benchmark_answers_help(
    script: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    monkeypatch.syspath_prepend(str(script.parent))
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(script), run_name="__main__")
    assert stop.value.code == 0
    assert "usage" in capsys.readouterr().out.lower()


@pytest.mark.slow
def test_train_pipeline_benchmark_runs_and_writes_every_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 2-step run end to end: every engine x batch kind gets a row with a positive rate."""
    import json

    script = BENCHMARKS[0].parent / "train_pipeline_benchmark.py"
    out = tmp_path / "tp.json"
    argv = ["--steps", "2", "--warmup", "1", "--repeats", "1", "--batch-size", "64"]
    monkeypatch.setattr(sys, "argv", [str(script), *argv, "--out", str(out)])
    monkeypatch.syspath_prepend(str(script.parent))
    runpy.run_path(str(script), run_name="__main__")
    rows = json.loads(out.read_text())["rows"]
    assert {(r["engine"], r["batches"]) for r in rows} == {
        (e, b) for e in ("none", "base", "sparse_dist") for b in ("prebuilt", "real")
    }
    assert all(r["p50_samples_per_second"] > 0 for r in rows)

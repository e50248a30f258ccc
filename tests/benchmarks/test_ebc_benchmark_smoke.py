"""Smoke test of benchmarks/ebc_benchmark.py: a tiny grid on world size 1 and 2, plus bad input.

Timings are not checked (the machine is shared); only that every field is present and sane.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))

import ebc_benchmark  # noqa: E402

ROWS, DIM, POOLING, BATCH = 1000, 16, 3, 16


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run the benchmark once: 3 baselines + row_wise DMP on 1 and 2 ranks."""
    out = tmp_path_factory.mktemp("ebc") / "ebc_smoke.json"
    argv = [
        "--rows", str(ROWS), "--dims", str(DIM), "--pooling", str(POOLING),
        "--batch-sizes", str(BATCH), "--sharding-types", "row_wise", "--world-sizes", "1", "2",
        "--warmup", "1", "--repeats", "2", "--copy-probe-mib", "8", "--out", str(out),
    ]  # fmt: skip
    assert ebc_benchmark.main(argv) == 0
    return json.loads(out.read_text())


@pytest.mark.slow
def test_rows_have_sane_fields(result: dict) -> None:
    meta, probes, rows = result["meta"], result["probes"], result["rows"]
    assert len(meta["loadavg_start"]) == 3 and meta["torch_threads"] == 2
    assert probes["seq_copy"]["gbps"] > 0
    assert all(p["gbps"] > 0 for p in probes["gather"].values())
    labels = [r["label"] for r in rows]
    assert labels == [
        "nn.EmbeddingBag/dense",
        "nn.EmbeddingBag/sparse",
        "FusedEBC/unsharded",
        "DMP/row_wise/fused/w1",
        "DMP/row_wise/fused/w2",
    ]
    for r in rows:
        a, lat = r["analytic"], r["latency_ms"]
        assert a["weights_bytes"] == ROWS * DIM * 4
        assert a["fwd_bytes"] == BATCH * POOLING * DIM * 4
        assert a["optimizer_state_bytes"] == 0  # sgd
        assert 0 < a["unique_rows"] <= BATCH * POOLING
        assert 0 < lat["p50"] <= lat["p90"] and len(lat["samples"]) == 2
        assert r["samples_per_s"] > 0 and r["effective_gbps"] > 0
        assert r["share_of_gather_probe"] > 0 and r["share_of_copy_probe"] > 0
        assert r["memory"]["measured_peak_bytes"] >= 0
        assert r["memory"]["method"] in ("vmhwm", "vmhwm-no-reset")
        assert len(r["loadavg"]) == 3
    w1, w2 = rows[3], rows[4]
    assert w1["memory"]["planner_estimate_bytes"] >= ROWS * DIM * 4
    # row_wise on 2 ranks: each rank holds half the rows, so its estimate is about half
    assert len(w2["memory"]["planner_estimate_per_rank"]) == 2
    assert len(w2["memory"]["measured_peak_per_rank"]) == 2
    assert w2["memory"]["planner_estimate_bytes"] < w1["memory"]["planner_estimate_bytes"]
    assert w2["plan"].startswith("0:[500, 16]") and "1:[500, 16]" in w2["plan"]
    assert w2["config"]["threads_per_rank"] == 1
    assert {t["target"] for t in result["targets"]} >= {
        "speedup_vs_dense_grad",
        "p50_vs_sparse_grad",
        "bandwidth_vs_gather_probe",
    }


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--sharding-types", "diagonal"], "table_wise, column_wise"),
        (["--kernels", "quantum"], "fused, dense"),
        (["--optimizers", "adam"], "rowwise_adagrad"),
        (["--sharding-types", "table_wise", "--kernels", "dense"], "data_parallel"),
    ],
)
def test_bad_names_exit_2_with_one_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ebc_benchmark.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err


def test_memory_budget_too_small_fails_with_planner_reason(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "x.json"
    argv = ["--rows", "1e6", "--memory-budget-mb", "16", "--baselines", "--out", str(out)]
    assert ebc_benchmark.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "planner found no plan" in err and "insufficient storage" in err
    assert not out.exists()

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
        "--warmup", "1", "--repeats", "2", "--copy-probe-mib", "8", "--threads", "1",
        "--out", str(out),
    ]  # fmt: skip
    assert ebc_benchmark.main(argv) == 0
    return json.loads(out.read_text())


def rows_bytes_sgd(analytic: dict) -> float:
    """Bytes of an SGD step: rows gathered + gradient rows + each unique row read and written."""
    return analytic["fwd_bytes"] + analytic["bwd_grad_bytes"] + analytic["update_bytes"]


@pytest.mark.slow
def test_rows_have_sane_fields(result: dict) -> None:
    meta, probes, rows = result["meta"], result["probes"], result["rows"]
    assert len(meta["loadavg_start"]) == 3 and meta["torch_threads"] == 1
    assert probes["seq_copy"]["gbps"] > 0 and probes["threads"] == 1
    (limit,) = probes["limit"].values()
    # gather + scatter-add: the step's analytic bytes, at the run's thread count
    assert limit["threads"] == 1 and limit["gbps"] > 0
    assert limit["bytes"] == rows_bytes_sgd(result["rows"][0]["analytic"])
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
        assert r["share_of_limit_probe"] > 0 and r["share_of_copy_probe"] > 0
        assert r["config"]["threads"] == 1
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
        "bandwidth_vs_limit_probe",
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


@pytest.mark.slow
def test_interleaved_headline_ratios_and_run_to_run_table(tmp_path: Path) -> None:
    """Interleaved timing fills every row; plot_ebc --runs reads two runs' headline ratios."""
    import plot_ebc

    outs = []
    for run in ("a", "b"):
        out = tmp_path / f"ebc_headline_t1_{run}.json"
        argv = [
            "--rows", str(ROWS), "--dims", str(DIM), "--pooling", str(POOLING),
            "--batch-sizes", str(BATCH), "--warmup", "1", "--repeats", "3", "--threads", "1",
            "--copy-probe-mib", "8", "--interleave", "--out", str(out),
        ]  # fmt: skip
        assert ebc_benchmark.main(argv) == 0
        outs.append(out)
    doc = json.loads(outs[0].read_text())
    assert doc["meta"]["settings"]["interleave"] is True
    assert [len(r["latency_ms"]["samples"]) for r in doc["rows"]] == [3, 3, 3, 3]
    assert all(p["interleaved"] for p in doc["probes"]["limit"].values())
    table = tmp_path / "headline.md"
    assert plot_ebc.main(["--runs", *map(str, outs), "--repro-table", str(table)]) == 0
    text = table.read_text()
    assert "| ebc_headline_t1_a | 1 | 3 |" in text and "| ebc_headline_t1_b | 1 | 3 |" in text
    ratios = [plot_ebc.headline_ratios(json.loads(o.read_text()))["ratios"] for o in outs]
    diff = abs(ratios[0]["nn.EmbeddingBag/dense"] - ratios[1]["nn.EmbeddingBag/dense"])
    mean = (ratios[0]["nn.EmbeddingBag/dense"] + ratios[1]["nn.EmbeddingBag/dense"]) / 2
    assert f"| {diff / mean * 100:.1f}% |" in text

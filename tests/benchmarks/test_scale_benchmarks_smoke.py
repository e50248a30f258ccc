"""Smoke tests of the DLRM scale benchmark (2 processes, gloo) and the number-of-tables growth
case at tiny sizes, plus their plots; timings are not checked (the machine is shared)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))

import dlrm_scale_benchmark as dsb  # noqa: E402
import plot_scale  # noqa: E402


def test_kaggle_sizes_are_capped_like_max_ind_range() -> None:
    rows = dsb.table_rows("kaggle")
    assert len(rows) == 26 and max(rows) == 10_000_000 and min(rows) == 3
    assert sum(rows) == sum(min(r, 10_000_000) for r in dsb.KAGGLE_ROWS)
    assert dsb.table_rows("1e5", num_tables=4) == [100_000] * 4
    with pytest.raises(ValueError, match="'kaggle' or a positive whole number"):
        dsb.table_rows("1.5")


def test_criteo_batches_fit_their_tables_and_differ_past_26() -> None:
    spec = dsb.table_spec([50] * 27 + [7], 8)
    (batch,) = dsb.criteo_batches(spec, batch_size=64, count=1, seed=0)
    kjt = batch.sparse_features
    assert kjt.keys() == [f"cat_{j}" for j in range(28)]
    assert batch.dense_features.shape == (64, 13) and batch.labels.shape == (64,)
    per = kjt.to_dict()
    assert all(per[k].lengths().eq(1).all() for k in kjt.keys())  # noqa: SIM118 - a KJT is not a dict
    assert int(per["cat_27"].values().max()) < 7
    # table 26 reads column 0 again, salted: not the same ids as table 0
    assert not np.array_equal(per["cat_0"].values().numpy(), per["cat_26"].values().numpy())


def test_bad_rows_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert dsb.main(["--rows", "huge", "--out", "/nonexistent/x.json"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'huge'" in err


@pytest.mark.slow
def test_dlrm_scale_two_processes_and_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "dlrm_scale.json"
    argv = [
        "--rows", "1e3", "--sharding-types", "column_wise", "--batch-size", "32",
        "--batches", "1", "--warmup", "1", "--steps", "1", "--windows", "2", "--out", str(out),
    ]  # fmt: skip
    assert dsb.main(argv) == 0
    doc = json.loads(out.read_text())
    assert doc["settings"]["nproc"] == 2 and doc["settings"]["threads"] == 1
    (row,) = doc["rows"]
    assert row["sharding_type"] == "column_wise" and row["world_size"] == 2
    assert row["total_rows"] == 26_000 and row["p50_samples_per_second"] > 0
    assert len(row["windows"]) == 2 and all("load1" in w for w in row["windows"])
    per = row["per_rank"]
    # column-wise over 2 ranks: every table split in two column shards, one per rank
    assert [p["shards"] for p in per] == [26, 26] and [p["rows"] for p in per] == [26_000] * 2
    assert all(p["peak_rss_mib"] > 0 for p in per)
    monkeypatch.setattr(plot_scale, "RESULTS", tmp_path)
    lines = plot_scale.dlrm_scale_lines(doc)
    assert any(line.startswith("| 1e3 | 26,000 |") for line in lines)
    assert (tmp_path / "scale_dlrm.png").stat().st_size > 0


@pytest.mark.slow
def test_growth_tables_case_and_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import growth_benchmark

    from torchrec_recsys.distributed.env import shutdown_distributed

    out = tmp_path / "growth_tables.json"
    argv = [
        "--case", "tables", "--sizes", "1,3", "--rows-per-table", "100", "--steps", "1",
        "--windows", "2", "--threads", "1", "--out", str(out),
    ]  # fmt: skip
    try:
        growth_benchmark.main(argv)
    finally:
        shutdown_distributed()
    doc = json.loads(out.read_text())
    assert [r["tables"] for r in doc["rows"]] == [1, 3]
    for r in doc["rows"]:
        assert r["ms_per_step"] > 0 and len(r["windows_ms_per_step"]) == 2
        assert r["weights_mib"] == r["tables"] * 100 * 16 * 4 / 2**20
        assert r["process_peak_rss_mib"] > 0 and len(r["window_load1"]) == 2
    monkeypatch.setattr(plot_scale, "RESULTS", tmp_path)
    lines = plot_scale.num_tables_lines(doc)
    assert any("Growth exponents" in line for line in lines)
    assert (tmp_path / "scale_num_tables.png").stat().st_size > 0


def test_rerun_lines_match_rows_and_report_the_difference() -> None:
    first = {"rows": [{"tables": 1, "ms": 10.0}, {"tables": 4, "ms": 30.0}]}
    second = {"command": "again", "rows": [{"tables": 4, "ms": 20.0}, {"tables": 1, "ms": 10.0}]}
    lines = plot_scale.rerun_lines(first, second, ("tables",), "ms")
    assert "| 1 | 10.0 | 10.0 | 0% |" in lines and "| 4 | 30.0 | 20.0 | 40% |" in lines
    assert lines[-1].startswith("Run-to-run difference: median 40%, largest 40%")

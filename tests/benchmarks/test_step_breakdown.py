"""Smoke test of the step breakdown benchmark at its quick sizes (timings not checked: the
machine is shared)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))

import step_breakdown  # noqa: E402


@pytest.mark.slow
def test_quick_run_writes_shares_and_the_reference_ratio(tmp_path: Path) -> None:
    from torchrec_recsys.distributed.env import shutdown_distributed

    out = tmp_path / "step_breakdown.json"
    cases = "criteo_dlrm,criteo_ours,criteo_reference"
    try:
        assert step_breakdown.main(["--quick", "--cases", cases, "--out", str(out)]) == 0
    finally:
        shutdown_distributed()
    doc = json.loads(out.read_text())
    assert doc["run_meta"]["threads"] == 1 and doc["rounds"] == 2
    assert [r["case"] for r in doc["rows"]] == cases.split(",")
    for row in doc["rows"]:
        assert row["data_ms_per_batch"] > 0 and row["step_ms"] > 0 and row["real_step_ms"] > 0
        assert row["data_share_of_real_step"] == row["data_ms_per_batch"] / row["real_step_ms"]
        assert [len(w) for w in row["windows"].values()] == [2, 2, 2]
        assert all("load1" in w for w in row["windows"]["step"])
    ratio = doc["vs_reference"]
    assert ratio["min"] <= ratio["ratio_samples_per_second"] <= ratio["max"]
    assert len(ratio["per_round"]) == 2
    assert "vs TorchRec's reference" in out.with_suffix(".md").read_text()


def test_unknown_case_is_refused() -> None:
    with pytest.raises(SystemExit):
        step_breakdown.main(["--cases", "criteo_dlrm,nope"])

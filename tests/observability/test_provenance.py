"""The provenance block and where the benchmark scripts' ``--out`` puts a result."""

from __future__ import annotations

import json
from pathlib import Path

from torchrec_recsys.observability.provenance import (
    latest_result,
    start_run_meta,
    write_result,
    write_result_to,
)

REQUIRED = ("commit", "dirty", "versions", "argv", "threads", "hardware", "load_start")


def test_write_result_names_the_file_and_stores_one_run_meta(tmp_path: Path) -> None:
    meta = start_run_meta(threads=1, argv=["bench.py", "--x"])
    path = write_result(tmp_path, "topic", {"value": 3}, meta, markdown="# T\n\n| a |")
    doc = json.loads(path.read_text())
    assert path.name.startswith("topic_") and path.name.endswith(".json")
    assert all(key in doc["run_meta"] for key in (*REQUIRED, "load_end", "started", "finished"))
    assert doc["run_meta"]["argv"] == ["bench.py", "--x"] and doc["value"] == 3
    assert "Command: `bench.py --x`" in path.with_suffix(".md").read_text()


def test_write_result_to_a_folder_or_an_explicit_json(tmp_path: Path) -> None:
    meta = start_run_meta(threads=1)
    dated = write_result_to(tmp_path / "results", "serve_load", {"rows": []}, meta)
    assert dated.parent == tmp_path / "results" and dated.name.startswith("serve_load_")
    explicit = write_result_to(tmp_path / "x" / "mine.json", "serve_load", {"rows": [1]}, meta, "t")
    assert explicit == tmp_path / "x" / "mine.json"
    assert json.loads(explicit.read_text())["rows"] == [1]
    assert "run_meta" in json.loads(explicit.read_text())
    assert explicit.with_suffix(".md").is_file()


def test_latest_result_picks_the_newest_date_of_the_exact_topic(tmp_path: Path) -> None:
    for name in (
        "dlrm_scale_cpu2_20261101.json",
        "dlrm_scale_cpu2_20261123.json",
        "dlrm_scale_rerun_cpu2_20261130.json",
        "dlrm_scale_cpu2_20261123.md",
    ):
        (tmp_path / name).write_text("{}")
    assert latest_result(tmp_path, "dlrm_scale").name == "dlrm_scale_cpu2_20261123.json"
    assert latest_result(tmp_path, "dlrm_scale_rerun").name.startswith("dlrm_scale_rerun_")
    assert latest_result(tmp_path, "growth_sid") is None

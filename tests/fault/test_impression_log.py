"""The impression log under write errors: the writer survives, counts, reports and retries;
the file holds whole lines only; the reader reads every whole row and skips a torn last one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from _asgi import call
from _serving_fakes import fake_service
from conftest import REPO_ROOT

from torchrec_recsys.errors import DataError
from torchrec_recsys.serving.impressions import COLUMNS, ImpressionLog, read_impressions

ITEMS = [
    {"item_id": f"i{j}", "position": j + 1, "retrieval_score": 0.5, "ranking_score": 0.25}
    for j in range(5)
]

# Runs in a child process: a file-size limit there cannot hurt the test process.
FILE_SIZE_LIMITED = r"""
import json, resource, sys, time
from torchrec_recsys.serving.impressions import ImpressionLog

folder, limit, requests = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
items = json.loads(sys.argv[4])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
log = ImpressionLog(folder, max_pending_rows=100, retry_seconds=0.01, max_retry_seconds=0.05)

def wait(condition):
    deadline = time.monotonic() + 20
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()

for r in range(requests):
    log.log(f"r{r}", "u1", "v1", items, False, timestamp=1000.0 + r)
    time.sleep(0.001)
failing = wait(lambda: log.stats.write_errors > 0 and log.stats.pending_rows > 0)
during = {"alive": log._thread.is_alive(), "healthy": log.healthy, **vars(log.stats),
          "sizes": [p.stat().st_size for p in log.files()],
          "whole": all(p.read_bytes().endswith(b"\n") for p in log.files())}
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
for r in range(requests, requests + 10):
    log.log(f"r{r}", "u1", "v1", items, False, timestamp=1000.0 + r)
recovered = wait(lambda: log.healthy and log.stats.pending_rows == 0)
log.close()
print(json.dumps({"failing": failing, "recovered": recovered, "during": during,
                  "after": vars(log.stats), "files": [str(p) for p in log.files()]}))
"""


def test_a_file_size_limit_neither_kills_the_writer_nor_tears_a_row(tmp_path: Path) -> None:
    limit, requests = 8192, 200
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", FILE_SIZE_LIMITED, str(tmp_path / "logs"), str(limit),
         str(requests), json.dumps(ITEMS)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    during, after = report["during"], report["after"]
    assert report["failing"] and during["alive"] and not during["healthy"]
    assert "File too large" in during["last_error"]
    assert report["recovered"] and after["last_error"] is None and after["pending_rows"] == 0
    # the failure was logged once, not once per retry
    assert done.stderr.count("impression log write to") == 1, done.stderr[-2000:]
    # every row offered is written or counted as dropped (the retry buffer holds 100 rows)
    offered = 5 * (requests + 10)
    assert after["rows_written"] + after["rows_dropped"] == offered
    assert after["rows_dropped"] > 0 and after["write_errors"] >= during["write_errors"] > 0
    read = read_impressions(tmp_path / "logs")
    assert read.torn_lines == 0 and len(read.frame) == after["rows_written"]
    assert all(f.read_bytes().endswith(b"\n") for f in map(Path, report["files"]))
    # while failing, the file stayed within the limit and ended in a whole line
    assert during["whole"] and 0 < max(during["sizes"]) <= limit
    frame = read.frame
    assert set(frame["user_id"]) == {"u1"} and set(frame["item_id"]) <= {f"i{j}" for j in range(5)}
    per_request = frame.groupby("request_id")["position"].apply(list)
    assert all(p == ["1", "2", "3", "4", "5"] for p in per_request)  # whole responses
    assert f"r{requests + 9}" in per_request.index  # rows after the recovery are there


def _write_log(path: Path, rows: int, tail: bytes = b"") -> None:
    lines = [",".join(COLUMNS)]
    lines += [f"u1,i{r},0,1000.0,r{r},1,v1,0.5,0.25,0" for r in range(rows)]
    path.write_bytes(("\n".join(lines) + "\n").encode() + tail)


def test_the_reader_skips_and_counts_a_torn_last_line(tmp_path: Path) -> None:
    _write_log(tmp_path / "impressions-1-1.csv", 3, tail=b"u1,i9,0,100")
    _write_log(tmp_path / "impressions-1-1-1.csv", 2, tail=b'"u1,i8')
    _write_log(tmp_path / "impressions-2-1.csv", 4)
    read = read_impressions(tmp_path)
    assert read.torn_lines == 2 and len(read.frame) == 9 and len(read.files) == 3
    assert list(read.frame.columns) == list(COLUMNS)
    assert "i9" not in set(read.frame["item_id"])


def test_the_reader_names_a_file_that_is_not_a_log(tmp_path: Path) -> None:
    bad = tmp_path / "impressions-1-1.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=f"impression log '{bad}' has columns a, b; expected"):
        read_impressions(bad)
    _write_log(bad, 2)
    with open(bad, "a") as handle:
        handle.write('u1,"i1,0,1,r,1,v1,0.5,0.25,0\nu1,i2,0,1\n')  # a malformed whole row
    with pytest.raises(DataError, match="has a malformed row"):
        read_impressions(bad)


def _wait(condition: Any, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds  # bounded
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(condition())


def test_a_vanished_folder_is_reported_and_recreated(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    log = ImpressionLog(folder, retry_seconds=0.01, max_retry_seconds=0.02)
    try:
        log.log("r0", "u1", "v1", ITEMS, False)
        assert _wait(lambda: log.stats.rows_written == 5)
        shutil.rmtree(folder)
        folder.write_text("a file where the folder was")
        log.log("r1", "u1", "v1", ITEMS, False)
        assert _wait(lambda: log.stats.write_errors > 0)
        assert not log.healthy and log._thread.is_alive()
        folder.unlink()
        log.log("r2", "u1", "v1", ITEMS, False)
        assert _wait(lambda: log.healthy and log.stats.rows_written == 15)
    finally:
        log.close()
    read = read_impressions(folder)
    assert list(read.frame["request_id"].unique()) == ["r1", "r2"] and read.torn_lines == 0


def test_healthz_and_metrics_report_a_failing_log(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    app, service = fake_service(tmp_path, monkeypatch)
    try:
        assert service.impressions is not None
        service.impressions.retry_seconds = service.impressions.max_retry_seconds = 0.01
        folder = service.impressions.folder
        saved = tmp_path / "saved"
        shutil.move(folder, saved)
        folder.write_text("not a folder")
        service.impressions.log("r1", "u1", "v1", ITEMS, False)
        assert _wait(lambda: service.impressions.stats.write_errors > 0)  # type: ignore[union-attr]
        health = call(app, "GET", "/healthz").json()
        assert health["status"] == "degraded" and health["live"] == "v1"
        assert health["impression_log"]["last_error"] and health["impression_log"]["write_errors"]
        text = call(app, "GET", "/metrics").text
        assert "recsys_impression_log_failing 1.0" in text
        assert "recsys_impression_write_errors_total" in text
        folder.unlink()
        assert _wait(lambda: service.impressions.healthy)  # type: ignore[union-attr]
        assert call(app, "GET", "/healthz").json()["status"] == "ok"
        assert (
            'recsys_impression_rows_total{outcome="written"} 5.0'
            in call(app, "GET", "/metrics").text
        )
    finally:
        service.stop()

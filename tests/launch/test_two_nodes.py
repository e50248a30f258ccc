"""Multi-node on one box: two torchrun agents (c10d rendezvous over loopback), 1 process each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, tiny_overrides

from torchrec_recsys.data.synthetic import SyntheticPaths

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))


@pytest.mark.slow
def test_two_node_job_trains_and_the_planner_sees_two_hosts(
    synthetic_paths: SyntheticPaths, tmp_path: Path
) -> None:
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run_dir = tmp_path / "run"
    command = [
        TORCHRUN,
        "--nnodes=2",
        "--nproc_per_node=1",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint=127.0.0.1:{port}",
        "--rdzv_id=two-nodes",
        "-m",
        "torchrec_recsys",
        "train",
        *tiny_overrides(synthetic_paths, tmp_path),
        "--train.epochs=1",
        f"--run-dir={run_dir}",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    agents = [
        subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [agent.communicate(timeout=600)[0] for agent in agents]
    assert [agent.returncode for agent in agents] == [0, 0], outputs
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["planner_hosts"] == 2

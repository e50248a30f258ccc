"""torchx: the components build scheduler-agnostic AppDefs, and real 2-process launches work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import COMPONENT, REPO_ROOT, TORCHX, tiny_config_file


def _torchx(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [TORCHX, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_component_resource_arithmetic() -> None:
    sys.path.insert(0, str(REPO_ROOT / "launch"))
    from components import train

    app = train(
        "--train.epochs=1",
        config="configs/x.toml",
        j="3x4",
        gpus_per_proc=1,
        cpus_per_proc=2,
        mem_mb_per_proc=1000,
        sharding="row_wise",
        max_retries=2,
    )
    (role,) = app.roles
    assert role.num_replicas == 3
    assert (role.resource.gpu, role.resource.cpu, role.resource.memMB) == (4, 8, 4000)
    assert role.max_retries == 2
    command = " ".join(role.args)  # torchx wraps torchrun in `bash -c "..."`
    assert "--nnodes 3 --nproc_per_node 4" in command
    assert command.endswith(
        "-m torchrec_recsys train --config configs/x.toml "
        "--sharding.default=row_wise --train.epochs=1"
    )


@pytest.mark.parametrize(
    ("scheduler", "expect"),
    [
        ("slurm", ["--nnodes 2 --nproc_per_node 4", "--gpus-per-task=4", "--cpus-per-task=4"]),
        ("kubernetes", ["num_replicas': 2", "nvidia.com/gpu: '4'", "-m torchrec_recsys train"]),
    ],
)
def test_dryrun_on_cluster_schedulers(scheduler: str, expect: list[str]) -> None:
    cfg = ["-cfg", "queue=default"] if scheduler == "kubernetes" else []
    result = _torchx(
        [
            "run",
            "--dryrun",
            "--workspace",
            "",
            "-s",
            scheduler,
            *cfg,
            COMPONENT,
            "-j",
            "2x4",
            "--gpus_per_proc",
            "1",
        ],
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout + result.stderr
    for fragment in expect:
        assert fragment in text, f"{fragment!r} not in {scheduler} dryrun output"


@pytest.mark.slow
def test_component_launch_two_processes(synthetic_paths, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tiny_config_file(synthetic_paths, tmp_path)
    result = _torchx(
        [
            "run",
            "-s",
            "local_cwd",
            COMPONENT,
            "--config",
            str(config),
            "-j",
            "1x2",
            "--sharding",
            "row_wise",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (summary_path,) = (tmp_path / "runs" / "tiny_synthetic").glob("*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["world_size"] == 2
    assert "row_wise" in summary["plan"]
    assert summary["final_state"]["epoch"] == 2


@pytest.mark.slow
def test_default_command_trains_movielens(tmp_path: Path) -> None:
    """The README's exact command, from a folder holding the repo's .torchxconfig."""
    shutil.copy(REPO_ROOT / ".torchxconfig", tmp_path / ".torchxconfig")
    result = _torchx(["run", "dist.ddp", "-j", "1x2", "train"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (summary_path,) = (tmp_path / "runs" / "ml100k_dlrm").glob("*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["world_size"] == 2 and summary["dataset"]["test"] == 943
    assert summary["test"]["auc"] > summary["baselines_test"]["popularity"]

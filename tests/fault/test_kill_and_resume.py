"""A training process killed mid-epoch under torchx: the job restarts, resumes and matches.

Two real ``torchx run -s local_cwd launch/components.py:train -j 1x2`` launches of the tiny
synthetic config (10 global steps of 128 examples per epoch, 2 epochs, a checkpoint every 4
steps): an uninterrupted reference, and a job with ``--max_retries 1`` whose rank 1 calls
``os._exit(1)`` right after global step 14 on its first attempt. torchrun restarts both
processes, they resume from ``step_00000012`` (epoch 1, 256 examples in) in the same run
directory, and the run must end where the reference ends: same per-epoch batch and example
counts (nothing trained twice, nothing skipped) and the same losses and test metrics.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import COMPONENT, REPO_ROOT, TORCHX, tiny_config_file

from torchrec_recsys.app.parsers import RESUME_IF_ANY_ENV, RUN_ID_ENV
from torchrec_recsys.app.train import FAULT_MARKER, FAULT_RANK_ENV, FAULT_STEP_ENV
from torchrec_recsys.data.synthetic import SyntheticPaths

TOLERANCE = 1e-6
"""Same seed, same world size, same batches: the runs agree to float rounding (seen: exactly)."""


def _launch(
    cwd: Path, config: Path, extra: list[str], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    cwd.mkdir()
    command = [TORCHX, "run", "-s", "local_cwd", COMPONENT, "--config", str(config), "-j", "1x2"]
    command += [*extra, "--", "--train.checkpoint_every_steps=4"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TORCHREC_RECSYS_")}
    return subprocess.run(
        command,
        cwd=cwd,
        env={**clean, "PYTHONUNBUFFERED": "1", **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def _summary(cwd: Path) -> dict:
    (path,) = (cwd / "runs" / "tiny_synthetic").glob("*/summary.json")
    return json.loads(path.read_text())


@pytest.mark.slow
def test_killed_rank_restarts_and_matches_an_uninterrupted_run(
    synthetic_paths: SyntheticPaths, tmp_path: Path
) -> None:
    config = tiny_config_file(synthetic_paths, tmp_path)
    reference = _launch(tmp_path / "reference", config, [], {})
    assert reference.returncode == 0, reference.stderr[-3000:]

    faulted = _launch(
        tmp_path / "faulted",
        config,
        ["--max_retries", "1"],
        {FAULT_STEP_ENV: "14", FAULT_RANK_ENV: "1"},
    )
    log = faulted.stdout + faulted.stderr
    assert faulted.returncode == 0, log[-4000:]
    assert "fault injection: rank 1 fails after global step 14" in log
    assert "failed (exitcode: 1) local_rank: 1" in log  # torchrun saw the death ...
    assert "resumed from" in log and "step_00000012 at step 12 (epoch 1, 256 examples in" in log

    # ... and the retry continued the same run directory, named after the torchx app id
    (run_dir,) = (tmp_path / "faulted" / "runs" / "tiny_synthetic").iterdir()
    assert run_dir.name.startswith("torchrec_recsys_train-")
    assert (run_dir / FAULT_MARKER).is_file()

    expected, got = _summary(tmp_path / "reference"), _summary(tmp_path / "faulted")
    assert got["run_dir"].endswith(run_dir.name)
    # every batch trained exactly once: the counts come back with the checkpoint's model
    assert got["final_state"]["epoch_batches"] == expected["final_state"]["epoch_batches"]
    assert got["final_state"]["epoch_batches"] == [10, 10]
    assert got["final_state"]["epoch_samples"] == [1280, 1280]
    assert got["final_state"]["global_step"] == expected["final_state"]["global_step"] == 20
    for mine, theirs in zip(got["epochs"], expected["epochs"], strict=True):
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], abs=TOLERANCE)
        assert mine["val"] == pytest.approx(theirs["val"], abs=TOLERANCE)
    assert got["test"] == pytest.approx(expected["test"], abs=TOLERANCE)


def test_component_turns_retries_into_torchrun_restarts_and_resume() -> None:
    sys.path.insert(0, str(REPO_ROOT / "launch"))
    from components import train

    (role,) = train(max_retries=3).roles
    command = role.args[-1]
    assert command.startswith("torchrun --max_restarts 3 ")
    assert role.max_retries == 3  # schedulers with their own retries get them too
    assert role.env[RESUME_IF_ANY_ENV] == "1"
    assert role.env[RUN_ID_ENV] == "${app_id}"  # filled in by torchx, same for every attempt
    assert role.env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "1"

    (plain,) = train().roles
    assert "--max_restarts" not in plain.args[-1]
    assert RESUME_IF_ANY_ENV not in plain.env and RUN_ID_ENV not in plain.env

    (explicit,) = train(max_retries=1, resume=True).roles  # --resume: the newest run, strictly
    assert RESUME_IF_ANY_ENV not in explicit.env and "--resume" in explicit.args[-1]

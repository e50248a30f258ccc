"""The one thread policy: explicit settings win, the default divides the cores, bad values fail."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from torchrec_recsys.cli import main as cli_main
from torchrec_recsys.cli import pop_threads_option
from torchrec_recsys.distributed.threads import THREADS_ENV, resolve_threads
from torchrec_recsys.errors import ConfigError


def test_default_divides_cores_by_local_processes() -> None:
    assert resolve_threads(env={}, cores=8, local_processes=1, load=0.0)[0] == 8
    assert resolve_threads(env={}, cores=8, local_processes=3, load=0.0)[0] == 2
    assert resolve_threads(env={}, cores=2, local_processes=4, load=0.0)[0] == 1
    assert resolve_threads(env={"LOCAL_WORLD_SIZE": "2"}, cores=8, load=0.0)[0] == 4


def test_default_leaves_busy_cores_alone() -> None:
    """Threads on cores other work keeps busy spin against it: the default caps at idle ones."""
    assert resolve_threads(env={}, cores=2, local_processes=1, load=1.4)[0] == 1
    assert resolve_threads(env={}, cores=2, local_processes=1, load=4.0)[0] == 1
    assert resolve_threads(env={}, cores=8, local_processes=1, load=2.2)[0] == 6


def test_precedence_option_then_env_then_omp() -> None:
    env = {THREADS_ENV: "3", "OMP_NUM_THREADS": "1"}
    assert resolve_threads(2, env=env, cores=4) == (2, "--threads")
    assert resolve_threads(None, env=env, cores=4) == (3, f"${THREADS_ENV}")
    assert resolve_threads(None, env={"OMP_NUM_THREADS": "1"}, cores=4) == (1, "$OMP_NUM_THREADS")


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_non_positive_or_non_integer_fails(value: str) -> None:
    with pytest.raises(ConfigError, match="positive integer"):
        resolve_threads(value, env={}, cores=4)


def test_more_threads_than_cores_fails_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"\$OMP_NUM_THREADS=5 threads is more than the 4"):
        resolve_threads(env={"OMP_NUM_THREADS": "5"}, cores=4)


def test_threads_option_may_appear_anywhere() -> None:
    assert pop_threads_option(["--threads", "1", "train", "-x"]) == ("1", ["train", "-x"])
    assert pop_threads_option(["train", "--threads=2"]) == ("2", ["train"])
    assert pop_threads_option(["train"]) == (None, ["train"])


def test_cli_rejects_threads_above_cores(capsys: pytest.CaptureFixture[str]) -> None:
    too_many = str(len(os.sched_getaffinity(0)) + 1)
    assert cli_main(["--threads", too_many, "synth", "--help"]) == 2
    assert "more than the" in capsys.readouterr().err


def test_cli_sets_torch_and_faiss_threads() -> None:
    """In a fresh process (thread pools are per process): the CLI applies the setting."""
    code = (
        "import sys, torch, faiss\n"
        "from torchrec_recsys.cli import SUBCOMMANDS, main\n"
        "SUBCOMMANDS['probe'] = ('builtins:print', '')\n"
        "main(['--threads', '1', 'probe'])\n"
        "print(torch.get_num_threads(), faiss.omp_get_max_threads())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", THREADS_ENV)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == "1 1"


def _wait_policy_seen_by_torch(extra_env: dict[str, str]) -> list[str]:
    """``[policy when torch was first imported, policy after]`` in a fresh CLI process."""
    code = (
        "import os, sys\n"
        "seen = []\n"
        "class Probe:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' and not seen:\n"
        "            seen.append(os.environ.get('OMP_WAIT_POLICY', 'unset'))\n"
        "sys.meta_path.insert(0, Probe())\n"
        "from torchrec_recsys.cli import SUBCOMMANDS, main\n"
        "SUBCOMMANDS['probe'] = ('builtins:print', '')\n"
        "main(['--threads', '1', 'probe'])\n"
        "print(seen[0], os.environ['OMP_WAIT_POLICY'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", THREADS_ENV)}
    out = subprocess.run(
        [sys.executable, "-c", code], env={**env, **extra_env}, capture_output=True,
        text=True, check=True,
    ).stdout  # fmt: skip
    return out.strip().splitlines()[-1].split()


def test_openmp_waits_passively_from_before_torch_is_loaded() -> None:
    assert _wait_policy_seen_by_torch({}) == ["PASSIVE", "PASSIVE"]


def test_a_wait_policy_from_the_environment_is_kept() -> None:
    assert _wait_policy_seen_by_torch({"OMP_WAIT_POLICY": "ACTIVE"}) == ["ACTIVE", "ACTIVE"]

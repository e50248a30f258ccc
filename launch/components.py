"""torchx components for torchrec_recsys: resource arithmetic + the entry point, nothing else.

    torchx run ./launch/components.py:train --config configs/ml100k_dlrm.toml -j 1x2
    torchx run -s slurm ./launch/components.py:train -j 2x8 --gpus_per_proc 1
    torchx run -s kubernetes ./launch/components.py:train -j 4x8 --gpus_per_proc 1 --image <img>

Every component wraps torchx's ``dist.ddp`` (torchrun), so the same AppDef runs on
``local_cwd``, Slurm and Kubernetes. Extra positional arguments are passed to
``python -m torchrec_recsys train`` as ``--section.key=value`` overrides.
"""

from typing import Dict, Optional  # noqa: UP035  torchx's component linter reads these spellings

import torchx
import torchx.specs as specs
from torchx.components import dist

MODULE = "torchrec_recsys"


def _per_node(j: str) -> int:
    """Processes per node from ``-j {nnodes}x{nproc_per_node}`` (or ``{nproc}``)."""
    return int(j.split("x")[-1])


def train(
    *overrides: str,
    config: str = "configs/ml100k_dlrm.toml",
    j: str = "1x2",
    model: str = "dlrm",
    sharding: str = "",
    profile: bool = False,
    resume: bool = False,
    max_retries: int = 0,
    cpus_per_proc: int = 1,
    gpus_per_proc: int = 0,
    mem_mb_per_proc: int = 4096,
    image: str = torchx.IMAGE,
    h: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    name: str = "torchrec_recsys_train",
) -> specs.AppDef:
    """Train a torchrec_recsys experiment with sharded embeddings on ``j`` = nodes x procs.

    Args:
        overrides: extra ``--section.key=value`` config overrides
        config: TOML experiment file, relative to the working directory
        j: ``{nnodes}x{nproc_per_node}``, e.g. 1x2 (one host, two processes)
        model: ``dlrm`` (ranker) or ``two_tower`` (retriever)
        sharding: default sharding type for every table (table_wise, column_wise,
            table_column_wise, row_wise, data_parallel); empty = the config's
        profile: record torch.profiler traces into the run directory
        resume: continue the newest run of this experiment from its newest checkpoint
        max_retries: times the scheduler restarts the job after a failure
        cpus_per_proc: CPU cores requested per training process
        gpus_per_proc: GPUs per training process (0 = CPU training with gloo)
        mem_mb_per_proc: host memory (MB) per training process
        image: container image (ignored by local_cwd)
        h: a registered named resource; overrides the cpu/gpu/memory arithmetic
        env: extra environment variables
        name: job name
    """
    nproc = _per_node(j)
    args = ["train", "--config", config, "--model", model]
    if sharding:
        args.append(f"--sharding.default={sharding}")
    if profile:
        args.append("--profile")
    if resume:
        args.append("--resume")
    args.extend(overrides)
    return dist.ddp(
        *args,
        m=MODULE,
        j=j,
        cpu=cpus_per_proc * nproc,
        gpu=gpus_per_proc * nproc,
        memMB=mem_mb_per_proc * nproc,
        image=image,
        h=h,
        env=env,
        max_retries=max_retries,
        name=name,
    )

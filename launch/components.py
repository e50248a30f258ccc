"""torchx components for torchrec_recsys: resource arithmetic + the entry point, nothing else.

    torchx run ./launch/components.py:train --config configs/ml100k_dlrm.toml -j 1x2
    torchx run -s slurm ./launch/components.py:train -j 2x8 --gpus_per_proc 1
    torchx run -s kubernetes ./launch/components.py:train -j 4x8 --gpus_per_proc 1 --image <img>

Every component wraps torchx's ``dist.ddp`` (torchrun), so the same AppDef runs on
``local_cwd``, Slurm and Kubernetes. Extra positional arguments (after ``--``) are passed to
``python -m torchrec_recsys train`` as ``--section.key=value`` overrides.

Retries (``--max_retries N``): torchx's ``local_cwd`` scheduler ignores ``Role.max_retries``
(torchx 0.7.0 reports ``num_restarts: 0`` and fails the job), so the component also gives
torchrun ``--max_restarts N``: when a process dies torchrun stops the others and restarts all
of them in place. Cluster schedulers that honour ``Role.max_retries`` restart the whole job on
top of that. Either way every attempt gets ``--run-id <app id>`` (the same for every attempt
of one job) and ``--resume-if-any`` (as environment variables, so the command line stays what
the user asked for), so it continues the same run directory from its newest complete
checkpoint, or starts it when there is none yet.
"""

from typing import Dict, Optional  # noqa: UP035  torchx's component linter reads these spellings

import torchx
import torchx.specs as specs
from torchx.components import dist
from torchx.specs import macros

MODULE = "torchrec_recsys"
RUN_ID_ENV = "TORCHREC_RECSYS_RUN_ID"
"""Default of ``train --run-id`` (kept in sync with torchrec_recsys/app/train.py)."""
THREADS_ENV = "TORCHREC_RECSYS_THREADS"
"""Threads per process (kept in sync with torchrec_recsys/distributed/threads.py)."""
RESUME_IF_ANY_ENV = "TORCHREC_RECSYS_RESUME_IF_ANY"
"""``1`` = default ``train --resume-if-any`` (kept in sync with torchrec_recsys/app/train.py)."""


def _per_node(j: str) -> int:
    """Processes per node from ``-j {nnodes}x{nproc_per_node}`` (or ``{nproc}``; nnodes may be
    a ``min:max`` range), after checking every number in ``j`` is a positive integer."""
    parts = j.split("x")
    numbers = [n for part in parts for n in part.split(":")]
    if len(parts) > 2 or not all(n.isdigit() and int(n) > 0 for n in numbers):
        raise ValueError(
            f"-j {j!r} is invalid; expected {{nnodes}}x{{nproc_per_node}} with positive "
            f"integers, e.g. 1x2 (or 2:4x8 for an elastic node range)"
        )
    return int(parts[-1])


def train(
    *overrides: str,
    config: str = "configs/ml100k_dlrm.toml",
    j: str = "1x2",
    model: str = "",
    sharding: str = "",
    profile: bool = False,
    resume: bool = False,
    max_retries: int = 0,
    cpus_per_proc: int = 1,
    gpus_per_proc: int = 0,
    threads_per_proc: int = 0,
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
        model: ``dlrm``, ``two_tower``, ``sasrec`` or ``generative``; empty = the config's
            ``model.name`` (a flag the user did not give never overrides the config)
        sharding: default sharding type for every table (table_wise, column_wise,
            table_column_wise, row_wise, data_parallel); empty = the config's
        profile: record torch.profiler traces into the run directory
        resume: continue the newest run of this experiment from its newest checkpoint
        max_retries: restarts after a process fails (torchrun --max_restarts, and the
            scheduler's own retries where it has them); each attempt resumes the same run
            directory from its newest checkpoint
        cpus_per_proc: CPU cores requested per training process
        gpus_per_proc: GPUs per training process (0 = CPU training with gloo)
        threads_per_proc: CPU threads per training process (0 = torchrun's 1 per process,
            see torchrec_recsys/distributed/threads.py)
        mem_mb_per_proc: host memory (MB) per training process
        image: container image (ignored by local_cwd)
        h: a registered named resource; overrides the cpu/gpu/memory arithmetic
        env: extra environment variables
        name: job name
    """
    nproc = _per_node(j)
    env = dict(env or {})
    if threads_per_proc > 0:
        env.setdefault(THREADS_ENV, str(threads_per_proc))
    if max_retries > 0:
        # torchrun shares its rendezvous TCP store with the workers by default, and restarted
        # workers then read the dead attempt's gloo addresses ("Gloo connectFullMesh failed ...
        # Connection refused"; pytorch/pytorch#135712): give every attempt its own store.
        env.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    args = ["train", "--config", config]
    if model:
        args += ["--model", model]
    if sharding:
        args.append(f"--sharding.default={sharding}")
    if profile:
        args.append("--profile")
    if resume:
        args.append("--resume")
    elif max_retries > 0:
        # = --resume-if-any --run-id <app id>; torchx fills in ${app_id} for every attempt
        env.setdefault(RESUME_IF_ANY_ENV, "1")
        env.setdefault(RUN_ID_ENV, macros.app_id)
    args.extend(overrides)
    app = dist.ddp(
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
    if max_retries > 0:
        _add_torchrun_restarts(app, max_retries)
    return app


def _add_torchrun_restarts(app: specs.AppDef, max_restarts: int) -> None:
    """Give the ``torchrun`` inside ``bash -c "torchrun ..."`` a ``--max_restarts`` flag."""
    for role in app.roles:
        command = role.args[-1]
        if not command.startswith("torchrun "):
            raise ValueError(f"expected a torchrun command from dist.ddp, got {command[:80]!r}")
        role.args[-1] = command.replace("torchrun ", f"torchrun --max_restarts {max_restarts} ", 1)

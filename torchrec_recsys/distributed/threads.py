"""How many CPU threads each process computes with: one policy for every entry point.

torch's intra-op pool (and FAISS's OpenMP pool) default to every core of the machine. Under
torchrun each process gets ``OMP_NUM_THREADS=1``; a plain ``python -m torchrec_recsys train``
did not, and with other work on the cores its OpenMP threads spun against each other: a DLRM
step took 700 ms instead of 5.3 ms. :func:`configure_threads` gives every process

    threads = explicit setting, else  max(1, min(cores // local_world_size, idle cores))

where, in order of precedence, the explicit setting is the ``--threads N`` option of
``python -m torchrec_recsys``, ``$TORCHREC_RECSYS_THREADS``, or ``$OMP_NUM_THREADS`` (what
torchrun sets); ``cores`` is the CPUs this process may run on (``os.sched_getaffinity``) and
``local_world_size`` the processes on this host (``$LOCAL_WORLD_SIZE``, 1 without torchrun);
``idle cores`` is ``cores`` minus the 1-minute load average, rounded (at least 1). The cap
matters: with a load of ~4 on 2 cores, ML-100K DLRM training at 2 threads ran at 1,369
samples/s against 16,682 at 1 thread (docs/scale_and_gpu.md, "Threads"). A setting above
``cores`` is an error: it can only oversubscribe.

The load average lags: a CPU-bound process started just before a run is not in it yet. So
the OpenMP pools also wait passively (``OMP_WAIT_POLICY=PASSIVE``, unless the environment
sets it): a thread that finishes its share sleeps instead of spinning, and a busy core is not
fought over between parallel regions. It is set before torch is first imported, when the
OpenMP runtime reads it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from torchrec_recsys.errors import ConfigError

WAIT_POLICY = "PASSIVE"
"""``OMP_WAIT_POLICY`` for processes that do not set their own (see the module docstring)."""

THREADS_ENV = "TORCHREC_RECSYS_THREADS"
"""Threads per process for every subcommand (``--threads`` wins over it)."""


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # (macOS, Windows)
        return os.cpu_count() or 1


def local_world_size(env: Mapping[str, str] | None = None) -> int:
    """Processes of this job on this host: ``$LOCAL_WORLD_SIZE`` (torchrun), else 1."""
    env = os.environ if env is None else env
    raw = env.get("LOCAL_WORLD_SIZE", "1")
    try:
        return max(int(raw), 1)
    except ValueError:
        raise ConfigError(f"LOCAL_WORLD_SIZE={raw!r} must be a positive integer") from None


def idle_cores(cores: int, load: float | None = None) -> int:
    """``cores`` minus the 1-minute load average (``load``), rounded; at least 1."""
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:  # pragma: no cover - no load average on this platform
            load = 0.0
    return max(1, min(cores, round(cores - load)))


def resolve_threads(
    override: int | str | None = None,
    env: Mapping[str, str] | None = None,
    cores: int | None = None,
    local_processes: int | None = None,
    load: float | None = None,
) -> tuple[int, str]:
    """``(threads per process, where the number came from)`` by the module's policy.

    Args:
        override: the ``--threads`` value, if given.
        env: environment to read (default ``os.environ``).
        cores: CPUs available (default :func:`available_cores`).
        local_processes: processes on this host (default :func:`local_world_size`).
        load: the machine's 1-minute load average (default ``os.getloadavg()[0]``).

    Raises:
        ConfigError: a setting that is not a positive integer or exceeds ``cores``.
    """
    env = os.environ if env is None else env
    cores = available_cores() if cores is None else cores
    for source, raw in (
        ("--threads", override),
        (f"${THREADS_ENV}", env.get(THREADS_ENV) or None),
        ("$OMP_NUM_THREADS", env.get("OMP_NUM_THREADS") or None),
    ):
        if raw is None:
            continue
        try:
            threads = int(raw)
        except (TypeError, ValueError):
            threads = 0
        if threads <= 0:
            raise ConfigError(f"{source}={raw!r} must be a positive integer number of threads")
        if threads > cores:
            raise ConfigError(
                f"{source}={threads} threads is more than the {cores} CPU core(s) this process "
                f"may use; set at most {cores}"
            )
        return threads, source
    processes = local_world_size(env) if local_processes is None else local_processes
    idle = idle_cores(cores, load)
    threads = max(1, min(cores // processes, idle))
    return threads, f"{cores} core(s) / {processes} local process(es), {idle} idle"


def configure_threads(override: int | str | None = None) -> int:
    """Apply :func:`resolve_threads` to torch, FAISS and child processes; the thread count.

    Sets ``torch.set_num_threads``, ``faiss.omp_set_num_threads`` (when FAISS is installed)
    and ``$OMP_NUM_THREADS`` / ``$MKL_NUM_THREADS`` (inherited by data-loader workers and
    other subprocesses), and ``$OMP_WAIT_POLICY`` to :data:`WAIT_POLICY` when it is unset
    (effective when torch is not imported yet). Idempotent; call it once at the start of
    every entry point.

    Raises:
        ConfigError: see :func:`resolve_threads`.
    """
    threads, _ = resolve_threads(override)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
    import torch  # (deferred: ``--help`` need not pay for it)

    torch.set_num_threads(threads)
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss is optional outside retrieval
        return threads
    faiss.omp_set_num_threads(threads)
    return threads

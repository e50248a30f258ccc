"""Shared helpers for the embedding benchmarks in ``benchmarks/`` (never imported by the package).

Memory is read from ``/proc/self/status`` (no psutil): ``VmRSS`` is the resident set now and
``VmHWM`` its high-water mark. Writing ``5`` to ``/proc/self/clear_refs`` resets ``VmHWM`` to the
current RSS, so a peak can be measured per benchmark case inside one long-lived process.
On CUDA the allocator's own peak statistics are used instead.

The two bandwidth probes give the limits that an embedding step is compared against:

* ``seq_copy_probe``: ``dst.copy_(src)`` of a large fp32 tensor; GB/s counts bytes read plus
  bytes written (the STREAM "copy" convention).
* ``limit_probe``: the row traffic of an SGD embedding step in plain PyTorch at the run's own
  thread count: ``index_select`` of the lookup's rows (forward) then ``scatter_add_`` of one
  gradient row per lookup back into the same rows (backward + update). GB/s counts the bytes
  of the analytic step model (rows gathered + gradient rows read + each unique row read and
  written), so a step's share of it is the probe's time over the step's time.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from torchrec_recsys.observability.timing import time_calls

GB = 1e9
MiB = 2**20
CLEAR_REFS = "/proc/self/clear_refs"
MIN_CPU_WINDOW_S = 0.3


def read_proc_status() -> dict[str, int]:
    """Return ``VmRSS`` and ``VmHWM`` of this process in bytes (empty where /proc is missing)."""
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0]) * 1024  # kB -> bytes
    except OSError:
        pass
    return out


def reset_peak_rss() -> bool:
    """Reset this process's ``VmHWM`` to its current RSS; return False where that is refused."""
    try:
        with open(CLEAR_REFS, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@dataclass
class PeakMemory:
    """Peak memory growth over a ``with`` block: CPU RSS high-water mark, or the CUDA allocator.

    Attributes:
        device: ``"cpu"`` or ``"cuda"``.
        start_bytes: RSS (or CUDA allocated bytes) when the block started.
        peak_delta_bytes: peak minus ``start_bytes``; set when the block exits.
        method: how the peak was read (``vmhwm``, ``vmhwm-no-reset``, ``cuda_max_allocated``).
    """

    device: str = "cpu"
    start_bytes: int = 0
    peak_delta_bytes: int = 0
    method: str = ""
    _reset_ok: bool = field(default=False, repr=False)

    def __enter__(self) -> PeakMemory:
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start_bytes = torch.cuda.memory_allocated()
            self.method = "cuda_max_allocated"
        else:
            self.start_bytes = read_proc_status().get("VmRSS", 0)
            self._reset_ok = reset_peak_rss()
            self.method = "vmhwm" if self._reset_ok else "vmhwm-no-reset"
        return self

    def sample(self) -> int:
        """Return the peak growth so far in bytes."""
        if self.device == "cuda":
            torch.cuda.synchronize()
            return int(torch.cuda.max_memory_allocated() - self.start_bytes)
        return max(0, read_proc_status().get("VmHWM", 0) - self.start_bytes)

    def __exit__(self, *exc: object) -> None:
        self.peak_delta_bytes = self.sample()


def machine_busy_seconds() -> float:
    """CPU seconds all processes on the machine have been busy (``/proc/stat``, all cores)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
    busy = sum(fields[:3]) + sum(fields[5:8])
    return busy / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds (user + system, all threads) this process has used."""
    t = os.times()
    return t.user + t.system


@dataclass
class CpuWindow:
    """Wall time, machine-wide busy CPU time and this process's CPU time over a block.

    Tick resolution is 10 ms, so short windows are approximate.
    """

    wall_s: float = 0.0
    machine_busy_s: float = 0.0
    own_cpu_s: float = 0.0
    _start: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __enter__(self) -> CpuWindow:
        self._start = (time.perf_counter(), machine_busy_seconds(), own_cpu_seconds())
        return self

    def __exit__(self, *exc: object) -> None:
        w, m, o = self._start
        self.wall_s = time.perf_counter() - w
        self.machine_busy_s = machine_busy_seconds() - m
        self.own_cpu_s = own_cpu_seconds() - o


def other_cpu_share(
    wall_s: float, machine_busy_s: float, own_cpu_s: float, cpus: int | None = None
) -> float:
    """Share of the machine's CPU capacity used by other processes during a window (0..1).

    NaN for windows under ``MIN_CPU_WINDOW_S``, where 10 ms ticks make the figure meaningless.
    """
    cpus = cpus or os.cpu_count() or 1
    if not wall_s >= MIN_CPU_WINDOW_S or machine_busy_s != machine_busy_s:  # nan check
        return float("nan")
    return min(1.0, max(0.0, (machine_busy_s - own_cpu_s) / (wall_s * cpus)))


def load_average() -> list[float]:
    """``os.getloadavg()`` as a list (1, 5, 15 min); the machine is shared, so record it."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_info(threads: int) -> dict[str, object]:
    """A short description of the machine and library versions for the JSON header."""
    info: dict[str, object] = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": threads,
        "cuda_available": torch.cuda.is_available(),
    }
    try:
        import fbgemm_gpu  # noqa: F401
        import torchrec

        info["torchrec"] = getattr(torchrec, "__version__", "unknown")
    except ImportError:  # pragma: no cover - the venv has them
        pass
    try:
        from importlib.metadata import version

        info["fbgemm_gpu"] = version("fbgemm-gpu-cpu")
    except Exception:  # noqa: BLE001 - metadata lookups are best effort
        pass
    return info


def seq_copy_probe(
    nbytes: int = 256 * MiB, repeats: int = 5, thread_counts: tuple[int, ...] = ()
) -> dict[str, Any]:
    """Sequential copy bandwidth of a large fp32 tensor, best of the current and extra threads.

    Returns:
        ``{"bytes", "median_s", "gbps", "threads", "gbps_by_threads"}`` where ``gbps`` counts
        read + write bytes at the best thread count.
    """
    n = nbytes // 4
    src = torch.rand(n)  # [n] fp32, touched so pages are resident
    dst = torch.empty_like(src)
    dst.copy_(src)
    moved = 2 * n * 4  # read src + write dst
    return _best_over_threads(lambda: dst.copy_(src), moved, repeats, thread_counts)


def _best_over_threads(
    fn: Callable[[], object], moved: int, repeats: int, thread_counts: tuple[int, ...]
) -> dict[str, Any]:
    """Median time of ``fn`` at the current thread count and each of ``thread_counts``."""
    by_threads: dict[int, float] = {}
    medians: dict[int, float] = {}
    current = torch.get_num_threads()
    for n in dict.fromkeys((current, *thread_counts)):
        torch.set_num_threads(n)
        try:
            medians[n] = statistics.median(time_calls(fn, warmup=1, repeats=repeats))
        finally:
            torch.set_num_threads(current)
        by_threads[n] = moved / medians[n] / GB
    best = max(by_threads, key=lambda n: by_threads[n])
    return {
        "bytes": float(moved),
        "median_s": medians[best],
        "gbps": by_threads[best],
        "threads": best,
        "gbps_by_threads": {str(k): v for k, v in by_threads.items()},
    }


def limit_probe_step(
    rows: int, dim: int, ids: torch.Tensor, chunk: int = 4096
) -> tuple[Callable[[], None], int]:
    """The step of :func:`limit_probe` and the bytes it counts, for timing it elsewhere.

    Returns:
        (step closure, analytic bytes of one call)
    """
    table = torch.empty(rows, dim)  # [R, D]
    table.uniform_(-0.01, 0.01)  # touch every page
    parts = ids.split(chunk)
    out = torch.empty(min(chunk, ids.numel()), dim)  # [C, D], reused
    grad = torch.full((min(chunk, ids.numel()), dim), 1e-6)  # [C, D], reused
    index = [p[:, None].expand(p.numel(), dim) for p in parts]  # [c, D] each, stride 0 on D
    unique = int(torch.unique(ids).numel())
    row = dim * 4

    def step() -> None:
        for p, ix in zip(parts, index, strict=True):
            torch.index_select(table, 0, p, out=out[: p.numel()])  # random row reads
            table.scatter_add_(0, ix, grad[: p.numel()])  # read-modify-write of those rows

    return step, 2 * ids.numel() * row + 2 * unique * row


def limit_result(moved: int, median_s: float) -> dict[str, Any]:
    """The probe's JSON entry for ``moved`` bytes in ``median_s`` seconds."""
    return {
        "bytes": float(moved),
        "median_s": median_s,
        "gbps": moved / median_s / GB,
        "threads": torch.get_num_threads(),
    }


def limit_probe(
    rows: int, dim: int, ids: torch.Tensor, repeats: int = 7, chunk: int = 4096
) -> dict[str, Any]:
    """Gather + scatter-add of the lookup's rows in plain PyTorch, at the current thread count.

    Per ``chunk`` lookups: ``index_select`` of their rows from a ``[rows, dim]`` fp32 table into
    a reused buffer (forward), then ``scatter_add_`` of ``[chunk, dim]`` gradient rows into the
    same rows (backward + SGD update; an expanded index takes PyTorch's sorted fast path, 2-3x
    faster than ``index_add_`` here). The buffers stay cache-resident as a fused kernel's pooled
    output and gradient do, so the DRAM traffic is the random row reads and read-modify-writes
    a fused SGD step cannot avoid. It is a plain-PyTorch reference, not a hardware ceiling:
    fbgemm's kernels prefetch rows and can beat it.

    Args:
        rows: table rows (same as the embedding table).
        dim: row width (same as the embedding table).
        ids: ``[L]`` int64 row ids, the lookup's own ids.
        repeats: timed repetitions after one warm-up.
        chunk: lookups per gather / scatter-add call.

    Returns:
        ``{"bytes", "median_s", "gbps", "threads"}``; ``bytes`` is
        ``L*row`` (gather) ``+ L*row`` (gradient rows read) ``+ 2*unique*row`` (each touched
        row read and written), the same model as a step's analytic bytes.
    """
    step, moved = limit_probe_step(rows, dim, ids, chunk)
    return limit_result(moved, statistics.median(time_calls(step, warmup=1, repeats=repeats)))


def expected_unique(rows: int, draws: int) -> float:
    """Expected number of distinct rows among ``draws`` uniform draws from ``rows`` rows."""
    return rows * -math.expm1(draws * math.log1p(-1.0 / rows)) if rows > 1 else 1.0


def fmt_bytes(n: float) -> str:
    """Human-readable bytes (MiB below 1 GiB, else GiB)."""
    if n >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    return f"{n / MiB:.1f} MiB"

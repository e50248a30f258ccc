"""``maybe_enable_profiling``: torch.profiler traces for TensorBoard/Perfetto, or a no-op."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler


@contextlib.contextmanager
def maybe_enable_profiling(
    enabled: bool,
    trace_dir: Path,
    rank: int,
    wait: int = 2,
    warmup: int = 2,
    active: int = 4,
    worker_name: str | None = None,
) -> Iterator[profile | None]:
    """Yield a started profiler (call ``.step()`` once per training step) or ``None``.

    Traces land in ``trace_dir`` as ``rank{r}.*.pt.trace.json``; open them with
    ``tensorboard --logdir trace_dir`` or at https://ui.perfetto.dev. The ops with the most
    self CPU time are also written to ``rank{r}_top_ops.txt``. ``worker_name`` replaces
    ``rank{r}`` in both names (e.g. one name per benchmark case profiled into one folder).
    """
    if not enabled:
        yield None
        return
    trace_dir.mkdir(parents=True, exist_ok=True)
    worker = worker_name or f"rank{rank}"
    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    with profile(
        activities=activities,
        schedule=schedule(wait=wait, warmup=warmup, active=active, repeat=1),
        on_trace_ready=tensorboard_trace_handler(str(trace_dir), worker_name=worker),
        record_shapes=True,
    ) as prof:
        yield prof
    # A text summary beside the trace: which ops dominate the profiled steps.
    if prof.profiler is not None and prof.profiler.function_events is not None:
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
        (trace_dir / f"{worker}_top_ops.txt").write_text(table)

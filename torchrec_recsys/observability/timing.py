"""Latency statistics: the one percentile convention every benchmark table uses.

``percentile(values, q)`` interpolates linearly between the two closest ranks, which is
numpy's default (``np.percentile(values, q, method="linear")``, Hyndman & Fan type 7)::

    sorted values  x[0] <= x[1] <= ... <= x[n-1]
    position       h = (n - 1) * q / 100
    percentile     x[floor(h)] + (h - floor(h)) * (x[ceil(h)] - x[floor(h)])

so ``percentile(xs, 50)`` equals ``statistics.median(xs)``, ``q=0`` is the minimum and
``q=100`` the maximum. A nearest-rank percentile would instead always return one of the
samples (with 5 timed steps its p90 is simply the slowest step).

``time_calls`` times a callable the way every benchmark does (untimed warm-up calls, then
``repeats`` timed calls), and ``summarize`` turns those seconds into the usual table columns.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence

SUMMARY_PERCENTILES = (50, 90, 95, 99)
"""The percentiles ``summarize`` reports, as ``p50``, ``p90``, ... keys."""


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (``q`` in 0..100) of ``values`` by linear interpolation.

    Args:
        values: samples in any order (not modified).
        q: percentile in ``[0, 100]`` (``90`` for p90, not ``0.9``).

    Returns:
        The interpolated value (see the module docstring); NaN for no values.

    Raises:
        ValueError: ``q`` outside ``[0, 100]``.
    """
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be in [0, 100], got {q!r}")
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(times: Sequence[float]) -> dict[str, float]:
    """``{"p50", "p90", "p95", "p99", "mean"}`` of ``times`` (same unit as ``times``).

    Percentiles follow :func:`percentile`; every entry is NaN for no times.
    """
    out = {f"p{q}": percentile(times, q) for q in SUMMARY_PERCENTILES}
    out["mean"] = statistics.fmean(times) if times else float("nan")
    return out


def time_calls(fn: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times; return seconds per call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times

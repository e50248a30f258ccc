"""Quality numbers over seeds as ``mean ± spread``: the one format of every results table."""

from __future__ import annotations

import statistics


def mean_spread(values: list[float], digits: int = 4) -> str:
    """``mean ± sample standard deviation`` of ``values`` (one seed: just the value, since it
    has no spread; none: ``n/a``)."""
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"

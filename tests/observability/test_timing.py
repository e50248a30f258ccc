"""The one percentile convention: linear interpolation between closest ranks (numpy's default)."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from torchrec_recsys.observability.timing import percentile, summarize, time_calls

VALUES = [40.0, 10.0, 30.0, 20.0]  # unsorted on purpose; sorted: 10 20 30 40


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0, 10.0), (25, 17.5), (50, 25.0), (90, 37.0), (100, 40.0)],
)
def test_percentile_interpolates_linearly_between_closest_ranks(q: float, expected: float) -> None:
    assert percentile(VALUES, q) == pytest.approx(expected)
    assert percentile(VALUES, q) == pytest.approx(np.percentile(VALUES, q, method="linear"))


@pytest.mark.parametrize(
    "method", ["inverted_cdf", "lower", "higher", "nearest", "midpoint", "weibull", "hazen"]
)
def test_other_conventions_give_other_answers(method: str) -> None:
    """p25 or p90 of the list tells linear interpolation apart from each other convention."""
    ours = [percentile(VALUES, q) for q in (25, 90)]
    theirs = [float(np.percentile(VALUES, q, method=method)) for q in (25, 90)]
    assert ours != pytest.approx(theirs)


def test_nearest_rank_p90_is_not_what_we_report() -> None:
    nearest_rank = sorted(VALUES)[math.ceil(0.9 * len(VALUES)) - 1]  # = 40, the slowest sample
    assert nearest_rank == 40.0 and percentile(VALUES, 90) == pytest.approx(37.0)


def test_median_single_value_empty_and_bad_q() -> None:
    odd = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert percentile(odd, 50) == statistics.median(odd) == 3.0
    assert percentile(VALUES, 50) == statistics.median(VALUES)
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        percentile(VALUES, 101)
    with pytest.raises(ValueError):
        percentile(VALUES, -1)


def test_summarize_reports_the_table_columns() -> None:
    s = summarize(VALUES)
    assert s == pytest.approx({"p50": 25.0, "p90": 37.0, "p95": 38.5, "p99": 39.7, "mean": 25.0})
    assert all(math.isnan(v) for v in summarize([]).values())


def test_time_calls_runs_warmup_untimed() -> None:
    calls: list[int] = []
    times = time_calls(lambda: calls.append(1), warmup=2, repeats=3)
    assert len(calls) == 5 and len(times) == 3 and all(t >= 0 for t in times)

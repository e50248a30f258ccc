"""The generative ablation's table: mean +/- sample standard deviation over seeds."""

from __future__ import annotations

from torchrec_recsys.experiments.generative_ablation import METRICS, markdown_table
from torchrec_recsys.metrics.spread import mean_spread


def test_mean_spread_over_seeds() -> None:
    assert mean_spread([0.1, 0.2, 0.3]) == "0.2000 ± 0.1000"
    assert mean_spread([0.25]) == "0.2500"


def test_markdown_table_has_one_row_per_variant() -> None:
    run = {"test": {m: 0.5 for m in METRICS}, "wall_time_seconds": 10.0}
    table = markdown_table({"base": [run, run], "no user token": [run]}).splitlines()
    assert table[0].startswith("| variant | seeds | recall@10")
    assert table[2] == "| base | 2 | " + " | ".join(["0.5000 ± 0.0000"] * 6) + " | 10 ± 0 |"
    assert table[3].startswith("| no user token | 1 | 0.5000 |")

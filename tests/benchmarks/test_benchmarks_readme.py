"""``benchmarks/README.md`` has a row for every script in ``benchmarks/``."""

from __future__ import annotations

from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_every_benchmark_script_has_a_row() -> None:
    text = (BENCH / "README.md").read_text()
    missing = [p.name for p in sorted(BENCH.glob("*.py")) if f"| `{p.name}` |" not in text]
    assert not missing, f"add these to the table in benchmarks/README.md: {missing}"

"""The plot scripts read the dated results in ``results/`` and write beside them."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import plot_scale  # noqa: E402


def test_plot_scale_reads_the_newest_results_and_names_figures_by_stem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for topic in ("growth_tables", "growth_tables_rerun"):
        (src,) = (REPO / "results").glob(f"{topic}_cpu2_*.json")
        shutil.copy(src, tmp_path / src.name)
    (old,) = tmp_path.glob("growth_tables_cpu2_*.json")
    doc = json.loads(old.read_text())
    shutil.copy(old, tmp_path / "growth_tables_cpu2_20000101.json")  # an older one: not read
    monkeypatch.setattr(plot_scale, "RESULTS", tmp_path)
    plot_scale.main([])
    assert (tmp_path / f"{old.stem}.scale_num_tables.png").stat().st_size > 0
    assert not (tmp_path / "growth_tables_cpu2_20000101.scale_num_tables.png").exists()
    (tables,) = tmp_path.glob("scale_tables_*.json")
    derived = json.loads(tables.read_text())
    assert "run_meta" in derived and old.stem in derived["derived_from"]
    assert doc["command"] in tables.with_suffix(".md").read_text()
    assert plot_scale._STEMS == {}  # a later plain-file plot keeps its plain name

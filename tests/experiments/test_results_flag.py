"""``--results TOPIC``: an experiment driver also writes ``results/TOPIC_<hw>_<date>`` with its
``run_meta`` block (here through the SID ablation's ``--merge``, which trains nothing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_merge_with_results_writes_a_provenance_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torchrec_recsys.experiments.sid_ablation import main, mean_over_seeds

    buckets = ("all", "cold", "long tail")
    paths = []
    for i, auc in enumerate((0.6, 0.8)):
        part = {"ID only": {"dlrm": mean_over_seeds([{b: {"n": 5, "auc": auc} for b in buckets}])}}
        paths.append(tmp_path / f"s{i}.json")
        paths[-1].write_text(json.dumps(part))
    monkeypatch.chdir(tmp_path)
    main(["--merge", *map(str, paths), "--out", "work/merged.md", "--results", "sid_ablation_x"])
    (result,) = (tmp_path / "results").glob("sid_ablation_x_*.json")
    doc = json.loads(result.read_text())
    assert doc["run_meta"]["argv"] and "load_end" in doc["run_meta"]
    assert doc["ID only"]["dlrm"]["all"]["seeds"] == 2
    assert "0.7000 ± 0.1414" in result.with_suffix(".md").read_text()
    assert (tmp_path / "work" / "merged.json").is_file()  # the working copy for later merges

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


def test_merge_tabulates_separate_variant_jobs_in_variant_order(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    import pytest

    from torchrec_recsys.errors import UserError
    from torchrec_recsys.experiments.generative_ablation import main

    def run(recall: float) -> dict:  # type: ignore[type-arg]
        test = {m: 0.0 for m in METRICS} | {"recall@10": recall}
        return {"seed": 0, "test": test, "wall_time_seconds": 1.0}

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"no user token": [run(0.2)]}))
    b.write_text(json.dumps({"random codes, same shape": [run(0.1), run(0.3)]}))
    out = tmp_path / "merged.md"
    main(["--merge", str(a), str(b), "--out", str(out)])
    rows = out.read_text().splitlines()[2:]
    assert rows[0].startswith("| random codes, same shape | 2 | 0.2000 ± 0.1414 |")
    assert rows[1].startswith("| no user token | 1 | 0.2000 |")
    assert set(json.loads(out.with_suffix(".json").read_text())) == {
        "random codes, same shape",
        "no user token",
    }
    with pytest.raises(UserError, match="more than one file"):
        main(["--merge", str(a), str(a), "--out", str(out)])
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    before = out.read_text()
    with pytest.raises(UserError, match="broken.json' is not a readable ablation JSON"):
        main(["--merge", str(a), str(broken), "--out", str(out)])
    assert out.read_text() == before  # nothing rewritten

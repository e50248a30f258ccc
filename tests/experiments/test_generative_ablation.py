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
    assert table[0].startswith("| variant | seeds | val recall@10 | recall@10")
    assert table[0].endswith("| utilisation | collision | train s |")
    metrics = " | ".join(["0.5000 ± 0.0000"] * 6)
    # no selected epoch and no codes recorded
    assert table[2] == f"| base | 2 | - | {metrics} | - | - | 10 ± 0 |"
    assert table[3].startswith("| no user token | 1 | - | 0.5000 |")


def test_val_column_is_the_selected_epochs_value_over_the_seeds() -> None:
    def run(value: float) -> dict:  # type: ignore[type-arg]
        selected = {"epoch": 3, "metric": "recall@10", "value": value}
        return {"test": {m: 0.5 for m in METRICS}, "wall_time_seconds": 1.0, "selected": selected}

    table = markdown_table(
        {"base": [run(0.1), run(0.3)], "mixed": [run(0.2), {**run(0.2), "selected": None}]}
    )
    assert table.splitlines()[2].startswith("| base | 2 | 0.2000 ± 0.1414 | 0.5000")
    assert table.splitlines()[3].startswith("| mixed | 2 | - |")  # one seed did not record it


def test_code_columns_average_the_seeds_per_level() -> None:
    def run(utilisation: list[float], collision: float) -> dict:  # type: ignore[type-arg]
        codes = {"utilisation": utilisation, "collision_rate": collision}
        return {"test": {m: 0.5 for m in METRICS}, "wall_time_seconds": 1.0, "sid_codes": codes}

    table = markdown_table({"random codes": [run([1.0, 0.5], 0.1), run([0.5, 0.25], 0.2)]})
    assert "| 0.75/0.38 | 0.150 | 1 ± 0 |" in table.splitlines()[2]


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
    assert rows[0].startswith("| random codes, same shape | 2 | - | 0.2000 ± 0.1414 |")
    assert rows[1].startswith("| no user token | 1 | - | 0.2000 |")
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


def test_merge_with_results_writes_a_provenance_result(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import json

    from torchrec_recsys.experiments.generative_ablation import main

    test = {m: 0.1 for m in METRICS}
    part = tmp_path / "a.json"
    part.write_text(json.dumps({"no user token": [{"test": test, "wall_time_seconds": 2.0}]}))
    monkeypatch.chdir(tmp_path)
    main(["--merge", str(part), "--out", "work/m.md", "--results", "gen_abl_x"])
    (result,) = (tmp_path / "results").glob("gen_abl_x_*.json")
    doc = json.loads(result.read_text())
    assert doc["run_meta"]["argv"] and doc["merged"] == [str(part)]
    assert doc["results"]["no user token"][0]["wall_time_seconds"] == 2.0
    assert "| no user token | 1 | - | 0.1000 |" in result.with_suffix(".md").read_text()


def test_merge_reads_the_selected_epoch_of_older_records_from_their_run_folder(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from torchrec_recsys import api
    from torchrec_recsys.config import config_to_dict
    from torchrec_recsys.experiments.generative_ablation import main

    folder = tmp_path / "run"
    folder.mkdir()
    config = config_to_dict(api.load_config())
    (folder / "config.json").write_text(json.dumps(config))
    selected = {"epoch": 4, "metric": "recall@10", "value": 0.25, "checkpoint": "step_8"}
    summary = {
        "run_dir": str(folder),
        "config": config,
        "world_size": 1,
        "final_state": {},
        "epochs": [],
        "test": {m: 0.1 for m in METRICS},
        "baselines_test": {},
        "wall_time_seconds": 2.0,
        "selected_epoch": selected,
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    record = {"run_dir": str(folder), "test": summary["test"], "wall_time_seconds": 2.0}
    gone = {**record, "run_dir": str(tmp_path / "deleted")}
    part = tmp_path / "a.json"
    part.write_text(json.dumps({"no user token": [record], "levels 2": [gone]}))
    out = tmp_path / "m.md"
    main(["--merge", str(part), "--out", str(out)])
    rows = out.read_text().splitlines()[2:]
    assert rows[0].startswith("| levels 2 | 1 | - | 0.1000 |")  # no folder: nothing to read
    assert rows[1].startswith("| no user token | 1 | 0.2500 | 0.1000 |")
    merged = json.loads(out.with_suffix(".json").read_text())
    assert merged["no user token"][0]["selected"]["epoch"] == 4

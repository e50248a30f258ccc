"""Recipe search: the grid's cells, the choice on validation only, and a tiny SASRec run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_overrides

from torchrec_recsys.errors import UserError
from torchrec_recsys.experiments.recipe_search import cells, choose, main, parse_grid


def test_grid_flags_become_every_combination_in_order() -> None:
    grid = parse_grid(["sequence.dropout=0.2, 0.5", "optimizer.weight_decay=0.0,0.1"])
    assert grid == {"sequence.dropout": ["0.2", "0.5"], "optimizer.weight_decay": ["0.0", "0.1"]}
    assert cells(grid) == [
        {"sequence.dropout": "0.2", "optimizer.weight_decay": "0.0"},
        {"sequence.dropout": "0.2", "optimizer.weight_decay": "0.1"},
        {"sequence.dropout": "0.5", "optimizer.weight_decay": "0.0"},
        {"sequence.dropout": "0.5", "optimizer.weight_decay": "0.1"},
    ]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["sequence.dropout"], "'sequence.dropout' is invalid; expected section.key=value1"),
        (["sequence.dropout="], "is invalid"),
        (["a.b=1", "a.b=2"], "'a.b' is given twice"),
    ],
)
def test_bad_grid_flags_are_refused(flags: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_grid(flags)


def test_the_choice_reads_validation_never_test() -> None:
    runs = [
        {"validation": 0.10, "test": {"recall@10": 0.9}},
        {"validation": 0.30, "test": {"recall@10": 0.1}},
        {"validation": 0.30, "test": {"recall@10": 0.5}},
    ]
    assert choose(runs, lower_is_better=False) == 1  # best validation, first on ties
    assert choose(runs, lower_is_better=True) == 0


@pytest.mark.slow
def test_tiny_sasrec_search_trains_each_cell_and_the_chosen_at_seeds(
    synthetic_paths,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    out = tmp_path / "recipe.md"
    extra = [
        *tiny_overrides(synthetic_paths, tmp_path / "ignored"),
        "--model.name=sasrec",
        "--sequence.max_history=5",
        "--sequence.heads=2",
        "--sequence.ff_dim=16",
        "--train.max_steps_per_epoch=3",
    ]
    argv = ["--config", "", "--grid", "sequence.dropout=0.0,0.3", "--seeds", "0", "2"]
    main([*argv, "--out", str(out), "--runs-dir", str(tmp_path / "runs"), *extra])
    result = json.loads(out.with_suffix(".json").read_text())
    values = [r["validation"] for r in result["search"]]
    assert [r["settings"] for r in result["search"]] == [
        {"sequence.dropout": "0.0"},
        {"sequence.dropout": "0.3"},
    ]
    assert result["chosen"] == result["search"][values.index(max(values))]["cell"]
    assert [r["seed"] for r in result["final"]] == [0, 2]
    search_run = result["search"][values.index(max(values))]
    assert result["final"][0]["run_dir"] == search_run["run_dir"]  # seed 0 is not retrained
    assert result["final"][1]["run_dir"] != search_run["run_dir"]
    chosen = json.loads((Path(result["final"][0]["run_dir"]) / "summary.json").read_text())
    assert str(chosen["config"]["sequence"]["dropout"]) == result["chosen"].split("=")[1]
    assert all(r["metric"] == "recall@10" for r in result["search"])
    table = out.read_text()
    assert "(chosen)" in table and "seeds 0,2" in table

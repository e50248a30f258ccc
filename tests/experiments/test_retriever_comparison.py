"""Retriever comparison: run flags, the shared-split check, and a tiny two-model table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_overrides

from torchrec_recsys.errors import UserError
from torchrec_recsys.experiments.retriever_comparison import main, parse_run, slug


def test_a_run_flag_names_label_config_and_its_own_flags() -> None:
    assert parse_run("SASRec=configs/x.toml --a.b=1 --c.d='x y'") == (
        "SASRec",
        "configs/x.toml",
        ["--a.b=1", "--c.d=x y"],
    )
    assert slug("generative, random codes") == "generative_random_codes"


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("configs/x.toml", "expected 'LABEL=CONFIG"),
        ("A=", "expected 'LABEL=CONFIG"),
        ("A=configs/x.toml lr=1", "'lr=1' is not a --section.key=value flag"),
    ],
)
def test_bad_run_flags_are_refused(flag: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_run(flag)


def test_runs_on_different_splits_are_refused_before_training(tmp_path: Path) -> None:
    argv = ["--run", "a=configs/ml100k_sasrec.toml"]
    argv += ["--run", "b=configs/ml100k_two_tower.toml --data.cold_item_fraction=0.2"]
    with pytest.raises(UserError, match="'b' has data.cold_item_fraction = 0.2 but 'a' has 0.0"):
        main([*argv, "--out", str(tmp_path / "t.md"), "--runs-dir", str(tmp_path / "runs")])
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_tiny_comparison_tabulates_each_model_and_popularity_and_resumes(
    synthetic_paths,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    out = tmp_path / "cmp.md"
    extra = [
        *tiny_overrides(synthetic_paths, tmp_path / "ignored"),
        "--data.cold_item_fraction=0.2",
        "--sequence.max_history=5",
        "--sequence.heads=2",
        "--sequence.ff_dim=16",
        "--train.max_steps_per_epoch=3",
    ]
    argv = ["--run", "SASRec= --model.name=sasrec", "--run", "two-tower= --model.name=two_tower"]
    argv = [a.replace("= ", "='' ") for a in argv]
    argv += ["--seeds", "0", "1", "--out", str(out), "--runs-dir", str(tmp_path / "runs")]
    main([*argv, *extra])
    result = json.loads(out.with_suffix(".json").read_text())["results"]
    assert list(result) == ["SASRec", "two-tower"]
    assert [r["seed"] for r in result["SASRec"]] == [0, 1]
    for runs in result.values():
        for run in runs:
            summary = json.loads((Path(run["run_dir"]) / "summary.json").read_text())
            assert summary["config"]["train"]["seed"] == run["seed"]
            assert summary["config"]["data"]["cold_item_fraction"] == 0.2
            assert run["test"]["cold_targets"] > 0 and "tail_recall@10" in run["test"]
    table = out.read_text().splitlines()
    assert [row.split(" | ")[0] for row in table[2:]] == ["| SASRec", "| two-tower", "| popularity"]
    assert " ± " in table[2]
    first = Path(result["SASRec"][0]["run_dir"]) / "summary.json"
    before = first.stat().st_mtime_ns
    main([*argv, *extra])  # every run is finished: read back, none retrained
    assert first.stat().st_mtime_ns == before
    assert json.loads(out.with_suffix(".json").read_text())["results"] == result

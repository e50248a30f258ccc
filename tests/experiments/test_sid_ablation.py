"""The ablation command trains every variant and writes a table with all buckets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import tiny_overrides

from torchrec_recsys.cli import main as cli_main


@pytest.mark.slow
def test_ablation_writes_markdown_and_json(synthetic_paths, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "ablation.md"
    code = cli_main(
        [
            "ablation",
            "--out",
            str(out),
            "--cold-item-fraction=0.2",
            *tiny_overrides(synthetic_paths, tmp_path / "runs"),
            "--train.epochs=1",
            "--semantic_ids.method=rq_kmeans",
            "--semantic_ids.codebook_size=8",
            f"--semantic_ids.cache_dir={tmp_path / 'cache'}",
        ]
    )
    assert code == 0
    lines = out.read_text().strip().splitlines()
    assert len(lines) == 2 + 4
    assert [line.split("|")[1].strip() for line in lines[2:]] == [
        "ID only",
        "SID only",
        "ID + SID",
        "ID + random codes",
    ]
    results = json.loads(out.with_suffix(".json").read_text())
    dlrm = results["ID + SID"]["dlrm"]
    assert dlrm["all"]["n"] == 60 and 0 < dlrm["cold"]["n"] < 60
    for variant in results.values():
        for model, metric in (("dlrm", "auc"), ("two_tower", "recall@10")):
            value = variant[model]["all"][metric]
            assert 0.0 <= value <= 1.0 and not math.isnan(value)
    # SID variants really read SID tables; the ID-only runs do not
    runs = tmp_path / "runs"
    spec = json.loads(next(runs.glob("sid_ablation_sid_only_dlrm/*/feature_spec.json")).read_text())
    names = {f["name"] for f in spec["sparse"]}
    assert "item_sid_l1" in names and "item_id" not in names
    spec = json.loads(next(runs.glob("sid_ablation_id_only_dlrm/*/feature_spec.json")).read_text())
    assert not any("sid" in f["name"] for f in spec["sparse"])


def test_seeds_are_averaged_with_their_spread() -> None:
    from torchrec_recsys.experiments.sid_ablation import mean_over_seeds

    runs = [{"all": {"n": 10, "auc": 0.6}}, {"all": {"n": 10, "auc": 0.8}}]
    cell = mean_over_seeds(runs)["all"]
    assert cell["n"] == 10 and cell["seeds"] == 2
    assert cell["auc"] == pytest.approx(0.7) and cell["auc_std"] == pytest.approx(0.1414, abs=1e-4)


def test_merge_averages_one_seed_jobs_and_refuses_multi_seed_files(tmp_path: Path) -> None:
    import json

    import pytest

    from torchrec_recsys.errors import UserError
    from torchrec_recsys.experiments.sid_ablation import main, mean_over_seeds

    def part(auc: float, recall: float) -> dict:  # type: ignore[type-arg]
        buckets = ("all", "cold", "long tail")
        return {
            "ID only": {
                "dlrm": mean_over_seeds([{b: {"n": 5, "auc": auc} for b in buckets}]),
                "two_tower": mean_over_seeds(
                    [{b: {"n": 4, "recall@10": recall, "recall@100": recall} for b in buckets}]
                ),
            }
        }

    paths = []
    for i, (a, r) in enumerate([(0.6, 0.1), (0.8, 0.3)]):
        paths.append(tmp_path / f"s{i}.json")
        paths[-1].write_text(json.dumps(part(a, r)))
    out = tmp_path / "merged.md"
    main(["--merge", *map(str, paths), "--out", str(out)])
    cell = json.loads(out.with_suffix(".json").read_text())["ID only"]["dlrm"]["all"]
    assert cell["seeds"] == 2 and abs(cell["auc"] - 0.7) < 1e-12
    assert abs(cell["auc_std"] - 0.1414213562) < 1e-9
    assert "0.7000 ± 0.1414" in out.read_text()
    # a merged (2-seed) file cannot be merged again as if it were one seed
    with pytest.raises(UserError, match="one seed"):
        main(["--merge", str(out.with_suffix(".json")), str(paths[0]), "--out", str(out)])


def test_table_of_one_model_has_only_its_columns(tmp_path: Path) -> None:
    """``--models two_tower`` results (no DLRM cells) tabulate, merged, without DLRM columns."""
    from torchrec_recsys.experiments.sid_ablation import main, mean_over_seeds

    paths = []
    for i, recall in enumerate([0.1, 0.3]):
        cells = {
            b: {"n": 4, "recall@10": recall, "recall@100": recall}
            for b in ("all", "cold", "long tail")
        }
        paths.append(tmp_path / f"s{i}.json")
        paths[-1].write_text(json.dumps({"SID only": {"two_tower": mean_over_seeds([cells])}}))
    out = tmp_path / "merged.md"
    main(["--merge", *map(str, paths), "--out", str(out)])
    header, _, row = out.read_text().strip().splitlines()
    assert "DLRM" not in header and header.count("two-tower R@") == 6
    assert row.startswith("| SID only | 0.2000 ± 0.1414 |")


def test_unknown_model_is_a_one_line_error_before_any_run(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from torchrec_recsys.experiments.sid_ablation import main

    with pytest.raises(SystemExit) as stop:
        main(["--models", "sasrec", "--runs-dir", str(tmp_path / "runs")])
    assert stop.value.code == 2
    assert "--models: invalid choice: 'sasrec' (choose from 'dlrm', 'two_tower')" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "runs").exists()

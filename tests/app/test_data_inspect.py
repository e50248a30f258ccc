"""``data inspect`` on every built-in source available offline, and a bring-your-own
dataset (space-separated genres, no decade column, no users file) that trains in one try."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO_ROOT, tiny_overrides

from torchrec_recsys import api
from torchrec_recsys.app.train import main as train_main
from torchrec_recsys.cli import main as cli_main
from torchrec_recsys.data.criteo import write_synthetic_criteo
from torchrec_recsys.data.synthetic import SyntheticPaths
from torchrec_recsys.errors import DataError

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi"]


def _own_files(folder: Path) -> tuple[Path, Path]:
    """interactions.csv + items.csv (item_id, title, genres "Action Comedy"); no decade."""
    folder.mkdir(parents=True, exist_ok=True)
    items = pd.DataFrame(
        {
            "item_id": [f"m{i}" for i in range(40)],
            "title": [f"Movie {i}" for i in range(40)],
            "genres": [f"{GENRES[i % 6]} {GENRES[(i * 7 + 1) % 6]}" for i in range(40)],
        }
    )
    rows = [
        (f"u{u}", f"m{(u * 3 + k * 5) % 40}", float(1 + (u + k) % 5), float(1000 * u + k))
        for u in range(30)
        for k in range(12)
    ]
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    paths = folder / "interactions.csv", folder / "items.csv"
    interactions.to_csv(paths[0], index=False)
    items.to_csv(paths[1], index=False)
    return paths


def _files_overrides(inter: Path, items: Path) -> dict[str, object]:
    return {
        "data.source": "files",
        "data.interactions_path": str(inter),
        "data.items_path": str(items),
        "data.multi_value_separator": " ",
    }


def test_own_files_with_space_separated_genres_inspect_with_defaults(tmp_path: Path) -> None:
    inter, items = _own_files(tmp_path / "mine")
    report = api.inspect_data(api.load_config(overrides=_files_overrides(inter, items)))
    assert report.item_categorical_columns == ["genres"]  # the default, without "decade"
    assert report.columns["items"] == ["item_id", "title", "genres"]
    assert report.cardinalities["item_genres"] == len(GENRES) + 1  # + out-of-vocabulary row
    assert report.separators["items.genres"]["configured"] == " "
    assert " " in report.separators["items.genres"]["found"]
    assert report.separators["items.genres"]["multi_valued_cells"] > 0.5
    assert report.splits["test"] == 30 and report.splits["val"] == 30
    assert any("'decade'" in w for w in report.warnings)


@pytest.mark.slow
def test_own_files_train_in_one_try_with_defaults(tmp_path: Path) -> None:
    inter, items = _own_files(tmp_path / "mine")
    argv = [f"--{k}={v}" for k, v in _files_overrides(inter, items).items()]
    summary = train_main(
        [
            *argv,
            "--name=mine",
            "--train.epochs=1",
            "--train.batch_size=32",
            "--train.progress_bar=false",
            f"--train.output_dir={tmp_path / 'runs'}",
        ]
    )
    assert "item_genres" in {f["name"] for f in summary["feature_spec"]["sparse"]}
    assert "item_decade" not in {f["name"] for f in summary["feature_spec"]["sparse"]}
    assert 0.0 <= summary["test"]["auc"] <= 1.0
    run = api.load_run(summary["run_dir"])  # loads back with the resolved columns
    assert (
        run.config.data.item_categorical_columns
        == summary["config"]["data"]["item_categorical_columns"]
    )


def test_a_named_missing_column_names_the_key_and_the_columns(tmp_path: Path) -> None:
    inter, items = _own_files(tmp_path / "mine")
    overrides = {
        **_files_overrides(inter, items),
        "data.item_categorical_columns": ["genres", "year"],
    }
    with pytest.raises(DataError) as e:
        api.inspect_data(api.load_config(overrides=overrides))
    message = str(e.value)
    assert "'year'" in message and "data.item_categorical_columns" in message
    assert "its columns are item_id, title, genres" in message and "\n" not in message


def test_a_space_separator_is_accepted() -> None:
    cfg = api.load_config(overrides={"data.multi_value_separator": " "})
    assert cfg.data.multi_value_separator == " "


def test_inspect_files_source_from_the_cli(synthetic_paths, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    argv = tiny_overrides(synthetic_paths, tmp_path)
    assert cli_main(["--threads", "1", "data", "inspect", "--json", *argv]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["source"] == "files" and set(report["splits"]) == {"train", "val", "test"}
    assert report["cardinalities"]["item_id"] > 1 and report["columns"]["users"]


@pytest.mark.parametrize(
    "source", ["movielens-100k", "book-crossing"], ids=["movielens", "book-crossing"]
)
def test_inspect_packaged_datasets(source: str) -> None:
    name = "ml100k_dlrm" if source == "movielens-100k" else "bookx_dlrm"
    cfg = api.load_config(REPO_ROOT / "configs" / f"{name}.toml")
    report = api.inspect_data(cfg)
    assert report.source == source and min(report.splits.values()) > 0
    assert report.counts["interactions"] > 50_000
    assert all(v > 1 for v in report.cardinalities.values())
    assert not [w for w in report.warnings if w.startswith("error:")]


def test_inspect_criteo_sample(tmp_path: Path) -> None:
    path = write_synthetic_criteo(tmp_path / "criteo.tsv", 400, seed=0, cardinality=50)
    cfg = api.load_config(
        overrides={"data.source": "criteo", "data.criteo.path": str(path), "model.name": "dlrm"}
    )
    report = api.inspect_data(cfg)
    assert report.source == "criteo" and report.columns == {}
    assert sum(report.splits.values()) == 400 and len(report.dense_features) == 13
    assert len(report.cardinalities) == 26


def test_inspect_streamed_shards_reads_the_split_sizes_from_the_manifest(
    synthetic_paths: SyntheticPaths, tmp_path: Path
) -> None:
    argv = tiny_overrides(synthetic_paths, tmp_path / "runs")
    out = tmp_path / "shards"
    assert cli_main(["preprocess", "--out", str(out), "--rows-per-shard", "500", *argv]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    cfg = api.load_config(overrides={"data.source": "shards", "data.shards_dir": str(out)})
    report = api.inspect_data(cfg)
    expected = {s: manifest["splits"][s]["rows"] for s in ("train", "val", "test")}
    assert report.source == "shards" and report.splits == expected
    assert min(expected.values()) > 0 and report.counts["examples"] == sum(expected.values())
    assert not [w for w in report.warnings if w.startswith("error:")]

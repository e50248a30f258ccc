"""Config and artefact agree: a SID table whose shape is not what ``[semantic_ids]`` says,
and items with no text at all, are refused with one line before any training (exit 2,
nothing written)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config_file, tiny_overrides

from torchrec_recsys.cli import main
from torchrec_recsys.semantic_ids.store import SIDTable, save_sid_table


@pytest.fixture(scope="module")
def sid_table(synthetic_paths, tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """A residual-k-means-shaped table of the synthetic catalogue: 2 levels of 4 codes."""
    items = pd.read_csv(synthetic_paths.items)["item_id"].astype(str).tolist()
    rng = np.random.default_rng(0)
    codes = np.stack(
        [rng.integers(0, 4, len(items)), rng.integers(0, 4, len(items)), np.arange(len(items))],
        axis=1,
    )  # [N, 3]: two levels + a collision level that makes every row unique
    table = SIDTable(
        item_ids=items,
        codes=codes.astype(np.int64),
        codebook_sizes=[4, 4, len(items)],
        codebooks=rng.normal(size=(2, 4, 8)).astype(np.float32),  # [L, K, D]
        meta={"method": "rq_kmeans"},
    )
    return save_sid_table(tmp_path_factory.mktemp("sid") / "table", table)


def _train(synthetic_paths, root: Path, *extra: str) -> list[str]:  # type: ignore[no-untyped-def]
    return ["train", *tiny_overrides(synthetic_paths, root / "runs"), "--train.epochs=1", *extra]


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        (["--semantic_ids.levels=3", "--semantic_ids.codebook_size=4"], "has 2 quantizer level(s)"),
        (
            ["--semantic_ids.levels=2", "--semantic_ids.codebook_size=8"],
            "semantic_ids.codebook_size = 8",
        ),
    ],  # fmt: skip
)
def test_a_table_of_another_shape_is_refused_before_training(
    synthetic_paths,
    sid_table: Path,
    tmp_path: Path,
    capsys,
    settings,
    fragment,  # type: ignore[no-untyped-def]
) -> None:
    argv = _train(
        synthetic_paths, tmp_path, "--semantic_ids.enabled=true",
        f"--semantic_ids.table_path={sid_table}", *settings,
    )  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and repr(str(sid_table)) in err and "Traceback" not in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.pt"))


def test_a_table_of_the_configured_shape_trains(
    synthetic_paths,
    sid_table: Path,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    argv = _train(
        synthetic_paths, tmp_path, "--semantic_ids.enabled=true",
        f"--semantic_ids.table_path={sid_table}", "--semantic_ids.levels=2",
        "--semantic_ids.codebook_size=4",
    )  # fmt: skip
    assert main(argv) == 0


def test_sid_build_refuses_items_without_any_text(
    synthetic_paths,
    tmp_path: Path,
    capsys,  # type: ignore[no-untyped-def]
) -> None:
    items = pd.read_csv(synthetic_paths.items)
    items["title"] = ""
    blank = tmp_path / "items.csv"
    items.to_csv(blank, index=False)
    config = tiny_config_file(synthetic_paths, tmp_path)
    config.write_text(config.read_text().replace(str(synthetic_paths.items), str(blank)))
    out = tmp_path / "sid"
    argv = ["sid", "build", "--config", str(config), "--out", str(out), "--method", "rq_kmeans",
            "--levels", "2", "--codebook-size", "4"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "every item's text is empty (80 items)" in err and len(err.splitlines()) == 1
    assert not out.exists()

"""No silent overwrite: every command that writes a folder refuses an existing non-empty
``--out`` (one line, exit 2, the folder untouched) unless ``--overwrite`` is given."""

from __future__ import annotations

from pathlib import Path

import pytest
from _files import tree_snapshot
from conftest import tiny_config_file

from torchrec_recsys.cli import main


@pytest.fixture
def occupied(tmp_path: Path) -> Path:
    """A non-empty output folder holding a user's file."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("a result someone cares about\n")
    return out


def _preprocess(config: Path, out: Path, *extra: str) -> list[str]:
    return ["preprocess", "--config", str(config), "--out", str(out), "--rows-per-shard", "500",
            *extra]  # fmt: skip


def _sid_build(config: Path, out: Path, *extra: str) -> list[str]:
    return ["sid", "build", "--config", str(config), "--out", str(out), "--method", "rq_kmeans",
            "--levels", "2", "--codebook-size", "4", *extra]  # fmt: skip


COMMANDS = {"preprocess": _preprocess, "sid_build": _sid_build}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_non_empty_out_is_refused_and_left_as_it_was(
    command: str,
    synthetic_paths,
    occupied: Path,
    tmp_path: Path,
    capsys,  # type: ignore[no-untyped-def]
) -> None:
    config = tiny_config_file(synthetic_paths, tmp_path)
    before = tree_snapshot(occupied)
    capsys.readouterr()
    assert main(COMMANDS[command](config, occupied)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert repr(str(occupied)) in err and "pass --overwrite" in err
    assert tree_snapshot(occupied) == before


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_out_below_a_file_is_refused(
    command: str,
    synthetic_paths,
    tmp_path: Path,
    capsys,  # type: ignore[no-untyped-def]
) -> None:
    config = tiny_config_file(synthetic_paths, tmp_path)
    (tmp_path / "a_file").write_text("x")
    assert main(COMMANDS[command](config, tmp_path / "a_file" / "out")) == 2
    assert "is below the file" in capsys.readouterr().err
    assert (tmp_path / "a_file").read_text() == "x"


def test_preprocess_with_overwrite_replaces_the_folder(
    synthetic_paths,
    occupied: Path,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    config = tiny_config_file(synthetic_paths, tmp_path)
    assert main(_preprocess(config, occupied, "--overwrite")) == 0
    assert (occupied / "manifest.json").is_file()


def test_an_empty_out_folder_is_used_without_overwrite(
    synthetic_paths,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    config = tiny_config_file(synthetic_paths, tmp_path)
    out = tmp_path / "empty"
    out.mkdir()
    assert main(_preprocess(config, out)) == 0
    assert (out / "manifest.json").is_file()


def test_api_build_semantic_ids_refuses_a_non_empty_folder(
    synthetic_paths,
    occupied: Path,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    import torchrec_recsys as trs

    cfg = trs.load_config(str(tiny_config_file(synthetic_paths, tmp_path)))
    with pytest.raises(trs.UserError, match="already exists and is not empty"):
        trs.build_semantic_ids(cfg, occupied)
    assert sorted(p.name for p in occupied.iterdir()) == ["keep.txt"]

"""The atomic writers: all or nothing, no staging left behind, the modes a plain write gives."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from torchrec_recsys.files import atomic_directory, atomic_file, atomic_write_text


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_published_file_and_folder_get_the_modes_of_a_plain_write(tmp_path: Path) -> None:
    """``tempfile`` stages at 0600/0700; a report or bundle must be as readable as open()'s."""
    plain_file, plain_dir = tmp_path / "plain.txt", tmp_path / "plain"
    plain_file.write_text("x")
    plain_dir.mkdir()
    atomic_write_text(tmp_path / "report.md", "| a |\n")
    with atomic_directory(tmp_path / "bundle") as staging:
        (staging / "model.pt").write_bytes(b"\0")
    assert _mode(tmp_path / "report.md") == _mode(plain_file)
    assert _mode(tmp_path / "bundle") == _mode(plain_dir)


def test_failed_write_keeps_the_old_content_and_leaves_no_staging(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as handle:
        handle.write("new, half")
        raise RuntimeError("writer failed")
    folder = tmp_path / "index"
    with atomic_directory(folder) as staging:
        (staging / "a").write_text("1")
    with pytest.raises(RuntimeError), atomic_directory(folder) as staging:
        (staging / "a").write_text("2")
        raise RuntimeError("writer failed")
    assert target.read_text() == "old" and (folder / "a").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index", "summary.json"]

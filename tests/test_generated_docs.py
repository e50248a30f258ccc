"""``scripts/gen_docs.py``: the generated blocks are current, ``--check`` names a stale block,
and the rendered tables follow the result JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _gen_docs import REPO, load_gen_docs

gen_docs = load_gen_docs()

HEADLINE_README = """# Project

Intro prose the generator must not touch.

<!-- BEGIN GENERATED: headline -->
<!-- END GENERATED: headline -->

More prose.
"""


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """A copy of results/ and docs/ plus a README with a headline block, all regenerated."""
    shutil.copytree(REPO / "results", tmp_path / "results")
    if (REPO / "docs").is_dir():
        shutil.copytree(REPO / "docs", tmp_path / "docs")
    (tmp_path / "README.md").write_text(HEADLINE_README)
    assert gen_docs.main(["--root", str(tmp_path)]) == 0
    return tmp_path


def test_check_passes_on_the_tree() -> None:
    assert gen_docs.main(["--check"]) == 0


def test_check_fails_naming_an_altered_block(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert gen_docs.main(["--root", str(tree), "--check"]) == 0
    config = tree / "docs" / "configuration.md"
    config.write_text(config.read_text().replace("| `name` |", "| `renamed` |"))
    assert gen_docs.main(["--root", str(tree), "--check"]) == 1
    out = capsys.readouterr().out
    assert "docs/configuration.md: config" in out and "results_index" not in out


def test_check_names_a_stale_headline_and_rewriting_keeps_the_prose(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = tree / "README.md"
    text = readme.read_text()
    assert "Intro prose the generator must not touch." in text and "More prose." in text
    assert "(results/cli_help_times_" in text  # each number links to its report
    readme.write_text(text.replace("| CLI `--help` wall time |", "| CLI help |"))
    assert gen_docs.main(["--root", str(tree), "--check"]) == 1
    assert "README.md: headline" in capsys.readouterr().out
    assert gen_docs.main(["--root", str(tree)]) == 0
    assert readme.read_text() == text


def test_a_changed_json_number_changes_the_rendered_table(tree: Path) -> None:
    before = gen_docs.render_headline(tree, tree / "README.md")
    (path,) = (tree / "results").glob("cli_help_times_*.json")
    doc = json.loads(path.read_text())
    doc["times"][doc["slowest"]]["median_s"] = 0.987
    path.write_text(json.dumps(doc))
    after = gen_docs.render_headline(tree, tree / "README.md")
    assert after != before and "slowest median 0.99 s" in after
    assert gen_docs.main(["--root", str(tree), "--check"]) == 1


def test_a_new_result_appears_in_the_index(tree: Path) -> None:
    (src,) = (tree / "results").glob("cli_help_times_*.json")
    shutil.copy(src, tree / "results" / "cli_help_times_cpu2_20991231.json")
    index = gen_docs.render_results_index(tree, tree / "results" / "README.md")
    assert "[cli_help_times_cpu2_20991231](cli_help_times_cpu2_20991231.md)" in index
    assert "not indexed" in index  # no claim yet: the index test would fail


def test_files_without_markers_are_left_alone(tree: Path) -> None:
    plain = tree / "docs" / "plain.md"
    plain.write_text("# Plain\n\nno markers here\n")
    assert gen_docs.main(["--root", str(tree)]) == 0
    assert plain.read_text() == "# Plain\n\nno markers here\n"


def test_config_block_lists_every_key_with_type_default_and_range(tree: Path) -> None:
    from torchrec_recsys.config import ExperimentConfig, config_keys

    block = gen_docs.render_config(tree, tree / "docs" / "configuration.md")
    keys = config_keys(ExperimentConfig())
    assert block.count("\n") == len(keys) + 2
    ranged = next(k for k in keys if k.allowed)
    row = next(line for line in block.splitlines() if line.startswith(f"| `{ranged.key}` |"))
    assert ranged.allowed.replace("|", "\\|") in row

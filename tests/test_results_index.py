"""``results/``: every file belongs to an indexed result, every result JSON carries a complete
``run_meta`` block, and ``results/README.md`` is the index ``scripts/gen_docs.py`` renders."""

from __future__ import annotations

import json

import pytest
from _gen_docs import REPO, load_gen_docs

RESULTS = REPO / "results"
gen_docs = load_gen_docs()


def _files() -> list[str]:
    return sorted(p.name for p in RESULTS.iterdir() if p.is_file() and p.name != "README.md")


def test_every_file_in_results_belongs_to_an_indexed_result() -> None:
    stems = {p.stem for p in RESULTS.glob("*.json")}
    orphans = [name for name in _files() if name.split(".")[0] not in stems]
    assert not orphans, f"files without a result JSON of their stem: {orphans}"
    unindexed = sorted(stems - set(gen_docs.RESULTS_INDEX))
    assert not unindexed, f"add a claim to RESULTS_INDEX in scripts/gen_docs.py: {unindexed}"
    dangling = sorted(set(gen_docs.RESULTS_INDEX) - stems)
    assert not dangling, f"RESULTS_INDEX names results that do not exist: {dangling}"


def test_every_result_name_is_topic_hardware_date() -> None:
    bad = [p.stem for p in RESULTS.glob("*.json") if not gen_docs.STEM_RE.match(p.stem)]
    assert not bad, f"not <topic>_<hardware>_<yyyymmdd>: {bad}"


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.stem)
def test_result_has_a_complete_run_meta_block(path) -> None:  # type: ignore[no-untyped-def]
    meta = json.loads(path.read_text()).get("run_meta")
    assert isinstance(meta, dict), f"{path.name}: no run_meta block"
    missing = [key for key in gen_docs.REQUIRED_META if key not in meta]
    assert not missing, f"{path.name}: run_meta lacks {missing}"
    assert meta["commit"], f"{path.name}: run_meta.commit is empty"
    assert str(meta["started"])[:10].replace("-", "") == path.stem[-8:], (
        f"{path.name}: the date in the name is not run_meta.started"
    )
    if meta.get("imported"):
        assert meta.get("source"), f"{path.name}: an imported result names no source"


def test_results_readme_is_the_generated_index() -> None:
    readme = RESULTS / "README.md"
    _, changed = gen_docs.rewrite(readme.read_text(), REPO, readme)
    assert "results_index" in gen_docs.BLOCK_RE.findall(readme.read_text())[0]
    assert not changed, "results/README.md is stale: run python scripts/gen_docs.py"


def test_index_names_every_result_with_its_claim() -> None:
    text = (RESULTS / "README.md").read_text()
    for stem, claim in gen_docs.RESULTS_INDEX.items():
        assert f"[{stem}]({stem}.md)" in text and claim.split("|")[0][:30] in text

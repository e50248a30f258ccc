"""Our own files read back with the wrong shape: each reader answers one line naming the
file and the field (a :class:`DataError`), never a traceback from deep inside, for every
format we write and read again (bundle manifest and parts, shard manifest, SID table meta,
drift reports)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from torchrec_recsys.cli import main
from torchrec_recsys.data.shards import read_manifest
from torchrec_recsys.errors import DataError
from torchrec_recsys.semantic_ids.store import SIDTable, load_sid_table, save_sid_table
from torchrec_recsys.serving.bundle import MANIFEST_FILE, STATS_FILE, load_bundle
from torchrec_recsys.serving.drift import check_report

Edit = Callable[[Any], None]


def _edit_json(path: Path, edit: Edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _reseal(folder: Path, name: str) -> None:
    """Record ``name``'s new sha256 and size in the manifest, so only its shape is wrong."""
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    raw = (folder / name).read_bytes()
    manifest["files"][name] = {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))


def _one_line(exc: pytest.ExceptionInfo[DataError], *fragments: str) -> None:
    message = str(exc.value)
    assert len(message.splitlines()) == 1, message
    for fragment in fragments:
        assert fragment in message, message


def _set(key: str, value: Any) -> Edit:
    def edit(data: Any) -> None:
        data[key] = value

    return edit


BUNDLE_PARTS = [
    ("retriever/architecture.json", _set("layers", "big"), "'layers'"),
    ("ranker/architecture.json", _set("kind", "gbdt"), "'kind'"),
    ("retriever/snapshot.json", _set("item_ids", {"a": 1}), "'item_ids'"),
    (STATS_FILE, _set("examples", -3), "'examples'"),
    (STATS_FILE, lambda d: d.pop("sparse"), "'sparse'"),
]


@pytest.mark.parametrize(("name", "edit", "field"), BUNDLE_PARTS, ids=lambda v: str(v)[:30])
def test_a_wrong_shaped_bundle_part_names_the_file_and_field(
    tiny_bundle,
    tmp_path: Path,
    name: str,
    edit: Edit,
    field: str,  # type: ignore[no-untyped-def]
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle.bundle, bundle)
    _edit_json(bundle / name, edit)
    _reseal(bundle, name)  # the seal holds: the reader itself must catch the shape
    with pytest.raises(DataError) as exc:
        load_bundle(bundle)
    _one_line(exc, name.split("/")[-1], field)


def test_a_wrong_shaped_manifest_entry_names_the_entry(tiny_bundle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle.bundle, bundle)

    def edit(data: Any) -> None:
        data["files"]["index/item_ids.json"]["bytes"] = "633"

    _edit_json(bundle / MANIFEST_FILE, edit)
    with pytest.raises(DataError) as exc:
        load_bundle(bundle)
    _one_line(exc, MANIFEST_FILE, "files.index/item_ids.json.bytes")


@pytest.fixture(scope="module")
def sid_folder(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    table = SIDTable(
        ["a", "b", "c"], np.array([[0, 0], [1, 0], [1, 1]]), [2, 2],
        np.zeros((1, 2, 4), np.float32), meta={"method": "rq_kmeans"},
    )  # fmt: skip
    return save_sid_table(tmp_path_factory.mktemp("sid") / "table", table)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (_set("codebook_sizes", [2, "two"]), "'codebook_sizes.1'"),
        (_set("num_items", -1), "'num_items'"),
        (lambda d: d.pop("has_model_state"), "'has_model_state'"),
    ],
)
def test_a_wrong_shaped_sid_meta_names_the_field(
    sid_folder: Path, tmp_path: Path, edit: Edit, field: str
) -> None:
    folder = tmp_path / "table"
    shutil.copytree(sid_folder, folder)
    load_sid_table(folder)  # the untouched copy reads
    _edit_json(folder / "meta.json", edit)
    with pytest.raises(DataError) as exc:
        load_sid_table(folder)
    _one_line(exc, "meta.json", field)


@pytest.fixture(scope="module")
def shard_dir(synthetic_paths, tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    from conftest import tiny_config_file

    root = tmp_path_factory.mktemp("shards")
    config = tiny_config_file(synthetic_paths, root)
    out = root / "shards"
    assert main(["preprocess", "--config", str(config), "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (_set("total_rows", "many"), "'total_rows'"),
        (lambda d: d["splits"]["train"].update(rows=-1), "'splits.train.rows'"),
        (lambda d: d["splits"]["val"]["shards"][0].update(file="../../etc/passwd"), "val"),
        (_set("vocab_hash", "not hex"), "'vocab_hash'"),
    ],
)
def test_a_wrong_shaped_shard_manifest_names_the_field(
    shard_dir: Path, tmp_path: Path, edit: Edit, field: str
) -> None:
    folder = tmp_path / "shards"
    shutil.copytree(shard_dir, folder)
    read_manifest(folder)
    _edit_json(folder / "manifest.json", edit)
    with pytest.raises(DataError) as exc:
        read_manifest(folder)
    _one_line(exc, "manifest.json", field)


REPORT = {
    "window_started_unix": 1.0, "requests": 60, "enough_requests": True, "min_requests": 50,
    "psi_threshold": 0.2, "unseen_threshold": 0.1, "features": [], "flagged": [],
}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"requests": "sixty"}, "'requests'"),
        ({"features": [{"feature": "f", "kind": "bag"}]}, "'features.0.kind'"),
        ({"psi_threshold": float("nan")}, "'psi_threshold'"),
    ],
)
def test_a_wrong_shaped_drift_answer_names_the_field(change: dict, field: str) -> None:  # type: ignore[type-arg]
    check_report(dict(REPORT), "drift answer from http://127.0.0.1:1/drift")
    with pytest.raises(DataError) as exc:
        check_report({**REPORT, **change}, "drift answer from http://127.0.0.1:1/drift")
    _one_line(exc, "drift answer from http://127.0.0.1:1/drift", field)

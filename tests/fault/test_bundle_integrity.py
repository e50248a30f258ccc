"""A tampered serving bundle: every change to what the loader opens is refused with one line
naming the file, by ``registry add`` (nothing is added) and at load (the registry's recorded
manifest digest and, with a key set, the HMAC signature), whatever else was recomputed."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from torchrec_recsys.cli import main as cli_main
from torchrec_recsys.errors import DataError
from torchrec_recsys.serving.bundle import (
    BUNDLE_FILES,
    KEY_ENV,
    MANIFEST_FILE,
    SIGNATURE_FILE,
    inspect_bundle,
    load_bundle,
)
from torchrec_recsys.serving.registry import Registry

IDS = "index/item_ids.json"


@pytest.fixture
def bundle(tiny_bundle, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    """A private copy of the session's tiny bundle (safe to damage)."""
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle.bundle, copy)
    return copy


def _manifest(folder: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((folder / MANIFEST_FILE).read_text())


def _write_manifest(folder: Path, manifest: dict) -> None:  # type: ignore[type-arg]
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))


def _reseal(folder: Path, name: str) -> None:
    """Recompute one file's sha256 and size in the manifest, as a forger would."""
    manifest = _manifest(folder)
    data = (folder / name).read_bytes()
    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    _write_manifest(folder, manifest)


def _swap_two_ids(folder: Path) -> None:
    ids = json.loads((folder / IDS).read_text())
    ids[0], ids[1] = ids[1], ids[0]
    (folder / IDS).write_text(json.dumps(ids))


def _add(capsys: pytest.CaptureFixture[str], root: Path, bundle: Path) -> tuple[int, str]:
    code = cli_main(["registry", "--root", str(root), "add", str(bundle)])
    return code, capsys.readouterr().err.strip()


def _refused_add(capsys: pytest.CaptureFixture[str], tmp_path: Path, bundle: Path) -> str:
    """``registry add`` exits 2 with one line and leaves no version behind."""
    root = tmp_path / "registry"
    code, err = _add(capsys, root, bundle)
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert Registry(root).read_state().versions == {}
    assert not (root / "versions").exists() or not any((root / "versions").iterdir())
    return err


def test_the_manifest_lists_every_file_the_loader_opens(bundle: Path) -> None:
    assert sorted(_manifest(bundle)["files"]) == sorted(BUNDLE_FILES)
    assert IDS in BUNDLE_FILES  # the id list that maps index rows to items is sealed too
    inspect_bundle(bundle)


def test_a_changed_file_is_refused_by_add(capsys, bundle: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _swap_two_ids(bundle)
    err = _refused_add(capsys, tmp_path, bundle)
    assert IDS in err and "corrupt or changed" in err


def test_a_file_dropped_from_the_manifest_is_refused(capsys, bundle: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _swap_two_ids(bundle)
    manifest = _manifest(bundle)
    del manifest["files"][IDS]
    _write_manifest(bundle, manifest)
    err = _refused_add(capsys, tmp_path, bundle)
    assert "lacks" in err and IDS in err


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.json", "index/extra.json"])
def test_a_listed_path_that_is_not_a_bundle_file_is_refused(
    capsys,
    bundle: Path,
    tmp_path: Path,
    name: str,  # type: ignore[no-untyped-def]
) -> None:
    manifest = _manifest(bundle)
    manifest["files"][name] = {"sha256": "0" * 64, "bytes": 0}
    _write_manifest(bundle, manifest)
    err = _refused_add(capsys, tmp_path, bundle)
    assert repr(name) in err and "relative paths" in err


def test_a_file_linked_outside_the_bundle_is_refused(
    capsys,
    bundle: Path,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    outside = tmp_path / "elsewhere.json"
    shutil.copyfile(bundle / IDS, outside)  # same bytes: only the link gives it away
    (bundle / IDS).unlink()
    (bundle / IDS).symlink_to(outside)
    err = _refused_add(capsys, tmp_path, bundle)
    assert "outside the bundle" in err


def test_a_resealed_edit_inside_the_registry_is_refused_at_load(
    capsys,
    bundle: Path,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    registry = Registry(tmp_path / "registry")
    name = registry.add(bundle)
    version = registry.version_path(name)
    _swap_two_ids(version)
    _reseal(version, IDS)  # file and manifest agree again ...
    (version / "added.json").unlink()  # ... and the copy of the seal is gone
    inspect_bundle(version)  # on its own the folder is consistent
    with pytest.raises(DataError, match="the registry recorded .* the bundle changed"):
        registry.load(name)
    code = cli_main(["registry", "--root", str(registry.root), "promote", name])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "the bundle changed" in err and len(err.splitlines()) == 1
    assert registry.read_state().live is None  # nothing was promoted


def test_a_resealed_bundle_fails_its_signature(
    capsys,
    tiny_bundle,
    tmp_path: Path,
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setenv(KEY_ENV, "a shared secret")
    signed = tmp_path / "signed"
    code = cli_main(
        ["export-bundle", "--retriever", str(tiny_bundle.tt_dir),
         "--ranker", str(tiny_bundle.dlrm_dir), "--out", str(signed)]
    )  # fmt: skip
    assert code == 0 and (signed / SIGNATURE_FILE).is_file()
    assert inspect_bundle(signed).signed
    _swap_two_ids(signed)
    _reseal(signed, IDS)
    err = _refused_add(capsys, tmp_path, signed)
    assert "signature that does not match" in err
    monkeypatch.setenv(KEY_ENV, "another key")
    with pytest.raises(DataError, match="signature"):
        load_bundle(tmp_path / "signed")


def test_an_unsigned_bundle_is_refused_when_a_key_is_set(
    capsys,
    bundle: Path,
    tmp_path: Path,
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setenv(KEY_ENV, "a shared secret")
    err = _refused_add(capsys, tmp_path, bundle)
    assert "is not signed" in err and KEY_ENV in err


def test_an_empty_key_is_refused(capsys, bundle: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(KEY_ENV, "")
    err = _refused_add(capsys, tmp_path, bundle)
    assert KEY_ENV in err and "empty" in err

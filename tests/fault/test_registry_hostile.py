"""A hostile registry caller and a damaged registry folder: every case ends with one line and
exit 2 (or a :class:`RegistryStateError`), nothing in the registry changes, nothing outside it
is let in, and the rollback history survives the loss of ``state.json``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _files import tree_snapshot

from torchrec_recsys.cli import main as cli_main
from torchrec_recsys.errors import UserError
from torchrec_recsys.serving.registry import (
    JOURNAL_FILE,
    STATE_FILE,
    Registry,
    RegistryStateError,
    check_version_name,
)


@pytest.fixture(scope="module")
def filled(tiny_bundle, tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """A registry with v1, v2 (v2 live, v1 on the rollback history); copied per test."""
    root = tmp_path_factory.mktemp("filled") / "registry"
    registry = Registry(root)
    assert registry.add(tiny_bundle.bundle) == "v1"
    assert registry.add(tiny_bundle.bundle) == "v2"
    registry.promote("v1")
    registry.promote("v2")
    return root


@pytest.fixture
def registry(filled: Path, tmp_path: Path) -> Registry:
    root = tmp_path / "registry"
    shutil.copytree(filled, root)
    return Registry(root)


def _cli(capsys: pytest.CaptureFixture[str], root: Path, *argv: str) -> tuple[int, str]:
    """Exit code and stderr of ``registry --root ROOT ARGV`` (stdout is dropped)."""
    code = cli_main(["registry", "--root", str(root), *argv])
    return code, capsys.readouterr().err.strip()


BAD_NAMES = ["../../../b1", "/abs/path", "v1/../v2", "..", ".hidden", "a b", "v1\n", "x" * 65]


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize(
    "command",
    [["promote"], ["canary", "--share", "0.5"], ["shadow"], ["add", "BUNDLE", "--name"]],
)
def test_a_malformed_version_name_is_refused_by_every_command(
    registry: Registry, tiny_bundle, capsys, command: list[str], name: str
) -> None:  # type: ignore[no-untyped-def]
    before = tree_snapshot(registry.root)
    argv = [str(tiny_bundle.bundle) if a == "BUNDLE" else a for a in command]
    argv = [*argv[:1], name, *argv[1:]] if command[0] != "add" else [*argv, name]
    code, err = _cli(capsys, registry.root, *argv)
    assert code == 2
    assert err.startswith("error: version name") and "malformed" in err and "\n" not in err
    assert tree_snapshot(registry.root) == before


def test_the_one_name_check_accepts_ordinary_names_only() -> None:
    for good in ("v1", "v10", "2026-12-02_a.b", "A" * 64):
        assert check_version_name(good) == good
    for bad in [*BAD_NAMES, "", None, 3, "v1/"]:
        with pytest.raises(UserError, match="malformed"):
            check_version_name(bad)


def _write_state(registry: Registry, text: str) -> None:
    registry.state_path.write_text(text)


def _state(registry: Registry) -> dict:  # type: ignore[type-arg]
    return json.loads(registry.state_path.read_text())


WRONG_STATES = [
    ("[]", "the top level is a list"),
    ("{}", "field 'generation' is missing"),
    ('{"generation": "7"}', "field 'generation'"),
    ('{"generation": -1}', "field 'generation'"),
    ("null", "the top level"),
    ('{"generation": 1, "live": "../../b1"}', "field 'live'"),
    ('{"generation": 1, "live": "/abs/path"}', "field 'live'"),
    ('{"generation": 1, "history": "v1"}', "field 'history'"),
    ('{"generation": 1, "history": ["../x"]}', "field 'history.0'"),
    ('{"generation": 1, "canary": {"version": "v1"}}', "field 'canary.share'"),
    ('{"generation": 1, "canary": {"version": "v1", "share": 5}}', "field 'canary.share'"),
    ('{"generation": 1, "canary": ["v1", 0.5]}', "field 'canary'"),
    ('{"generation": 1, "shadow": 3}', "field 'shadow'"),
    ('{"generation": 1, "live": "v9"}', "field 'live' names 'v9'"),
    ('{"generation": 1, "surprise": true}', "field 'surprise'"),
    ('{"generation": 1, "versions": {"v1": "abc"}}', "field 'versions.v1'"),
    ('{"generation": 1, "versions": {"v1": {"manifest_sha256": "x", "added_unix": 1}}}', "sha256"),
    ('{"generation": 1, "live": "v1"', "not valid JSON"),
    ("\udcff", "not UTF-8"),
    ("[" * 100_000, "nested too deeply"),
]


@pytest.mark.parametrize(("text", "expected"), WRONG_STATES)
def test_a_wrong_shaped_state_is_one_line_naming_the_file_and_field(
    registry: Registry, capsys, text: str, expected: str
) -> None:  # type: ignore[no-untyped-def]
    if text == "\udcff":
        registry.state_path.write_bytes(b"\xff\xfe{")
    else:
        _write_state(registry, text)
    with pytest.raises(RegistryStateError) as raised:
        registry.read_state()
    message = str(raised.value)
    assert STATE_FILE in message and expected in message and "\n" not in message
    before = tree_snapshot(registry.root)
    for argv in (["list"], ["promote", "v1"], ["rollback"], ["canary", "v1"], ["shadow", "v1"]):
        code, err = _cli(capsys, registry.root, *argv)
        assert code == 2 and STATE_FILE in err and err.count("\n") == 0, (argv, err)
    code, err = _cli(capsys, registry.root, "add", str(registry.version_path("v1")))
    assert code == 2 and STATE_FILE in err
    assert tree_snapshot(registry.root) == before  # nothing written, no version let in


def test_a_lost_state_is_rebuilt_from_the_journal_with_its_history(
    registry: Registry, capsys
) -> None:  # type: ignore[no-untyped-def]
    before = registry.read_state()
    registry.state_path.unlink()
    rebuilt = registry.read_state()
    assert rebuilt.to_dict() == before.to_dict()
    assert rebuilt.live == "v2" and rebuilt.history == ["v1"]
    assert cli_main(["registry", "--root", str(registry.root), "list"]) == 0
    assert "live: v2" in capsys.readouterr().out
    assert not registry.state_path.exists()  # reading wrote nothing
    assert registry.rollback().live == "v1"  # the history survived
    assert _state(registry)["live"] == "v1" and _state(registry)["generation"] > before.generation


def test_a_torn_last_journal_line_is_skipped_and_cut_before_the_next_change(
    registry: Registry,
) -> None:
    before = registry.read_state()
    registry.state_path.unlink()
    with open(registry.journal_path, "a") as handle:
        handle.write('{"event": "promote v1", "unix": 1.0, "state": {"generat')  # a crash
    assert registry.read_state().to_dict() == before.to_dict()
    registry.rollback()
    lines = registry.journal_path.read_text().splitlines()
    assert all(json.loads(line)["state"] for line in lines)  # the torn tail is gone
    assert json.loads(lines[-1])["event"] == "rollback"
    assert registry.read_state().live == "v1"


def test_a_damaged_journal_line_in_the_middle_is_named(registry: Registry) -> None:
    registry.state_path.unlink()
    lines = registry.journal_path.read_text().splitlines()
    lines[1] = '{"event": 1}'
    registry.journal_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RegistryStateError, match=rf"{JOURNAL_FILE}' line 2: field 'event'"):
        registry.read_state()


def test_a_state_file_behind_the_journal_is_caught_up_by_the_next_change(
    registry: Registry,
) -> None:
    state = registry.read_state()
    stale = {**state.to_dict(), "generation": state.generation - 1, "live": "v1", "history": []}
    registry.state_path.write_text(json.dumps(stale))  # a crash between journal and state
    registry.set_shadow("v1")
    after = registry.read_state()
    assert after.live == "v2" and after.history == ["v1"] and after.shadow == "v1"
    assert after.generation == state.generation + 1


def test_a_version_folder_linked_outside_the_registry_is_refused(
    registry: Registry, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    outside = tmp_path / "outside"
    shutil.copytree(registry.version_path("v1"), outside)
    shutil.rmtree(registry.version_path("v1"))
    (registry.root / "versions" / "v1").symlink_to(outside)
    before = tree_snapshot(registry.root)
    code, err = _cli(capsys, registry.root, "rollback")
    assert code == 2 and "is a link to" in err and str(outside) in err
    with pytest.raises(RegistryStateError, match="expected a plain folder inside the registry"):
        registry.load("v1")
    for argv in (["promote", "v1"], ["canary", "v1"], ["shadow", "v1"]):
        code, err = _cli(capsys, registry.root, *argv)
        assert code == 2 and "v1" in err, (argv, err)
    assert tree_snapshot(registry.root) == before and registry.read_state().live == "v2"


def test_a_versions_folder_linked_outside_is_refused(registry: Registry, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere"
    shutil.move(registry.root / "versions", moved)
    (registry.root / "versions").symlink_to(moved)
    with pytest.raises(RegistryStateError, match="outside the registry"):
        registry.version_path("v1")
    with pytest.raises(RegistryStateError, match="outside the registry"):
        registry.promote("v1")


def test_a_recorded_version_whose_folder_is_gone_is_refused(registry: Registry) -> None:
    shutil.rmtree(registry.version_path("v1"))
    before = registry.read_state()
    with pytest.raises(UserError, match="v1"):
        registry.rollback()
    assert registry.read_state().to_dict() == before.to_dict()


def test_a_folder_that_is_not_a_registry(tmp_path: Path, tiny_bundle, capsys) -> None:  # type: ignore[no-untyped-def]
    some_file = tmp_path / "file.txt"
    some_file.write_text("x")
    not_registry = tmp_path / "project"
    not_registry.mkdir()
    (not_registry / "notes.md").write_text("mine")
    cases = [
        (some_file, "is not a folder"),
        (tmp_path / "missing", "does not exist"),
        (not_registry, "is not a registry"),
        (tiny_bundle.bundle, "is not a registry"),
        (some_file / "below", "is below the file"),
    ]
    for root, expected in cases:
        before = tree_snapshot(tmp_path)
        for argv in (["list"], ["promote", "v1"], ["rollback"], ["shadow", "--off"]):
            code, err = _cli(capsys, root, *argv)
            assert code == 2 and err.count("\n") == 0, (root, argv, err)
            assert expected in err or "not in registry" in err or "no previous" in err, err
        if root.name != "missing":  # add creates a missing registry; the others are refused
            code, err = _cli(capsys, root, "add", str(tiny_bundle.bundle))
            assert code == 2 and expected in err, (root, err)
        assert tree_snapshot(tmp_path) == before  # nothing created, nothing added


def test_list_of_an_empty_folder_says_it_holds_no_versions(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert cli_main(["registry", "--root", str(tmp_path), "list"]) == 0
    assert "holds no versions" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []

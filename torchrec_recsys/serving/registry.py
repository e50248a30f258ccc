"""A model registry folder: sealed bundles by version and an atomically switched live pointer.

    registry/
      versions/v1/ ...     a verified copy of each added bundle (never modified after add):
                           the manifest's files, manifest.json (+ manifest.sig) and added.json
      versions/v2/ ...
      state.json           {"generation": 7, "live": "v2", "history": ["v1"],
                            "canary": {"version": "v3", "share": 0.1} | null,
                            "shadow": "v3" | null,
                            "versions": {"v1": {"manifest_sha256": "...", "added_unix": ...,
                                                "signed": false}, ...}}
      journal.jsonl        append-only: one line per change, {"event", "unix", "state"}
      .lock                serialises read-modify-write of the state between commands

Every change appends the new state to ``journal.jsonl`` (flushed and fsynced) and then
replaces ``state.json`` atomically (``files.atomic_write_text``), so a server polling it sees
the old state or the new one. ``state.json`` is what servers read; the journal is the
history it is rebuilt from: when ``state.json`` is missing, :meth:`Registry.read_state`
returns the journal's last state (a torn last line, from a crash mid-append, is skipped), so
the rollback history survives the loss of ``state.json``.

Every version name, from a command or from a file, goes through :func:`check_version_name`
(letters, digits, ``.``, ``_``, ``-``; no path separators), and :meth:`Registry.version_path`
refuses a folder that resolves outside ``versions/`` (a symlink out of the registry).

A bundle is verified (schema, the exact set of files, every file's sha256, the signature when
``TORCHREC_RECSYS_BUNDLE_KEY`` is set) when it is added; ``add`` records the sha256 of its
manifest in the state, and promote, canary, shadow, rollback and :meth:`Registry.load` verify
the version against that record again: a version edited after ``add`` (even with its manifest
rewritten to match) never goes live.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pydantic

from torchrec_recsys.errors import DataError, UserError
from torchrec_recsys.files import (
    atomic_directory,
    atomic_write_text,
    fsync_path,
    read_json,
    validated,
)
from torchrec_recsys.serving.bundle import (
    MANIFEST_FILE,
    SEAL_FILE,
    SIGNATURE_FILE,
    SealRecord,
    ServingBundle,
    inspect_bundle,
    load_bundle,
)

STATE_FILE = "state.json"
JOURNAL_FILE = "journal.jsonl"
VERSIONS = "versions"
LOCK_FILE = ".lock"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
NAME_RULE = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"


class RegistryStateError(DataError):
    """The registry's state (``state.json``, ``journal.jsonl``, a version folder) is unreadable
    or of the wrong shape; the message names the file and the field. A server that meets it
    keeps serving what it has."""


def check_version_name(name: object, where: str = "version name") -> str:
    """``name`` if it is a valid version name, else :class:`UserError` (one line).

    The one check of version names: every registry command and every read of the state use
    it, so no name with a path separator, ``..`` or an absolute path reaches the file system.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UserError(f"{where} {name!r} is malformed; expected {NAME_RULE}")
    return name


def _name_field(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a version name ({NAME_RULE})")
    return value


VersionName = Annotated[str, pydantic.AfterValidator(_name_field)]


class _Canary(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    version: VersionName
    share: Annotated[float, pydantic.Field(gt=0.0, le=1.0, allow_inf_nan=False)]


class _State(pydantic.BaseModel):
    """The shape of ``state.json`` (and of each journal line's ``state``)."""

    model_config = pydantic.ConfigDict(extra="forbid")
    generation: Annotated[int, pydantic.Field(ge=0)]
    live: VersionName | None = None
    history: list[VersionName] = []
    canary: _Canary | None = None
    shadow: VersionName | None = None
    versions: dict[VersionName, SealRecord] = {}

    def unknown_name(self) -> str | None:
        """The first role (``live``, ``history.N`` ...) naming a version not in ``versions``,
        as a one-line problem; None when every name is recorded."""
        named = [("live", self.live), ("shadow", self.shadow)]
        named += [(f"history.{i}", n) for i, n in enumerate(self.history)]
        named += [("canary.version", self.canary.version if self.canary else None)]
        for where, name in named:
            if name is not None and name not in self.versions:
                known = ", ".join(self.versions) or "none"
                return (
                    f"field {where!r} names {name!r}, which is not a recorded version "
                    f"(have {known})"
                )
        return None


class _JournalLine(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    event: str
    unix: Annotated[float, pydantic.Field(allow_inf_nan=False)]
    state: _State


@dataclass
class RegistryState:
    """What the service should serve."""

    generation: int = 0
    """Incremented by every change; the server reloads when it changes."""
    live: str | None = None
    """The version answering requests (None: the service answers 503)."""
    history: list[str] = field(default_factory=list)
    """Previously live versions, oldest first; ``rollback`` returns to the last one."""
    canary: dict[str, Any] | None = None
    """``{"version": name, "share": 0..1}``: that share of users (by user hash) gets it."""
    shadow: str | None = None
    """A version that gets a copy of every request after the response; never answers."""
    versions: dict[str, SealRecord] = field(default_factory=dict)
    """Every added version, in the order added: its manifest's sha256 (its seal)."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to ``state.json`` and the journal."""
        return {
            "generation": self.generation,
            "live": self.live,
            "history": list(self.history),
            "canary": dict(self.canary) if self.canary else None,
            "shadow": self.shadow,
            "versions": {k: v.model_dump() for k, v in self.versions.items()},
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "registry state") -> RegistryState:
        """The state in ``data`` (parsed JSON), its shape checked.

        Raises:
            RegistryStateError: one line naming ``where`` and the bad field.
        """
        model = validated(_State, data, where, RegistryStateError)
        problem = model.unknown_name()
        if problem:
            raise RegistryStateError(f"{where}: {problem}")
        return cls._from_model(model)

    @classmethod
    def _from_model(cls, model: _State) -> RegistryState:
        return cls(
            generation=model.generation,
            live=model.live,
            history=list(model.history),
            canary=model.canary.model_dump() if model.canary else None,
            shadow=model.shadow,
            versions=dict(model.versions),
        )


class Registry:
    """The registry folder at ``root`` (created on first ``add``)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # ------------------------------------------------------------------ reading

    @property
    def state_path(self) -> Path:
        return self.root / STATE_FILE

    @property
    def journal_path(self) -> Path:
        return self.root / JOURNAL_FILE

    def check_root(self, must_exist: bool = True) -> None:
        """Refuse a ``root`` that is a file, missing (``must_exist``), or a non-empty folder
        that is not a registry (no ``state.json``, ``journal.jsonl`` or ``versions/``).

        Raises:
            UserError: one line naming the folder.
        """
        where = f"registry folder {str(self.root)!r}"
        for parent in self.root.parents:
            if parent.exists() and not parent.is_dir():
                raise UserError(f"{where} is below the file {str(parent)!r}; expected a folder")
        if not self.root.exists():
            if must_exist:
                raise UserError(f"{where} does not exist; create it with 'registry add BUNDLE'")
            return
        if not self.root.is_dir():
            raise UserError(f"{where} is not a folder")
        markers = (STATE_FILE, JOURNAL_FILE, VERSIONS)
        if any((self.root / m).exists() for m in markers):
            return
        try:
            empty = not any(p.name != LOCK_FILE for p in self.root.iterdir())
        except OSError as exc:
            raise UserError(f"{where} cannot be read ({exc.strerror})") from None
        if not empty:
            raise UserError(
                f"{where} is not a registry (it holds no {STATE_FILE}, {JOURNAL_FILE} or "
                f"{VERSIONS}/); expected a folder made by 'registry add'"
            )

    def version_path(self, name: str) -> Path:
        """The folder of version ``name``, inside ``<root>/versions``.

        Raises:
            UserError: the name is malformed.
            RegistryStateError: the folder (or ``versions/``) resolves outside the registry.
        """
        check_version_name(name)
        folder = self.root / VERSIONS / name
        versions = (self.root / VERSIONS).resolve()
        if (self.root / VERSIONS).exists() and versions.parent != self.root.resolve():
            raise RegistryStateError(
                f"registry folder {str(self.root / VERSIONS)!r} resolves to {str(versions)!r}, "
                "outside the registry; expected a plain folder"
            )
        if folder.is_symlink() or (folder.exists() and folder.resolve().parent != versions):
            raise RegistryStateError(
                f"version folder {str(folder)!r} is a link to {str(folder.resolve())!r}; "
                "expected a plain folder inside the registry"
            )
        return folder

    def read_state(self) -> RegistryState:
        """The current state: ``state.json``, or, when it is missing, the journal's last
        state; an empty state before anything was added.

        Raises:
            RegistryStateError: ``state.json`` or the journal is unreadable or of the wrong
                shape (one line naming the file and the field), or ``root`` is a file.
        """
        if self.root.exists() and not self.root.is_dir():
            raise RegistryStateError(f"registry folder {str(self.root)!r} is not a folder")
        if self.state_path.exists() or self.state_path.is_symlink():
            try:
                data = self._read(self.state_path, "registry state")
                return RegistryState.from_dict(data, f"registry state {str(self.state_path)!r}")
            except RegistryStateError as exc:
                if not self.journal_path.is_file():
                    raise
                raise RegistryStateError(
                    f"{exc}; remove it to rebuild the state from {str(self.journal_path)!r}"
                ) from None
        journal = self._journal_state()
        return journal if journal is not None else RegistryState()

    def state(self) -> RegistryState:
        """Same as :meth:`read_state`."""
        return self.read_state()

    @staticmethod
    def _read(path: Path, what: str) -> Any:
        try:
            return read_json(path, what)
        except DataError as exc:
            raise RegistryStateError(str(exc)) from None

    def _journal_lines(self) -> tuple[list[_JournalLine], int]:
        """Valid journal lines and the byte length of the whole lines (a torn last line,
        without its newline or not JSON, is left out and not counted)."""
        path = self.journal_path
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return [], 0
        except OSError as exc:
            raise RegistryStateError(
                f"registry journal {str(path)!r} cannot be read ({exc.strerror})"
            ) from None
        lines = raw.split(b"\n")
        whole = len(raw) - len(lines[-1])  # bytes up to the last newline
        body = lines[:-1]
        if lines[-1].strip():  # no newline at the end: torn by a crash mid-append
            pass
        elif body and not _parses(body[-1]):  # a last line that does not parse: torn
            whole -= len(body[-1]) + 1
            body = body[:-1]
        out = []
        for number, line in enumerate(body, 1):
            if not line.strip():
                continue
            where = f"registry journal {str(path)!r} line {number}"
            try:
                data = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                raise RegistryStateError(f"{where} is not valid JSON") from None
            entry = validated(_JournalLine, data, where, RegistryStateError)
            problem = entry.state.unknown_name()
            if problem:
                raise RegistryStateError(f"{where}: state {problem}")
            out.append(entry)
        return out, whole

    def _journal_state(self) -> RegistryState | None:
        lines, _ = self._journal_lines()
        return RegistryState._from_model(lines[-1].state) if lines else None

    def history_events(self) -> list[dict[str, Any]]:
        """Every change recorded in the journal: ``{"event", "unix", "generation", "live"}``."""
        lines, _ = self._journal_lines()
        return [
            {
                "event": x.event,
                "unix": x.unix,
                "generation": x.state.generation,
                "live": x.state.live,
            }
            for x in lines
        ]

    def versions(self) -> list[str]:
        """Added versions, in the order they were added."""
        return list(self.read_state().versions)

    def describe(self) -> list[dict[str, Any]]:
        """One row per version: name, role (live/canary/shadow/previous), summary.

        Raises:
            RegistryStateError: the state or a version's manifest is unreadable.
        """
        state = self.read_state()
        rows = []
        for name in state.versions:
            folder = self.version_path(name)
            manifest = inspect_bundle(folder, check_files=False).manifest
            roles = []
            if name == state.live:
                roles.append("live")
            if state.canary and state.canary["version"] == name:
                roles.append(f"canary {state.canary['share']:.0%}")
            if name == state.shadow:
                roles.append("shadow")
            if name in state.history:
                roles.append("previous")
            rows.append(
                {
                    "version": name,
                    "roles": roles,
                    "items": manifest["items"],
                    "index": manifest["index_kind"],
                    "quantization": manifest["quantization"],
                    "created_unix": manifest["created_unix"],
                }
            )
        return rows

    def load(self, name: str) -> ServingBundle:
        """Load version ``name``, verified against the seal ``add`` recorded (every file's
        sha256, the manifest's sha256, the signature when a key is set).

        Raises:
            UserError: the name is malformed or not a recorded version.
            DataError: the version does not verify.
        """
        record = self._record(self.read_state(), name)
        return load_bundle(self.version_path(name), manifest_sha256=record.manifest_sha256)

    # ------------------------------------------------------------------ writing

    @contextlib.contextmanager
    def _locked(self, event: str | list[str], create: bool = False) -> Iterator[RegistryState]:
        """Hold the registry lock; yield the state; if it changed, journal it and write it
        back (generation + 1) on exit. A missing root is created only with ``create``
        (``add``); otherwise an empty state is yielded and nothing is written. ``event`` is
        the journal's word for the change (a one-item list the caller may still fill in)."""
        self.check_root(must_exist=False)
        if not self.root.exists() and not create:
            state = RegistryState()
            yield state
            if state != RegistryState():  # pragma: no cover - every change needs a version
                raise UserError(f"registry folder {str(self.root)!r} does not exist")
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self.read_state()
            journal = self._journal_state()
            if journal is not None and journal.generation > state.generation:
                state = journal  # a change journaled but not yet in state.json (a crash)
            before = state.to_dict()
            yield state
            if state.to_dict() != before:
                state.generation += 1
                self._append_journal(event if isinstance(event, str) else event[0], state)
                atomic_write_text(self.state_path, json.dumps(state.to_dict(), indent=1))

    def _append_journal(self, event: str, state: RegistryState) -> None:
        """Append one whole line (a torn tail from a crash is cut off first), fsynced."""
        _, whole = self._journal_lines()
        line = json.dumps({"event": event, "unix": time.time(), "state": state.to_dict()})
        fd = os.open(self.journal_path, os.O_WRONLY | os.O_CREAT, 0o666)
        try:
            os.ftruncate(fd, whole)
            os.lseek(fd, whole, os.SEEK_SET)
            os.write(fd, (line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_path(self.root)

    def _record(self, state: RegistryState, name: str) -> SealRecord:
        check_version_name(name)
        if name not in state.versions:
            known = ", ".join(state.versions) or "none"
            raise UserError(f"version {name!r} is not in registry {str(self.root)!r}; have {known}")
        return state.versions[name]

    def _require(self, state: RegistryState, name: str) -> None:
        """``name`` is a recorded version whose folder still verifies against its seal."""
        record = self._record(state, name)
        inspect_bundle(self.version_path(name), manifest_sha256=record.manifest_sha256)

    def add(self, bundle: str | Path, name: str | None = None) -> str:
        """Verify ``bundle`` and copy its sealed files in as version ``name`` (default
        ``v<N+1>``); record the manifest's sha256.

        Raises:
            DataError: the bundle does not verify (nothing is added).
            UserError: the name is taken or malformed, or the root is not a registry.
        """
        if name is not None:
            check_version_name(name)
        self.check_root(must_exist=False)
        seal = inspect_bundle(bundle)
        source = Path(bundle)
        event = ["add"]
        with self._locked(event, create=True) as state:
            on_disk = []
            if (self.root / VERSIONS).is_dir():
                on_disk = [p.name for p in (self.root / VERSIONS).iterdir()]
            if name is None:
                taken = [*state.versions, *on_disk]
                numbers = [int(n[1:]) for n in taken if re.fullmatch(r"v\d+", n)]
                name = f"v{max(numbers, default=0) + 1}"
            event[0] = f"add {name}"
            target = self.version_path(name)
            if name in state.versions or target.exists() or target.is_symlink():
                raise UserError(f"version {name!r} already exists in {str(self.root)!r}")
            with atomic_directory(target) as staging:
                for relative in [*seal.manifest["files"], MANIFEST_FILE]:
                    (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source / relative, staging / relative)
                if seal.signed:
                    shutil.copyfile(source / SIGNATURE_FILE, staging / SIGNATURE_FILE)
                # the copy, too, against the manifest digest verified above
                copied = inspect_bundle(staging, manifest_sha256=seal.manifest_sha256)
                record = SealRecord(
                    manifest_sha256=copied.manifest_sha256,
                    added_unix=time.time(),
                    signed=copied.signed,
                )
                added = {**record.model_dump(), "from": str(source.resolve())}
                (staging / SEAL_FILE).write_text(json.dumps(added))
            state.versions[name] = record
        return name

    def promote(self, name: str) -> RegistryState:
        """Make ``name`` live (the previous live version goes on the rollback history)."""
        check_version_name(name)
        with self._locked(f"promote {name}") as state:
            self._require(state, name)
            if state.live == name:
                raise UserError(f"version {name!r} is already live")
            if state.live is not None:
                state.history.append(state.live)
            state.live = name
            if state.canary and state.canary["version"] == name:
                state.canary = None
            if state.shadow == name:
                state.shadow = None
        return self.read_state()

    def rollback(self) -> RegistryState:
        """Make the previously live version live again."""
        with self._locked("rollback") as state:
            if not state.history:
                raise UserError(
                    f"registry {str(self.root)!r} has no previous live version to roll back to"
                )
            previous = state.history.pop()
            self._require(state, previous)
            state.live = previous
        return self.read_state()

    def set_canary(self, name: str | None, share: float = 0.0) -> RegistryState:
        """Send ``share`` of users (sticky by user hash) to ``name``; ``None`` stops it."""
        if name is not None:
            check_version_name(name)
            if not 0.0 < share <= 1.0:  # also refuses nan
                raise UserError(f"canary share {share} is outside (0, 1]")
        with self._locked(f"canary {name or 'off'}") as state:
            if name is not None:
                self._require(state, name)
            state.canary = None if name is None else {"version": name, "share": float(share)}
        return self.read_state()

    def set_shadow(self, name: str | None) -> RegistryState:
        """Mirror every request to ``name`` after responding; ``None`` stops it."""
        if name is not None:
            check_version_name(name)
        with self._locked(f"shadow {name or 'off'}") as state:
            if name is not None:
                self._require(state, name)
            state.shadow = name
        return self.read_state()


def _parses(line: bytes) -> bool:
    try:
        json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return False
    return True

"""A model registry folder: verified bundles by version and an atomically switched live pointer.

    registry/
      versions/v1/ ...     a verified copy of each added bundle (never modified after add)
      versions/v2/ ...
      state.json           {"generation": 7, "live": "v2", "history": ["v1"],
                            "canary": {"version": "v3", "share": 0.1} | null,
                            "shadow": "v3" | null}
      .lock                serialises read-modify-write of state.json between commands

``state.json`` is replaced atomically (``files.atomic_write_text``), so a server polling it
sees the old state or the new one. A bundle is verified (schema, every file's sha256) when it
is added and again when it is promoted, canaried or shadowed: a corrupt one never goes live.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchrec_recsys.errors import DataError, UserError
from torchrec_recsys.files import atomic_directory, atomic_write_text
from torchrec_recsys.serving.bundle import verify_bundle

STATE_FILE = "state.json"
VERSIONS = "versions"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "live": self.live,
            "history": self.history,
            "canary": self.canary,
            "shadow": self.shadow,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RegistryState:
        return cls(
            generation=int(data.get("generation", 0)),
            live=data.get("live"),
            history=list(data.get("history", [])),
            canary=data.get("canary"),
            shadow=data.get("shadow"),
        )


class Registry:
    """The registry folder at ``root`` (created on first ``add``)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # ------------------------------------------------------------------ reading

    @property
    def state_path(self) -> Path:
        return self.root / STATE_FILE

    def version_path(self, name: str) -> Path:
        return self.root / VERSIONS / name

    def state(self) -> RegistryState:
        """The current state (an empty one before anything was promoted)."""
        try:
            return RegistryState.from_dict(json.loads(self.state_path.read_text()))
        except FileNotFoundError:
            return RegistryState()
        except (json.JSONDecodeError, TypeError, ValueError) as exc:
            raise DataError(
                f"registry state {str(self.state_path)!r} is unreadable ({exc})"
            ) from None

    def versions(self) -> list[str]:
        """Added versions, in the order they were added."""
        folder = self.root / VERSIONS
        if not folder.is_dir():
            return []
        names = [p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
        return sorted(
            names,
            key=lambda n: (
                (self.version_path(n) / "added.json").stat().st_mtime_ns
                if (self.version_path(n) / "added.json").exists()
                else 0
            ),
        )

    def describe(self) -> list[dict[str, Any]]:
        """One row per version: name, role (live/canary/shadow/previous), summary."""
        state = self.state()
        rows = []
        for name in self.versions():
            manifest = json.loads((self.version_path(name) / "manifest.json").read_text())
            roles = []
            if name == state.live:
                roles.append("live")
            if state.canary and state.canary.get("version") == name:
                roles.append(f"canary {state.canary['share']:.0%}")
            if name == state.shadow:
                roles.append("shadow")
            if name in state.history:
                roles.append("previous")
            rows.append(
                {
                    "version": name,
                    "roles": roles,
                    "items": manifest.get("items"),
                    "index": manifest.get("index_kind"),
                    "quantization": manifest.get("quantization"),
                    "created_unix": manifest.get("created_unix"),
                }
            )
        return rows

    # ------------------------------------------------------------------ writing

    @contextlib.contextmanager
    def _locked(self) -> Iterator[RegistryState]:
        """Hold the registry lock; yield the state; write it back (generation + 1) on exit."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self.state()
            before = state.to_dict()
            yield state
            if state.to_dict() != before:
                state.generation += 1
                atomic_write_text(self.state_path, json.dumps(state.to_dict(), indent=1))

    def _require(self, name: str) -> None:
        if not self.version_path(name).is_dir():
            known = ", ".join(self.versions()) or "none"
            raise UserError(f"version {name!r} is not in registry {str(self.root)!r}; have {known}")
        verify_bundle(self.version_path(name))

    def add(self, bundle: str | Path, name: str | None = None) -> str:
        """Verify ``bundle`` and copy it in as version ``name`` (default ``v<N+1>``).

        Raises:
            DataError: the bundle does not verify (nothing is added).
            UserError: the name is taken or malformed.
        """
        manifest = verify_bundle(bundle)
        with self._locked():
            existing = self.versions()
            if name is None:
                numbers = [int(n[1:]) for n in existing if re.fullmatch(r"v\d+", n)]
                name = f"v{max(numbers, default=0) + 1}"
            if not _NAME.match(name):
                raise UserError(
                    f"version name {name!r} is malformed; expected letters, digits, '.', '_', '-'"
                )
            if self.version_path(name).exists():
                raise UserError(f"version {name!r} already exists in {str(self.root)!r}")
            with atomic_directory(self.version_path(name)) as staging:
                shutil.copytree(bundle, staging, dirs_exist_ok=True)
                verify_bundle(staging)  # the copy, too
                (staging / "added.json").write_text(
                    json.dumps(
                        {
                            "added_unix": time.time(),
                            "from": str(Path(bundle).resolve()),
                            "schema": manifest["schema"],
                        }
                    )
                )
        return name

    def promote(self, name: str) -> RegistryState:
        """Make ``name`` live (the previous live version goes on the rollback history)."""
        self._require(name)
        with self._locked() as state:
            if state.live == name:
                raise UserError(f"version {name!r} is already live")
            if state.live is not None:
                state.history.append(state.live)
            state.live = name
            if state.canary and state.canary.get("version") == name:
                state.canary = None
            if state.shadow == name:
                state.shadow = None
        return self.state()

    def rollback(self) -> RegistryState:
        """Make the previously live version live again."""
        with self._locked() as state:
            if not state.history:
                raise UserError(
                    f"registry {str(self.root)!r} has no previous live version to roll back to"
                )
            previous = state.history.pop()
            verify_bundle(self.version_path(previous))
            state.live = previous
        return self.state()

    def set_canary(self, name: str | None, share: float = 0.0) -> RegistryState:
        """Send ``share`` of users (sticky by user hash) to ``name``; ``None`` stops it."""
        if name is not None:
            if not 0.0 < share <= 1.0:
                raise UserError(f"canary share {share} is outside (0, 1]")
            self._require(name)
        with self._locked() as state:
            state.canary = None if name is None else {"version": name, "share": float(share)}
        return self.state()

    def set_shadow(self, name: str | None) -> RegistryState:
        """Mirror every request to ``name`` after responding; ``None`` stops it."""
        if name is not None:
            self._require(name)
        with self._locked() as state:
            state.shadow = name
        return self.state()

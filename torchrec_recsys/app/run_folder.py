"""Run folders: naming, the newest run, the per-folder lock and the run's metadata file.

    <train.output_dir>/<name>/<run id>/
      .lock          pid + host of the process training into the folder (rank 0), while it runs
      run.json       created_unix (when the run first became valid), name, run id
      config.json, vocab.json, feature_spec.json   written only once the run is known valid
      checkpoints/, tensorboard/, summary.json

Rules: a fresh run never reuses a folder that already holds files; two jobs never train into
one folder at once (the second gets a clear error); a lock is stale, and taken over, when its
process is dead (same host: by pid) or its heartbeat stopped (another host: the holder
touches the file every ``HEARTBEAT_S``; untouched for ``STALE_AFTER_S`` = stale); "newest" is
the ``created_unix`` recorded in ``run.json``, not the folder name.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from torchrec_recsys.config import FeatureConfig
from torchrec_recsys.errors import UserError
from torchrec_recsys.files import atomic_write_text
from torchrec_recsys.training.checkpoint_io import latest_checkpoint

LOCK_FILE = ".lock"
RUN_META_FILE = "run.json"
UNREADABLE_LOCK_GRACE_S = 10.0
"""A lock file that cannot be parsed is taken to be mid-write for this long, then stale."""
HEARTBEAT_S = 15.0
"""The holder touches its lock file this often (a thread), so other hosts can tell it lives."""
STALE_AFTER_S = 60.0
"""A lock from another host (whose pid cannot be checked) untouched this long is stale."""


def run_created(run_dir: Path) -> float:
    """When the run was created: ``run.json``'s ``created_unix``, else its config's mtime."""
    try:
        return float(json.loads((run_dir / RUN_META_FILE).read_text())["created_unix"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    for path in (run_dir / "config.json", run_dir):
        try:
            return path.stat().st_mtime
        except OSError:
            continue
    return 0.0


def newest_run_with_checkpoint(root: Path) -> Path | None:
    """The run under ``root`` with a complete checkpoint created last (by ``run.json``)."""
    runs = [p for p in root.glob("*") if p.is_dir() and latest_checkpoint(p) is not None]
    return max(runs, key=lambda p: (run_created(p), p.name)) if runs else None


def new_run_dir(root: Path) -> Path:
    """``root/<UTC timestamp>``, with ``-1``, ``-2``... when that folder exists already."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    candidate, n = root / stamp, 0
    while candidate.exists():
        n += 1
        candidate = root / f"{stamp}-{n}"
    return candidate


def existing_files(run_dir: Path) -> list[str]:
    """Names in ``run_dir`` other than its lock file (empty if it does not exist)."""
    if not run_dir.is_dir():
        return []
    return sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_FILE)


def write_run_metadata(run_dir: Path, name: str) -> None:
    """Write ``run.json`` (creation time) unless the run has one (a resume keeps its time)."""
    path = run_dir / RUN_META_FILE
    if not path.exists():
        meta = {"created_unix": time.time(), "name": name, "run_id": run_dir.name}
        atomic_write_text(path, json.dumps(meta, indent=2))


class LockHeld(UserError):
    """The run folder's lock is held by a live-looking process."""

    def __init__(self, message: str, other_host: bool) -> None:
        super().__init__(message)
        self.other_host = other_host
        """Held from another host: it may be a dead attempt whose heartbeat has not aged yet."""


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (a zombie, exited but not reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:  # Linux: state is the field after the parenthesised command name
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


@dataclass
class RunLock:
    """The lock on one run folder, held by rank 0 for the whole run.

    ``acquire`` creates the folder if needed (remembering which folders it created);
    ``release`` removes the lock and, when nothing else was written (the run failed before
    it became valid), the folders it created, so a refused run leaves no trace.
    """

    run_dir: Path
    created: list[Path] = field(default_factory=list)
    held: bool = False
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def path(self) -> Path:
        return self.run_dir / LOCK_FILE

    def acquire(self, wait_s: float = 0.0) -> None:
        """Take the lock, replacing a stale one; start its heartbeat.

        Args:
            wait_s: how long to wait for a live-looking lock of another host to go stale (a
                retried job on a cluster may start before the dead attempt's heartbeat ends).

        Raises:
            UserError: another live process holds the lock (after ``wait_s``).
        """
        missing = []
        for folder in [self.run_dir, *self.run_dir.parents]:
            if folder.exists():
                break
            missing.append(folder)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(
                f"cannot create run directory {str(self.run_dir)!r}: {e.strerror}"
            ) from None
        self.created = missing  # innermost first
        info = {"pid": os.getpid(), "host": socket.gethostname(), "created_unix": time.time()}
        deadline = time.monotonic() + wait_s
        waited = False
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    self._take_over_if_stale()
                except LockHeld as held:
                    if not held.other_host or time.monotonic() >= deadline:
                        raise
                    if not waited:
                        print(f"waiting up to {wait_s:.0f} s for the lock {self.path}", flush=True)
                        waited = True
                    time.sleep(1.0)
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(info, handle)
            self.held = True
            threading.Thread(target=self._heartbeat, daemon=True, name="run-lock").start()
            return

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                return

    def _take_over_if_stale(self) -> None:
        try:
            holder: dict[str, Any] = json.loads(self.path.read_text())
            pid, host = int(holder["pid"]), str(holder["host"])
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError):
            try:
                age = time.time() - self.path.stat().st_mtime
            except OSError:
                return
            if age < UNREADABLE_LOCK_GRACE_S:
                raise LockHeld(
                    f"run folder {str(self.run_dir)!r} is being locked by another process "
                    f"right now ({str(self.path)!r}); try again",
                    other_host=False,
                ) from None
            self.path.unlink(missing_ok=True)
            return
        here = socket.gethostname()
        if host == here:
            stale = pid == os.getpid() or not _pid_alive(pid)
        else:
            try:
                stale = time.time() - self.path.stat().st_mtime > STALE_AFTER_S
            except FileNotFoundError:
                return
        if stale:
            print(
                f"taking over the stale lock of process {pid} on {host!r} in {self.run_dir}",
                flush=True,
            )
            self.path.unlink(missing_ok=True)
            return
        raise LockHeld(
            f"run folder {str(self.run_dir)!r} is in use by process {pid} on {host!r} (lock file "
            f"{str(self.path)!r}); wait for that job to end, use another --run-id, or delete "
            f"the lock file if that process is gone",
            other_host=host != here,
        )

    def release(self) -> None:
        """Remove the lock; then remove the folders ``acquire`` created if they are empty."""
        if not self.held:
            return
        self._stop.set()
        self.path.unlink(missing_ok=True)
        self.held = False
        for folder in self.created:
            try:
                folder.rmdir()  # only succeeds when empty
            except OSError:
                break


SHAPE_KEYS = (
    "model.name",
    "model.dense_arch_layers",
    "model.over_arch_layers",
    "model.tower_layers",
    *(f"features.{f.name}" for f in dataclasses.fields(FeatureConfig)),
    "semantic_ids.enabled",
)
"""Config keys (or whole sections) that decide the model's parameters: a resume must keep them."""


def check_resume_config(run_dir: Path, config: dict[str, Any]) -> None:
    """Fail early, naming the keys, when a resume changes what the checkpoint's model is.

    Args:
        run_dir: the run being resumed (its ``config.json`` is what it was trained with).
        config: the resolved config of this attempt, as plain data.

    Raises:
        UserError: a :data:`SHAPE_KEYS` value differs from the run's ``config.json``.
    """
    try:
        saved = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return  # an old or damaged run: the checkpoint load reports any mismatch

    def get(tree: dict[str, Any], dotted: str) -> Any:
        for part in dotted.split("."):
            tree = tree.get(part, {}) if isinstance(tree, dict) else {}
        return tree

    changed = [
        f"{key} ({get(saved, key)!r} -> {get(config, key)!r})"
        for key in SHAPE_KEYS
        if get(saved, key) != get(config, key)
    ]
    if changed:
        raise UserError(
            f"cannot resume {str(run_dir)!r}: this run changes {'; '.join(changed)}, which "
            f"the checkpoint's model was built with; resume with the run's settings or start "
            f"a new run"
        )

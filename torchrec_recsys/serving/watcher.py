"""The registry watcher: follows ``state.json`` and swaps one immutable :class:`Routing` in.

    every poll_seconds: read the state -> unchanged?           nothing to do (clears a problem)
                                       -> unreadable, wrong shape, missing while serving,
                                          a version that fails to load?
                                                               keep serving the last good
                                                               routing; report the problem
                                                               (``/healthz`` degraded,
                                                               ``last_reload_error``, metric);
                                                               retry it with a backoff
                                       -> a new good state?    load the versions, swap in

Requests already running keep the version they started with. Whatever goes wrong inside a
poll is caught and reported; the thread never dies of it (and ``/healthz`` says so if it
ever stops).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torchrec_recsys.serving.bundle import ServingBundle
from torchrec_recsys.serving.drift import DriftAccumulator
from torchrec_recsys.serving.registry import Registry
from torchrec_recsys.serving.routing import Routing

log = logging.getLogger("torchrec_recsys.serving")

FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 60.0
STUCK_SECONDS = 120.0
"""A poll running longer than this (and 20 poll periods) is reported as stuck (a state file
that never finishes reading, a load that hangs); the last good version keeps serving."""


@dataclass
class LoadedVersion:
    """A loaded bundle with its own drift window."""

    name: str
    bundle: ServingBundle
    drift: DriftAccumulator
    candidates: int


def _fingerprint(state: Any) -> tuple[Any, ...]:
    """What decides the routing of a state (a change of any part means a reload)."""
    return (state.generation, state.live, repr(state.canary), state.shadow)


def _canary(canary: Any) -> tuple[str | None, Any]:
    """(version, share) of a state's canary: a ``{"version", "share"}`` mapping or an
    object with those attributes; (None, 0) without one."""
    if canary is None:
        return None, 0.0
    if isinstance(canary, dict):
        return canary.get("version"), canary.get("share", 0.0)
    if hasattr(canary, "version"):
        return canary.version, getattr(canary, "share", 0.0)
    raise ValueError(f"canary {canary!r:.80} is not a {{'version', 'share'}} mapping")


class ModelStore:
    """Loads registry versions and holds the current :class:`Routing` (swapped atomically).

    ``on_reload(outcome)`` is called once per reload outcome (``"ok"`` / ``"failed"``); a
    problem that persists over many polls counts once.
    """

    def __init__(
        self,
        registry: Registry,
        candidates: int,
        drift_window_seconds: float,
        on_reload: Callable[[str], None] | None = None,
    ) -> None:
        self.registry = registry
        self.candidates = candidates
        self.drift_window_seconds = drift_window_seconds
        self.on_reload = on_reload or (lambda outcome: None)
        self.routing: Routing[LoadedVersion] = Routing(generation=-1, live=None, live_name=None)
        self.last_error: str | None = None
        self._fingerprint: tuple[Any, ...] | None = None
        self._failed: tuple[tuple[Any, ...] | None, float, float] | None = None
        """(fingerprint that failed, monotonic time of the next try, backoff seconds)."""
        self._loaded: dict[str, LoadedVersion] = {}

    def _load(self, name: str) -> LoadedVersion:
        if name in self._loaded:
            return self._loaded[name]
        start = time.perf_counter()
        bundle = self.registry.load(name)  # (verified against the seal 'add' recorded)
        spec = bundle.retriever.data.spec
        version = LoadedVersion(
            name=name,
            bundle=bundle,
            drift=DriftAccumulator(bundle.stats, spec, self.drift_window_seconds),
            candidates=min(self.candidates, bundle.index.ntotal),
        )
        log.info("loaded version %s in %.2f s", name, time.perf_counter() - start)
        return version

    def refresh(self) -> None:
        """Apply the registry state if it changed; on any problem keep the old routing."""
        try:
            state = self.registry.state()
            key = _fingerprint(state)
        except Exception as exc:  # noqa: BLE001 - unreadable or wrong-shaped state: keep serving
            self.fail(None, f"registry state unreadable: {type(exc).__name__}: {exc}")
            return
        if state.live is None and self.routing.live is not None:
            self.fail(
                key,
                f"registry state {str(self.registry.state_path)!r} is missing or names no live "
                f"version; still serving {self.routing.live_name}",
            )
            return
        if key == self._fingerprint:
            self._check_live_folder()
            return
        if (
            self._failed is not None
            and self._failed[0] == key
            and time.monotonic() < self._failed[1]
        ):
            return  # the same bad state: retried after the backoff
        try:
            routing = self._routing_for(state)
        except Exception as exc:  # noqa: BLE001 - any load failure keeps the old version live
            self.fail(key, f"{type(exc).__name__}: {exc}")
            return
        # the rollback target stays loaded (it was live), so a rollback switches at once
        history = list(state.history) if state.history else []
        keep = {routing.live_name, routing.canary_name, routing.shadow_name}
        keep.add(history[-1] if history else None)
        self._loaded = {n: v for n, v in self._loaded.items() if n in keep}
        for version in (routing.live, routing.canary, routing.shadow):
            if version is not None:
                self._loaded[version.name] = version
        self.routing = routing  # one reference assignment: requests see old or new
        self._fingerprint = key
        self._failed = None
        self.last_error = None
        self.on_reload("ok")
        log.info(
            "serving generation %d: live=%s canary=%s (%.0f%%) shadow=%s",
            state.generation,
            routing.live_name,
            routing.canary_name,
            100 * routing.canary_share,
            routing.shadow_name,
        )

    def _check_live_folder(self) -> None:
        """The state is the one being served: clear an old problem, unless the live version's
        folder vanished (it keeps serving from memory, reported)."""
        name = self.routing.live_name
        try:
            vanished = name is not None and not self.registry.version_path(name).is_dir()
        except Exception:  # noqa: BLE001 - a name the registry refuses counts as vanished
            vanished = True
        if vanished:
            self.fail(
                self._fingerprint,
                f"version folder of {name} vanished from the registry; serving it from memory",
            )
        elif self.last_error is not None:
            log.info("registry state is good again; serving %s", name)
            self.last_error = None
            self._failed = None

    def fail(self, key: tuple[Any, ...] | None, message: str) -> None:
        """Record a problem; the routing stays as it is."""
        previous = self._failed
        delay = FIRST_RETRY_SECONDS
        if previous is not None and previous[0] == key:
            delay = min(2 * previous[2], MAX_RETRY_SECONDS)
        self._failed = (key, time.monotonic() + delay, delay)
        if message != self.last_error:  # counted and logged once per problem, not per poll
            self.on_reload("failed")
            log.error(
                "registry reload failed, still serving %s: %s", self.routing.live_name, message
            )
        self.last_error = message

    def _routing_for(self, state: Any) -> Routing[LoadedVersion]:
        live = self._load(state.live) if state.live else None
        canary = None
        share = 0.0
        canary_name, canary_share = _canary(state.canary)
        if canary_name and state.live:
            canary = self._load(canary_name)
            share = float(canary_share)
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"canary share {share} is outside [0, 1]")
        shadow = self._load(state.shadow) if state.shadow and state.live else None
        return Routing(
            generation=int(state.generation),
            live=live,
            live_name=state.live,
            canary=canary,
            canary_name=canary.name if canary else None,
            canary_share=share,
            shadow=shadow,
            shadow_name=shadow.name if shadow else None,
        )


class RegistryWatcher:
    """The thread that calls ``store.refresh()`` every ``poll_seconds`` and survives it."""

    def __init__(self, store: ModelStore, poll_seconds: float) -> None:
        self.store = store
        self.poll_seconds = poll_seconds
        self.errors = 0
        """Unexpected exceptions caught in the loop (each reported, none fatal)."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._poll_started: float | None = None
        """Monotonic start of the poll in progress (None between polls)."""

    def start(self) -> None:
        """Apply the current state once (in the caller's thread), then poll in the background."""
        self._poll()
        self._thread = threading.Thread(target=self._watch, name="registry-watch", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """False once started and the thread is gone (``/healthz`` reports it)."""
        return self._thread is None or self._thread.is_alive() or self._stop.is_set()

    @property
    def problem(self) -> str | None:
        """Why the watcher does not follow the registry right now (stopped, or one poll
        stuck), or None."""
        if not self.alive:
            return "the registry watcher stopped"
        started = self._poll_started
        if started is not None:
            running = time.monotonic() - started
            if running > max(STUCK_SECONDS, 20 * self.poll_seconds):
                return f"the registry watcher has been stuck in one poll for {running:.0f} s"
        return None

    def _poll(self) -> None:
        self._poll_started = time.monotonic()
        try:
            self.store.refresh()
        except Exception as exc:  # noqa: BLE001 - never let the watcher die silently
            self.errors += 1
            log.exception("registry watcher error; still serving %s", self.store.routing.live_name)
            self.store.fail(None, f"registry watcher error: {type(exc).__name__}: {exc}")
        finally:
            self._poll_started = None

    def _watch(self) -> None:
        while True:
            try:
                if self._stop.wait(self.poll_seconds):
                    return
            except Exception:  # noqa: BLE001 - e.g. a period too long for the clock
                log.exception("registry watcher cannot wait %s s", self.poll_seconds)
                self._stop.wait(1.0)
            self._poll()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

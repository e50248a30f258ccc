"""The registry watcher under bad or missing state: the last good version keeps serving,
``/healthz`` says ``degraded`` with the problem, a metric says so, and the next good state
is followed; an exception inside the watcher is caught and reported, never fatal.

Versions load as fakes (tests/_serving_fakes.py): what is tested is the watcher's handling
of the registry folder, not bundle loading.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _asgi import call
from _serving_fakes import fake_service, write_state

from torchrec_recsys.serving import watcher
from torchrec_recsys.serving.service import RecommendService


@pytest.fixture
def served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Any, RecommendService]]:
    monkeypatch.setattr(watcher, "FIRST_RETRY_SECONDS", 0.0)  # retry a failed state at once
    app, service = fake_service(tmp_path, monkeypatch)
    try:
        yield app, service
    finally:
        service.stop()


def _health(app: Any) -> tuple[int, dict[str, Any]]:
    answer = call(app, "GET", "/healthz")
    return answer.status, answer.json()


def _degraded_metric(app: Any) -> float:
    text = call(app, "GET", "/metrics").text
    line = next(x for x in text.splitlines() if x.startswith("recsys_registry_degraded "))
    return float(line.split()[-1])


BAD_STATES: dict[str, Callable[[Path], None]] = {
    "deleted": lambda root: (root / "state.json").unlink(),
    "a list": lambda root: (root / "state.json").write_text("[]"),
    "an empty object": lambda root: (root / "state.json").write_text("{}"),
    "garbage": lambda root: (root / "state.json").write_bytes(b"\x00\xffnot json"),
    "truncated": lambda root: (root / "state.json").write_text('{"generation": 3, "li'),
    "a string": lambda root: (root / "state.json").write_text('"v2"'),
    "wrong field types": lambda root: (root / "state.json").write_text(
        '{"generation": "many", "live": ["v2"], "history": 5, "canary": "v2"}'
    ),
    "a canary of the wrong shape": lambda root: write_state(root, "v2", 9, canary=["v2"]),
    "a canary share out of range": lambda root: write_state(
        root, "v1", 9, canary={"version": "v2", "share": 7}
    ),
    "a folder": lambda root: ((root / "state.json").unlink(), (root / "state.json").mkdir()),
    "a live version that vanished": lambda root: write_state(root, "gone", 9),
}


@pytest.mark.parametrize("case", sorted(BAD_STATES))
def test_bad_state_keeps_the_last_good_version_and_says_so(served, case: str) -> None:  # type: ignore[no-untyped-def]
    app, service = served
    root = service.store.registry.root
    status, health = _health(app)
    assert (status, health["status"], health["live"]) == (200, "ok", "v1")
    assert _degraded_metric(app) == 0
    before = service.store.routing
    BAD_STATES[case](root)
    for _ in range(3):  # polls of the same bad state: one failure counted, routing unchanged
        service.watcher._poll()
    status, health = _health(app)
    assert status == 200 and health["status"] == "degraded" and health["live"] == "v1"
    assert health["last_reload_error"] and health["problems"]
    assert service.store.routing is before
    assert _degraded_metric(app) == 1
    text = call(app, "GET", "/metrics").text
    assert 'recsys_reloads_total{outcome="failed"} 1.0' in text
    # the next good state is followed and the problem clears
    if (root / "state.json").is_dir():
        (root / "state.json").rmdir()
    write_state(root, "v2", 10)
    service.watcher._poll()
    status, health = _health(app)
    assert (status, health["status"], health["live"]) == (200, "ok", "v2")
    assert health["last_reload_error"] is None and _degraded_metric(app) == 0


def test_a_restored_state_clears_the_problem(served) -> None:  # type: ignore[no-untyped-def]
    app, service = served
    root = service.store.registry.root
    saved = (root / "state.json").read_bytes()
    (root / "state.json").unlink()
    service.watcher._poll()
    assert _health(app)[1]["status"] == "degraded"
    (root / "state.json").write_bytes(saved)  # the very state being served
    service.watcher._poll()
    assert _health(app)[1]["status"] == "ok"


def test_a_version_that_fails_to_load_is_retried_when_it_comes_back(served) -> None:  # type: ignore[no-untyped-def]
    app, service = served
    root = service.store.registry.root
    write_state(root, "v2", 5)  # v2 recorded, then its folder goes away
    shutil.move(root / "versions" / "v2", root / "v2-elsewhere")
    service.watcher._poll()
    status, health = _health(app)
    assert health["live"] == "v1" and "v2" in health["last_reload_error"]
    shutil.move(root / "v2-elsewhere", root / "versions" / "v2")  # same state, folder back
    service.watcher._poll()
    assert _health(app)[1]["live"] == "v2" and _health(app)[1]["status"] == "ok"


def test_the_live_folder_vanishing_is_reported_while_it_serves_from_memory(served) -> None:  # type: ignore[no-untyped-def]
    app, service = served
    root = service.store.registry.root
    shutil.move(root / "versions" / "v1", root / "v1-elsewhere")
    service.watcher._poll()
    status, health = _health(app)
    assert (status, health["status"], health["live"]) == (200, "degraded", "v1")
    assert "vanished" in health["last_reload_error"]
    shutil.move(root / "v1-elsewhere", root / "versions" / "v1")
    service.watcher._poll()
    assert _health(app)[1]["status"] == "ok"


def test_an_exception_inside_the_watcher_thread_is_caught_and_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, service = fake_service(tmp_path, monkeypatch)
    service.watcher.stop()  # restart the watcher with a short poll
    service.watcher = watcher.RegistryWatcher(service.store, poll_seconds=0.01)
    calls = []
    real = service.store.refresh

    def flaky() -> None:
        calls.append(1)
        if len(calls) <= 3:
            raise RuntimeError("a bug in a poll")
        real()

    monkeypatch.setattr(service.store, "refresh", flaky)
    service.watcher.start()
    try:
        deadline = time.monotonic() + 10  # bounded
        while len(calls) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert service.watcher.alive and service.watcher.errors == 3
        write_state(service.store.registry.root, "v2", 4)
        while _health(app)[1]["live"] != "v2" and time.monotonic() < deadline:
            time.sleep(0.01)
        status, health = _health(app)
        assert (status, health["status"], health["live"]) == (200, "ok", "v2")
    finally:
        service.stop()


def test_a_stopped_watcher_thread_is_reported(served, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    app, service = served
    monkeypatch.setattr(type(service.watcher), "alive", property(lambda self: False))
    status, health = _health(app)
    assert status == 200 and health["status"] == "degraded"
    assert "watcher stopped" in health["last_reload_error"]
    assert _degraded_metric(app) == 1


def test_no_state_and_nothing_served_is_not_a_problem(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    app, service = fake_service(tmp_path, monkeypatch)
    try:
        write_state(service.store.registry.root, None, 0)
        (service.store.registry.root / "state.json").unlink()
        fresh = type(service)(service.config)
        fresh.start()
        try:
            status, body = fresh.health()
            assert status == 503 and body["status"] == "no_live_version"
            assert body["last_reload_error"] is None
        finally:
            fresh.stop()
    finally:
        service.stop()


def test_a_stuck_poll_is_reported_while_the_last_version_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, service = fake_service(tmp_path, monkeypatch)
    service.watcher.stop()
    service.watcher = watcher.RegistryWatcher(service.store, poll_seconds=0.01)
    monkeypatch.setattr(watcher, "STUCK_SECONDS", 0.05)
    release = threading.Event()
    monkeypatch.setattr(service.store, "refresh", lambda: release.wait(10))  # bounded
    service.watcher._thread = threading.Thread(target=service.watcher._watch, daemon=True)
    service.watcher._thread.start()
    try:
        deadline = time.monotonic() + 10
        while _health(app)[1]["status"] != "degraded" and time.monotonic() < deadline:
            time.sleep(0.01)
        status, health = _health(app)
        assert (status, health["status"], health["live"]) == (200, "degraded", "v1")
        assert "stuck in one poll" in health["last_reload_error"]
        release.set()
        while _health(app)[1]["status"] != "ok" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _health(app)[1]["status"] == "ok"
    finally:
        release.set()
        service.stop()

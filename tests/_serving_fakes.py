"""A serving stack without models: a registry folder whose versions load as fakes.

The HTTP limits, the origin and token checks, the registry watcher and the health report are
the service's own code; only ``ModelStore._load`` is replaced (no bundle is trained), so these
tests run in milliseconds. Answers that need a real model are tested in tests/serving.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchrec_recsys.serving.registry import Registry
from torchrec_recsys.serving.service import RecommendService, ServiceConfig, create_app
from torchrec_recsys.serving.watcher import ModelStore

TOKEN = "fake-admin-token-0123456789abcdef"


@dataclass
class FakeDrift:
    resets: int = 0

    def reset(self) -> None:
        self.resets += 1

    def report(self, *_: Any) -> dict[str, Any]:
        return {"requests": 7, "features": [], "flagged": [], "enough_requests": False}


@dataclass
class FakeVersion:
    name: str
    candidates: int = 10
    drift: FakeDrift = field(default_factory=FakeDrift)


def write_state(registry: Path, live: str | None, generation: int, **extra: Any) -> None:
    """Write ``state.json`` by hand; every folder under ``versions/`` is recorded as added
    (with a placeholder seal: the fakes load no bundle files)."""
    folders = sorted(p.name for p in (registry / "versions").glob("*") if p.is_dir())
    seal = {"manifest_sha256": "0" * 64, "added_unix": 1.0, "signed": False}
    state = {"generation": generation, "live": live, "history": [], "canary": None}
    state.update({"shadow": None, "versions": {name: seal for name in folders}, **extra})
    (registry / "state.json").write_text(json.dumps(state))


def make_registry(root: Path, versions: tuple[str, ...] = ("v1", "v2")) -> Registry:
    """A registry folder with empty version folders and ``v1`` live."""
    for name in versions:
        (root / "versions" / name).mkdir(parents=True)
    write_state(root, "v1", 1)
    return Registry(root)


def fake_loads(monkeypatch: Any, broken: set[str] | None = None) -> list[str]:
    """Make ``ModelStore._load`` return fakes (raising for names in ``broken`` or without a
    folder); returns the list of names loaded, in order."""
    loaded: list[str] = []
    broken = broken if broken is not None else set()

    def load(self: ModelStore, name: str) -> FakeVersion:
        if name in self._loaded:
            return self._loaded[name]  # type: ignore[return-value]
        if name in broken or not self.registry.version_path(name).is_dir():
            raise FileNotFoundError(f"version {name} cannot be loaded")
        loaded.append(name)
        return FakeVersion(name)

    monkeypatch.setattr(ModelStore, "_load", load)
    return loaded


def fake_service(tmp_path: Path, monkeypatch: Any, **settings: Any) -> tuple[Any, RecommendService]:
    """(app, service) over a fake registry in ``tmp_path``, started, token ``TOKEN``."""
    monkeypatch.setenv("TORCHREC_RECSYS_ADMIN_TOKEN", TOKEN)
    make_registry(tmp_path / "registry")
    fake_loads(monkeypatch)
    config = ServiceConfig(
        registry=tmp_path / "registry",
        log_dir=tmp_path / "logs",
        poll_seconds=3600,  # tests call refresh() themselves
        bind_host="127.0.0.1",
        **settings,
    )
    app = create_app(config)
    service: RecommendService = app.state.service
    service.start()
    return app, service

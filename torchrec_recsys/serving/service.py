"""The HTTP service: retrieve-then-rank for the registry's live version (FastAPI + uvicorn).

    POST /recommend {user_id, k, history?}
        -> bounded admission (503 at once when ``max_concurrency`` requests are in flight),
           then one of ``workers`` threads (more threads than cores only thrash)
        -> routing (live, or canary by user hash), a version held for the whole request
        -> serving.online.recommend_online in a worker thread (the offline recommend's steps,
           batches gathered from feature rows taken when the version loaded)
        -> response; impression log row; drift counts; shadow copy after the response
    GET /healthz   live / canary / shadow versions, last reload error (503 without live)
    GET /metrics   Prometheus text: requests, latency, errors, per-version, drift gauges
    GET /drift     drift report of the live version's current window; POST /drift/reset

A watcher thread polls the registry's ``state.json``; on a change it loads the new versions
in the background and swaps one immutable :class:`Routing` in. Requests already running keep
the version they started with; a version that fails to load is logged and the old routing
keeps serving.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
import torch
from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from torchrec_recsys.errors import UserError
from torchrec_recsys.serving.bundle import ServingBundle, load_bundle
from torchrec_recsys.serving.drift import (
    DEFAULT_MIN_REQUESTS,
    DEFAULT_PSI_THRESHOLD,
    DEFAULT_UNSEEN_THRESHOLD,
    DriftAccumulator,
)
from torchrec_recsys.serving.impressions import ImpressionLog
from torchrec_recsys.serving.online import recommend_online
from torchrec_recsys.serving.registry import Registry, RegistryState
from torchrec_recsys.serving.routing import Routing

log = logging.getLogger("torchrec_recsys.serving")

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.025,
    0.035,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


@dataclass
class ServiceConfig:
    """Settings of one server process."""

    registry: Path
    """Registry folder (``registry`` command)."""
    max_k: int = 100
    """Largest ``k`` a request may ask for."""
    candidates: int = 100
    """Items retrieved before ranking (capped at the index size)."""
    max_concurrency: int = 8
    """Requests admitted at once (running or waiting for a worker); one more gets 503 at once."""
    workers: int = 2
    """Requests computed at the same time (worker threads); about the number of cores."""
    poll_seconds: float = 0.5
    """How often the registry state is checked."""
    log_dir: Path | None = None
    """Impression and shadow logs (default: ``<registry>/logs``)."""
    drift_window_seconds: float = 300.0
    """Length of a drift statistics window."""
    psi_threshold: float = DEFAULT_PSI_THRESHOLD
    unseen_threshold: float = DEFAULT_UNSEEN_THRESHOLD
    drift_min_requests: int = DEFAULT_MIN_REQUESTS
    shadow_max_inflight: int = 2
    """Shadow copies running at once; more are dropped (counted), never queued."""


@dataclass
class LoadedVersion:
    """A loaded bundle with its own drift window."""

    name: str
    bundle: ServingBundle
    drift: DriftAccumulator
    candidates: int


class RecommendRequest(BaseModel):
    """Body of ``POST /recommend``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    user_id: str = Field(min_length=1, max_length=256)
    k: int = 10
    history: list[str] | None = Field(default=None, max_length=1000)


@dataclass
class _Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "recsys_requests",
            "Requests by endpoint and status code",
            ["endpoint", "status"],
            registry=r,
        )
        self.version_requests = Counter(
            "recsys_version_requests",
            "Answered recommendations per version and role",
            ["version", "role"],
            registry=r,
        )
        self.latency = Histogram(
            "recsys_request_latency_seconds",
            "Server-side latency of answered requests",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter("recsys_errors", "Failed requests by reason", ["reason"], registry=r)
        self.inflight = Gauge(
            "recsys_inflight_requests",
            "Requests in flight",
            registry=r,
            multiprocess_mode="livesum",  # summed over live processes with --processes N
        )
        self.reloads = Counter(
            "recsys_reloads", "Registry reloads by outcome", ["outcome"], registry=r
        )
        self.cold = Counter("recsys_cold_start", "Answers for unknown users", registry=r)
        self.shadow_overlap = Histogram(
            "recsys_shadow_topk_overlap",
            "Top-k overlap of shadow vs primary",
            buckets=(0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0),
            registry=r,
        )
        self.shadow = Counter(
            "recsys_shadow_requests", "Shadow copies by outcome", ["outcome"], registry=r
        )


class _StateCollector(Collector):
    """Gauges read from this process's state when scraped: the live version and the drift
    of the live and canary windows (computed per scrape, so never stale; with several
    processes, the drift of the answering process's window)."""

    def __init__(self, store: ModelStore, report: Callable[[LoadedVersion], dict[str, Any]]):
        self.store = store
        self.report = report

    def collect(self) -> Iterator[GaugeMetricFamily]:
        routing = self.store.routing
        live = GaugeMetricFamily(
            "recsys_live_version", "1 for the live version", labels=["version"]
        )
        if routing.live_name:
            live.add_metric([routing.live_name], 1)
        labels = ["feature", "version"]
        psi = GaugeMetricFamily(
            "recsys_drift_psi", "PSI of a feature, live window vs training", labels=labels
        )
        unseen = GaugeMetricFamily(
            "recsys_drift_unseen_share", "Share of unseen IDs in the window", labels=labels
        )
        flagged = GaugeMetricFamily(
            "recsys_drift_flagged", "1 when the feature drifted", labels=labels
        )
        window = GaugeMetricFamily(
            "recsys_drift_window_requests", "Requests in the drift window", labels=["version"]
        )
        for name, version in (
            (routing.live_name, routing.live),
            (routing.canary_name, routing.canary),
        ):
            if name is None or version is None:
                continue
            report = self.report(version)
            window.add_metric([name], report["requests"])
            for row in report["features"]:
                psi.add_metric([row["feature"], name], row["psi"])
                flagged.add_metric([row["feature"], name], int(row["flagged"]))
                if "unseen_share" in row:
                    unseen.add_metric([row["feature"], name], row["unseen_share"])
        yield from (live, psi, unseen, flagged, window)


class ModelStore:
    """Loads registry versions and holds the current :class:`Routing` (swapped atomically)."""

    def __init__(self, config: ServiceConfig, metrics: _Metrics) -> None:
        self.config = config
        self.registry = Registry(config.registry)
        self.metrics = metrics
        self.routing: Routing[LoadedVersion] = Routing(generation=-1, live=None, live_name=None)
        self.last_error: str | None = None
        self._failed_generation: int | None = None
        self._loaded: dict[str, LoadedVersion] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _load(self, name: str) -> LoadedVersion:
        if name in self._loaded:
            return self._loaded[name]
        start = time.perf_counter()
        bundle = load_bundle(self.registry.version_path(name))
        spec = bundle.retriever.data.spec
        version = LoadedVersion(
            name=name,
            bundle=bundle,
            drift=DriftAccumulator(bundle.stats, spec, self.config.drift_window_seconds),
            candidates=min(self.config.candidates, bundle.index.ntotal),
        )
        log.info("loaded version %s in %.2f s", name, time.perf_counter() - start)
        return version

    def refresh(self) -> None:
        """Apply the registry state if it changed; keep the old routing if loading fails."""
        try:
            state = self.registry.state()
        except UserError as exc:
            self._fail(None, str(exc))
            return
        if state.generation in (self.routing.generation, self._failed_generation):
            return
        try:
            routing = self._routing_for(state)
        except Exception as exc:  # noqa: BLE001 - any load failure keeps the old version live
            self._fail(state.generation, f"{type(exc).__name__}: {exc}")
            return
        # the rollback target stays loaded (it was live), so a rollback switches at once
        rollback = state.history[-1] if state.history else None
        keep = {routing.live_name, routing.canary_name, routing.shadow_name, rollback}
        self._loaded = {n: v for n, v in self._loaded.items() if n in keep}
        for name in (routing.live_name, routing.canary_name, routing.shadow_name):
            if name is not None:
                version = {
                    routing.live_name: routing.live,
                    routing.canary_name: routing.canary,
                    routing.shadow_name: routing.shadow,
                }[name]
                assert version is not None
                self._loaded[name] = version
        self.routing = routing  # one reference assignment: requests see old or new
        self.last_error = None
        self._failed_generation = None
        self.metrics.reloads.labels("ok").inc()
        log.info(
            "serving generation %d: live=%s canary=%s (%.0f%%) shadow=%s",
            state.generation,
            routing.live_name,
            routing.canary_name,
            100 * routing.canary_share,
            routing.shadow_name,
        )

    def _fail(self, generation: int | None, message: str) -> None:
        self.last_error = message
        self._failed_generation = generation
        self.metrics.reloads.labels("failed").inc()
        log.error("registry reload failed, still serving %s: %s", self.routing.live_name, message)

    def _routing_for(self, state: RegistryState) -> Routing[LoadedVersion]:
        live = self._load(state.live) if state.live else None
        canary = None
        share = 0.0
        if state.canary and state.canary.get("version") and state.live:
            canary = self._load(state.canary["version"])
            share = float(state.canary.get("share", 0.0))
        shadow = self._load(state.shadow) if state.shadow and state.live else None
        return Routing(
            generation=state.generation,
            live=live,
            live_name=state.live,
            canary=canary,
            canary_name=canary.name if canary else None,
            canary_share=share,
            shadow=shadow,
            shadow_name=shadow.name if shadow else None,
        )

    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._watch, name="registry-watch", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.config.poll_seconds):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _answer(version: LoadedVersion, body: RecommendRequest, observe: bool) -> dict[str, Any]:
    """Run retrieve-then-rank for one request with one loaded version (worker thread)."""
    bundle = version.bundle
    history = body.history or []
    item_vocab = bundle.retriever.data.vocabs["item_id"]
    unknown = [h for h in history if h not in item_vocab]
    answer = recommend_online(
        bundle.retriever,
        bundle.ranker,
        bundle.index,
        bundle.online,
        body.user_id,
        body.k,
        version.candidates,
        history,
    )
    if observe:
        version.drift.observe_row(answer.query_sparse, answer.query_dense)
    result = answer.result
    return {
        "user_id": body.user_id,
        "version": version.name,
        "cold_start": result.cold_start,
        "unknown_history_items": unknown,
        "items": [
            {
                "position": i,
                "item_id": rec.item_id,
                "title": rec.title,
                "retrieval_score": rec.retrieval_score,
                "ranking_score": rec.ranking_score,
            }
            for i, rec in enumerate(result.items, 1)
        ],
    }


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message})


def create_app(config: ServiceConfig) -> FastAPI:
    """The FastAPI application for ``config`` (the registry watcher starts with it)."""
    disable_created_metrics()
    metrics = _Metrics()
    store = ModelStore(config, metrics)
    log_dir = Path(config.log_dir or Path(config.registry) / "logs")
    state: dict[str, Any] = {"inflight": 0, "shadow_inflight": 0}
    workers = anyio.CapacityLimiter(config.workers)  # admitted requests wait here, bounded
    shadow_lock = threading.Lock()
    shadow_log_lock = threading.Lock()

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
        state["impressions"] = ImpressionLog(log_dir)
        await anyio.to_thread.run_sync(store.start)
        yield
        store.stop()
        state["impressions"].close()

    app = FastAPI(title="torchrec_recsys serving", lifespan=lifespan)
    app.state.store = store
    app.state.metrics = metrics

    def _parse(raw: bytes) -> RecommendRequest | JSONResponse:
        """The request body, or the 400/422 answer that names what is wrong with it."""
        endpoint = "/recommend"
        try:
            payload = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            metrics.requests.labels(endpoint, "400").inc()
            metrics.errors.labels("malformed_json").inc()
            return _error(
                400,
                f"request body is not valid JSON ({exc}); expected an object like "
                '{"user_id": "42", "k": 10}',
            )
        if not isinstance(payload, dict):
            metrics.requests.labels(endpoint, "422").inc()
            metrics.errors.labels("invalid_request").inc()
            return _error(
                422, f"request body is a JSON {type(payload).__name__}; expected a JSON object"
            )
        try:
            return RecommendRequest.model_validate(payload)
        except ValidationError as exc:
            parts = []
            for e in exc.errors():
                where = ".".join(str(p) for p in e.get("loc", ())) or "body"
                parts.append(f"field {where!r}: {e.get('msg')}")
            metrics.requests.labels(endpoint, "422").inc()
            metrics.errors.labels("invalid_request").inc()
            return _error(422, "; ".join(parts))

    def _shadow(
        routing: Routing[LoadedVersion],
        body: RecommendRequest,
        primary: dict[str, Any],
        request_id: str,
    ) -> None:
        """Answer a copy with the shadow version; log the comparison (never the response)."""
        shadow = routing.shadow
        if shadow is None:
            return
        with shadow_lock:
            if state["shadow_inflight"] >= config.shadow_max_inflight:
                metrics.shadow.labels("dropped").inc()
                return
            state["shadow_inflight"] += 1
        try:
            start = time.perf_counter()
            other = _answer(shadow, body, observe=False)
            seconds = time.perf_counter() - start
            mine = {i["item_id"]: i for i in primary["items"]}
            theirs = {i["item_id"]: i for i in other["items"]}
            common = sorted(set(mine) & set(theirs))
            overlap = len(common) / max(len(mine), 1)
            record = {
                "request_id": request_id,
                "time": time.time(),
                "user_id": body.user_id,
                "primary_version": primary["version"],
                "shadow_version": shadow.name,
                "topk_overlap": overlap,
                "mean_abs_ranking_delta": (
                    sum(abs(mine[i]["ranking_score"] - theirs[i]["ranking_score"]) for i in common)
                    / len(common)
                    if common
                    else None
                ),
                "mean_abs_retrieval_delta": (
                    sum(
                        abs(mine[i]["retrieval_score"] - theirs[i]["retrieval_score"])
                        for i in common
                    )
                    / len(common)
                    if common
                    else None
                ),
                "primary_latency_ms": primary["latency_ms"],
                "shadow_latency_ms": 1000 * seconds,
                "primary_items": list(mine),
                "shadow_items": list(theirs),
            }
            with shadow_log_lock:
                log_dir.mkdir(parents=True, exist_ok=True)
                with open(log_dir / "shadow.jsonl", "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record) + "\n")
            metrics.shadow_overlap.observe(overlap)
            metrics.shadow.labels("compared").inc()
        except Exception:  # noqa: BLE001 - a shadow failure must never reach a user
            metrics.shadow.labels("failed").inc()
            log.exception("shadow version %s failed", shadow.name)
        finally:
            with shadow_lock:
                state["shadow_inflight"] -= 1

    @app.post("/recommend")
    async def recommend_endpoint(request: Request, background: BackgroundTasks) -> Any:
        endpoint = "/recommend"
        start = time.perf_counter()
        body = _parse(await request.body())
        if isinstance(body, JSONResponse):
            return body
        if not 1 <= body.k <= config.max_k:
            metrics.requests.labels(endpoint, "422").inc()
            metrics.errors.labels("k_out_of_range").inc()
            return _error(422, f"k = {body.k} is out of range; expected 1 <= k <= {config.max_k}")
        if state["inflight"] >= config.max_concurrency:
            metrics.requests.labels(endpoint, "503").inc()
            metrics.errors.labels("overloaded").inc()
            return _error(
                503, f"server overloaded: {config.max_concurrency} requests in flight; retry later"
            )
        routing = store.routing  # held for the whole request, whatever a reload does
        chosen = routing.choose(body.user_id)
        if chosen is None:
            metrics.requests.labels(endpoint, "503").inc()
            metrics.errors.labels("no_live_version").inc()
            reason = "the registry has no live version; run 'registry promote VERSION'"
            if store.last_error:
                reason += f" (last load error: {store.last_error})"
            return _error(503, reason)
        name, version = chosen
        if body.k > version.candidates:
            metrics.requests.labels(endpoint, "422").inc()
            metrics.errors.labels("k_out_of_range").inc()
            return _error(422, f"k = {body.k} exceeds the {version.candidates} candidates")
        state["inflight"] += 1
        metrics.inflight.set(state["inflight"])
        try:
            answer = await anyio.to_thread.run_sync(_answer, version, body, True, limiter=workers)
        except UserError as exc:
            metrics.requests.labels(endpoint, "422").inc()
            metrics.errors.labels("bad_request").inc()
            return _error(422, str(exc))
        except Exception as exc:  # noqa: BLE001
            log.exception("request failed")
            metrics.requests.labels(endpoint, "500").inc()
            metrics.errors.labels("internal").inc()
            return _error(500, f"internal error: {type(exc).__name__}")
        finally:
            state["inflight"] -= 1
            metrics.inflight.set(state["inflight"])
        request_id = uuid.uuid4().hex
        seconds = time.perf_counter() - start
        answer["request_id"] = request_id
        answer["latency_ms"] = 1000 * seconds
        role = "canary" if name == routing.canary_name and name != routing.live_name else "live"
        metrics.requests.labels(endpoint, "200").inc()
        metrics.version_requests.labels(name, role).inc()
        metrics.latency.labels(endpoint).observe(seconds)
        if answer["cold_start"]:
            metrics.cold.inc()
        state["impressions"].log(
            request_id, body.user_id, name, answer["items"], answer["cold_start"]
        )
        if routing.shadow is not None:
            background.add_task(_shadow, routing, body, answer, request_id)
        return answer

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        routing = store.routing
        body = {
            "status": "ok" if routing.live is not None else "no_live_version",
            "generation": routing.generation,
            "live": routing.live_name,
            "canary": (
                {"version": routing.canary_name, "share": routing.canary_share}
                if routing.canary_name
                else None
            ),
            "shadow": routing.shadow_name,
            "last_reload_error": store.last_error,
            "process": os.getpid(),  # which server process answered (serve --processes N)
        }
        return JSONResponse(status_code=200 if routing.live is not None else 503, content=body)

    def _drift_report(version: LoadedVersion) -> dict[str, Any]:
        return version.drift.report(
            config.psi_threshold, config.unseen_threshold, config.drift_min_requests
        )

    state_collector = _StateCollector(store, _drift_report)
    if multiprocess_dir():  # --processes N: every process's counters, from their files
        scrape = CollectorRegistry()
        MultiProcessCollector(scrape)
    else:
        scrape = metrics.registry
    scrape.register(state_collector)

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(scrape), media_type=CONTENT_TYPE_LATEST)

    @app.get("/drift")
    async def drift() -> JSONResponse:
        routing = store.routing
        if routing.live is None:
            return _error(503, "the registry has no live version")
        report = _drift_report(routing.live)
        report["version"] = routing.live_name
        return JSONResponse(report)

    @app.post("/drift/reset")
    async def drift_reset() -> JSONResponse:
        routing = store.routing
        for version in (routing.live, routing.canary):
            if version is not None:
                version.drift.reset()
        return JSONResponse({"reset": True})

    return app


CONFIG_ENV = "TORCHREC_RECSYS_SERVE_CONFIG"
"""How ``serve --processes N`` hands the service settings to its worker processes."""
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    """prometheus_client's multiprocess folder, set when the service runs several processes."""
    return os.environ.get(MULTIPROC_ENV) or None


def _setup_process(torch_threads: int) -> None:
    torch.set_num_threads(torch_threads)
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def app_from_env() -> FastAPI:
    """The app of one worker process of ``serve --processes N`` (a uvicorn factory)."""
    settings = json.loads(os.environ[CONFIG_ENV])
    torch_threads = int(settings.pop("torch_threads"))
    _setup_process(torch_threads)
    for name in ("registry", "log_dir"):
        if settings[name] is not None:
            settings[name] = Path(settings[name])
    return create_app(ServiceConfig(**settings))


def serve(
    config: ServiceConfig,
    host: str = "127.0.0.1",
    port: int = 8080,
    torch_threads: int = 1,
    processes: int = 1,
) -> None:
    """Run the service with uvicorn until interrupted.

    ``processes`` > 1 runs that many worker processes on one listening socket (uvicorn's
    workers): each loads the live version and follows the registry on its own, so a promote or
    rollback reaches every process within ``poll_seconds``; ``/metrics`` sums the counters
    and histograms of all of them (prometheus_client multiprocess mode); the drift window,
    admission limit and impression log are per process.
    """
    import uvicorn

    if processes < 1:
        raise UserError(f"processes = {processes}; expected at least 1")
    options = {"host": host, "port": port, "log_level": "warning", "timeout_keep_alive": 30}
    if processes == 1:
        _setup_process(torch_threads)
        uvicorn.run(create_app(config), **options)  # type: ignore[arg-type]
        return
    from uvicorn.supervisors import Multiprocess

    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    with tempfile.TemporaryDirectory(prefix="recsys_metrics_") as metrics_dir:
        os.environ[MULTIPROC_ENV] = metrics_dir  # read by prometheus_client in each worker
        os.environ[CONFIG_ENV] = json.dumps({**settings, "torch_threads": torch_threads})
        uvicorn_config = uvicorn.Config(
            "torchrec_recsys.serving.service:app_from_env",
            factory=True,
            workers=processes,
            **options,  # type: ignore[arg-type]
        )
        with _listening_socket(host, port) as sock:
            Multiprocess(uvicorn_config, sockets=[sock]).run()


def _listening_socket(host: str, port: int) -> socket.socket:
    """The TCP socket the worker processes share, created with ``IPPROTO_TCP``: uvicorn's own
    (``--workers``) leaves the protocol 0, so asyncio never sets ``TCP_NODELAY`` on accepted
    connections and each keep-alive answer waits ~40 ms for a delayed ACK (uvicorn #3149)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({exc}); expected a free port") from None
    sock.set_inheritable(True)
    return sock

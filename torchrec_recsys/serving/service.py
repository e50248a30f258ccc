"""The HTTP service: retrieve-then-rank for the registry's live version (FastAPI + uvicorn).

    POST /recommend {user_id, k, history?}
        -> http_guard: body size (413), same origin and JSON content type (403/415),
           JSON that parses (400), a body of the right shape (422)
        -> bounded admission (503 at once when ``max_concurrency`` requests are in flight),
           then one of ``workers`` threads (more threads than cores only thrash)
        -> routing (live, or canary by user hash), a version held for the whole request
        -> serving.online.recommend_online in a worker thread (the offline recommend's steps,
           batches gathered from feature rows taken when the version loaded); a history that
           leaves nothing to recommend -> 422; fewer than k left -> ``returned`` + ``reason``
        -> response; impression log row; drift counts; shadow copy after the response
    GET /healthz   live / canary / shadow versions, status ok | degraded | no_live_version,
                   last reload error, impression log state (503 without live)
    GET /metrics   Prometheus text: requests, latency, errors, per-version, drift gauges
    GET /drift     drift report of the live version's current window
    POST /drift/reset   empties the drift windows (same origin + admin token)

The pieces, each testable alone: :class:`ServiceConfig` (checked settings),
:class:`Admission` (in-flight bounds), ``watcher.ModelStore`` + ``watcher.RegistryWatcher``
(registry state -> routing), ``impressions.ImpressionLog`` (the durable writer),
:class:`ShadowRunner`, :class:`RecommendService` (the endpoints' logic) and
:func:`build_router` (the endpoints); :func:`create_app` puts them together.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import anyio
import torch
from fastapi import APIRouter, BackgroundTasks, FastAPI, Request
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
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from torchrec_recsys.errors import UserError
from torchrec_recsys.serving.drift import (
    DEFAULT_MIN_REQUESTS,
    DEFAULT_PSI_THRESHOLD,
    DEFAULT_UNSEEN_THRESHOLD,
)
from torchrec_recsys.serving.http_guard import (
    DEFAULT_MAX_BODY_BYTES,
    TOKEN_ENV,
    BodyLimit,
    HTTPProblem,
    allowed_host_names,
    check_same_origin,
    check_token,
    parse_json,
    read_admin_token,
    resolve_admin_token,
    short,
)
from torchrec_recsys.serving.impressions import ImpressionLog
from torchrec_recsys.serving.online import NothingToRecommend, recommend_online
from torchrec_recsys.serving.registry import Registry
from torchrec_recsys.serving.routing import Routing
from torchrec_recsys.serving.watcher import LoadedVersion, ModelStore, RegistryWatcher

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
ENDPOINTS = ("/recommend", "/healthz", "/metrics", "/drift", "/drift/reset")
MAX_ID_CHARS = 256
"""Longest user or item id a request may carry."""
MAX_HISTORY = 1000
"""Most history items a request may carry."""
MIN_POLL_SECONDS = 0.01
"""Shortest registry poll period."""


def check_service_settings(
    values: Mapping[str, Any], label: Callable[[str], str] = lambda name: name
) -> None:
    """Refuse settings a server cannot run with; ``label`` names a setting in the message
    (``serve`` passes its flag names).

    Raises:
        UserError: one line naming the first bad setting and what was expected.
    """

    def need(name: str, ok: bool, expected: str) -> None:
        if not ok:
            raise UserError(f"{label(name)} {values[name]!r} is invalid; expected {expected}")

    def finite(name: str) -> bool:
        v = values[name]
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    def integer(name: str) -> bool:
        return isinstance(values[name], int) and not isinstance(values[name], bool)

    for name in ("max_k", "candidates", "max_concurrency", "workers", "drift_min_requests"):
        if name in values:
            need(name, integer(name) and values[name] >= 1, "an integer >= 1")
    if "poll_seconds" in values:
        need(
            "poll_seconds",
            finite("poll_seconds") and MIN_POLL_SECONDS <= values["poll_seconds"] <= 3600,
            f"seconds in {MIN_POLL_SECONDS}..3600 (a shorter poll only spins)",
        )
    if "drift_window_seconds" in values:
        need(
            "drift_window_seconds",
            finite("drift_window_seconds") and values["drift_window_seconds"] > 0,
            "a finite number of seconds > 0",
        )
    for name in ("psi_threshold", "unseen_threshold"):
        if name in values:
            need(name, finite(name) and values[name] >= 0, "a finite number >= 0")
    if "shadow_max_inflight" in values:
        need("shadow_max_inflight", integer("shadow_max_inflight"), "an integer >= 0")
        need("shadow_max_inflight", values["shadow_max_inflight"] >= 0, "an integer >= 0")
    if "max_body_bytes" in values:
        need(
            "max_body_bytes",
            integer("max_body_bytes") and 1 <= values["max_body_bytes"] <= 1 << 30,
            "an integer in 1..1073741824 (bytes)",
        )
    if {"max_k", "candidates"} <= set(values):
        need("max_k", values["max_k"] <= values["candidates"], f"at most {label('candidates')}")


@dataclass
class ServiceConfig:
    """Settings of one server process (checked when constructed)."""

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
    """Impression and shadow logs, admin token file (default: ``<registry>/logs``)."""
    drift_window_seconds: float = 300.0
    """Length of a drift statistics window."""
    psi_threshold: float = DEFAULT_PSI_THRESHOLD
    unseen_threshold: float = DEFAULT_UNSEEN_THRESHOLD
    drift_min_requests: int = DEFAULT_MIN_REQUESTS
    shadow_max_inflight: int = 2
    """Shadow copies running at once; more are dropped (counted), never queued."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """Largest request body; a larger one is refused with 413 before it is parsed."""
    bind_host: str | None = None
    """The address the server listens on (a Host header may name it)."""
    allowed_hosts: tuple[str, ...] = ()
    """More names a POST's Host header may carry (besides loopback and ``bind_host``)."""
    admin_token: str | None = field(default=None, repr=False)
    """Token of the state-changing endpoints (None: ``http_guard.resolve_admin_token`` at
    start: the environment variable, or a new one in ``<log_dir>/admin.token``)."""

    def __post_init__(self) -> None:
        self.registry = Path(self.registry)
        self.log_dir = Path(self.log_dir) if self.log_dir is not None else None
        self.allowed_hosts = tuple(self.allowed_hosts)
        check_service_settings(asdict(self))

    @property
    def logs(self) -> Path:
        """The log folder in effect."""
        return self.log_dir if self.log_dir is not None else self.registry / "logs"


class RecommendRequest(BaseModel):
    """Body of ``POST /recommend``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    user_id: Annotated[
        str,
        StringConstraints(min_length=1, max_length=MAX_ID_CHARS, pattern=r"^[^\x00-\x1f\x7f]+$"),
    ]
    k: int = 10
    history: (
        list[
            Annotated[
                str,
                StringConstraints(
                    min_length=1, max_length=MAX_ID_CHARS, pattern=r"^[^\x00-\x1f\x7f]+$"
                ),
            ]
        ]
        | None
    ) = Field(default=None, max_length=MAX_HISTORY)


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

    def refused(self, endpoint: str, status: int, reason: str) -> None:
        """Count a refused request (the endpoint label only ever names a known route)."""
        self.requests.labels(endpoint if endpoint in ENDPOINTS else "other", str(status)).inc()
        self.errors.labels(reason).inc()


class Admission:
    """In-flight bounds: requests admitted (``max_concurrency``) and shadow copies running
    (``shadow_max``); a request over the bound is refused at once, never queued."""

    def __init__(self, max_concurrency: int, shadow_max: int) -> None:
        self.max_concurrency = max_concurrency
        self.shadow_max = shadow_max
        self.inflight = 0
        self.shadow_inflight = 0
        self._lock = threading.Lock()

    def admit(self) -> bool:
        with self._lock:
            if self.inflight >= self.max_concurrency:
                return False
            self.inflight += 1
            return True

    def release(self) -> None:
        with self._lock:
            self.inflight -= 1

    def admit_shadow(self) -> bool:
        with self._lock:
            if self.shadow_inflight >= self.shadow_max:
                return False
            self.shadow_inflight += 1
            return True

    def release_shadow(self) -> None:
        with self._lock:
            self.shadow_inflight -= 1


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
    returned = len(result.items)
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
        "returned": returned,
        "reason": (
            None
            if returned >= body.k
            else f"only {returned} of the {bundle.index.ntotal} indexed items are left after "
            f"excluding the history and the user's training items; asked for k = {body.k}"
        ),
    }


class ShadowRunner:
    """Answers a copy of a request with the shadow version and logs the comparison
    (``shadow.jsonl``); never touches the response, drops copies over the bound."""

    def __init__(self, log_dir: Path, admission: Admission, metrics: _Metrics) -> None:
        self.path = log_dir / "shadow.jsonl"
        self.admission = admission
        self.metrics = metrics
        self._lock = threading.Lock()

    def run(
        self,
        routing: Routing[LoadedVersion],
        body: RecommendRequest,
        primary: dict[str, Any],
        request_id: str,
    ) -> None:
        shadow = routing.shadow
        if shadow is None:
            return
        if not self.admission.admit_shadow():
            self.metrics.shadow.labels("dropped").inc()
            return
        try:
            start = time.perf_counter()
            other = _answer(shadow, body, observe=False)
            record = self._compare(body, primary, other, shadow.name, request_id)
            record["shadow_latency_ms"] = 1000 * (time.perf_counter() - start)
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record) + "\n")
            self.metrics.shadow_overlap.observe(record["topk_overlap"])
            self.metrics.shadow.labels("compared").inc()
        except Exception:  # noqa: BLE001 - a shadow failure must never reach a user
            self.metrics.shadow.labels("failed").inc()
            log.exception("shadow version %s failed", shadow.name)
        finally:
            self.admission.release_shadow()

    @staticmethod
    def _compare(
        body: RecommendRequest,
        primary: dict[str, Any],
        other: dict[str, Any],
        shadow_name: str,
        request_id: str,
    ) -> dict[str, Any]:
        mine = {i["item_id"]: i for i in primary["items"]}
        theirs = {i["item_id"]: i for i in other["items"]}
        common = sorted(set(mine) & set(theirs))

        def mean_delta(key: str) -> float | None:
            if not common:
                return None
            return sum(abs(mine[i][key] - theirs[i][key]) for i in common) / len(common)

        return {
            "request_id": request_id,
            "time": time.time(),
            "user_id": body.user_id,
            "primary_version": primary["version"],
            "shadow_version": shadow_name,
            "topk_overlap": len(common) / max(len(mine), 1),
            "mean_abs_ranking_delta": mean_delta("ranking_score"),
            "mean_abs_retrieval_delta": mean_delta("retrieval_score"),
            "primary_latency_ms": primary["latency_ms"],
            "primary_items": list(mine),
            "shadow_items": list(theirs),
        }


class RecommendService:
    """The endpoints' logic over the registry's live routing; :func:`build_router` exposes it.

    ``start`` applies the registry state, starts the watcher and the impression writer and
    resolves the admin token; ``stop`` ends them (draining the impression log)."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.metrics = _Metrics()
        self.store = ModelStore(
            Registry(config.registry),
            config.candidates,
            config.drift_window_seconds,
            on_reload=lambda outcome: self.metrics.reloads.labels(outcome).inc(),
        )
        self.watcher = RegistryWatcher(self.store, config.poll_seconds)
        self.admission = Admission(config.max_concurrency, config.shadow_max_inflight)
        self.shadow = ShadowRunner(config.logs, self.admission, self.metrics)
        self.allowed_hosts = allowed_host_names(config.bind_host, config.allowed_hosts)
        self.impressions: ImpressionLog | None = None
        self.admin_token: str | None = config.admin_token
        self._workers: anyio.CapacityLimiter | None = None

    def start(self) -> None:
        if self.admin_token is None:
            self.admin_token = resolve_admin_token(self.config.logs)
        self.impressions = ImpressionLog(self.config.logs)
        self.watcher.start()

    def stop(self) -> None:
        self.watcher.stop()
        if self.impressions is not None:
            self.impressions.close()

    @property
    def workers(self) -> anyio.CapacityLimiter:
        """Admitted requests wait here for one of ``workers`` threads (made in the loop)."""
        if self._workers is None:
            self._workers = anyio.CapacityLimiter(self.config.workers)
        return self._workers

    # ------------------------------------------------------------------ /recommend

    @staticmethod
    def parse(raw: bytes) -> RecommendRequest:
        """The request body, or the 400/422 :class:`HTTPProblem` naming what is wrong."""
        payload = parse_json(raw, 'an object like {"user_id": "42", "k": 10}')
        if not isinstance(payload, dict):
            raise HTTPProblem(
                422,
                "invalid_request",
                f"request body is a JSON {type(payload).__name__}; expected a JSON object",
            )
        try:
            return RecommendRequest.model_validate(payload)
        except ValidationError as exc:
            parts = []
            for e in exc.errors()[:5]:
                where = ".".join(str(p)[:40] for p in e.get("loc", ())) or "body"
                parts.append(f"field {where!r}: {e.get('msg')}")
            raise HTTPProblem(422, "invalid_request", "; ".join(parts)) from None

    async def recommend(self, request: Request, background: BackgroundTasks) -> dict[str, Any]:
        endpoint = "/recommend"
        start = time.perf_counter()
        check_same_origin(request, self.allowed_hosts)
        body = self.parse(await request.body())
        config = self.config
        if not 1 <= body.k <= config.max_k:
            raise HTTPProblem(
                422,
                "k_out_of_range",
                f"k = {short(body.k, 24)} is out of range; expected 1 <= k <= {config.max_k}",
            )
        if not self.admission.admit():
            raise HTTPProblem(
                503,
                "overloaded",
                f"server overloaded: {config.max_concurrency} requests in flight; retry later",
            )
        self.metrics.inflight.set(self.admission.inflight)
        try:
            routing = self.store.routing  # held for the whole request, whatever a reload does
            chosen = routing.choose(body.user_id)
            if chosen is None:
                reason = "the registry has no live version; run 'registry promote VERSION'"
                if self.store.last_error:
                    reason += f" (last load error: {self.store.last_error})"
                raise HTTPProblem(503, "no_live_version", reason)
            name, version = chosen
            if body.k > version.candidates:
                raise HTTPProblem(
                    422,
                    "k_out_of_range",
                    f"k = {body.k} exceeds the {version.candidates} candidates",
                )
            answer = await anyio.to_thread.run_sync(
                _answer, version, body, True, limiter=self.workers
            )
        except NothingToRecommend as exc:
            raise HTTPProblem(422, "nothing_to_recommend", str(exc)) from None
        except UserError as exc:
            raise HTTPProblem(422, "bad_request", str(exc)) from None
        finally:
            self.admission.release()
            self.metrics.inflight.set(self.admission.inflight)
        request_id = uuid.uuid4().hex
        seconds = time.perf_counter() - start
        answer["request_id"] = request_id
        answer["latency_ms"] = 1000 * seconds
        role = "canary" if name == routing.canary_name and name != routing.live_name else "live"
        self.metrics.requests.labels(endpoint, "200").inc()
        self.metrics.version_requests.labels(name, role).inc()
        self.metrics.latency.labels(endpoint).observe(seconds)
        if answer["cold_start"]:
            self.metrics.cold.inc()
        if self.impressions is not None:
            self.impressions.log(
                request_id, body.user_id, name, answer["items"], answer["cold_start"]
            )
        if routing.shadow is not None:
            background.add_task(self.shadow.run, routing, body, answer, request_id)
        return answer

    # ------------------------------------------------------------------ the others

    def health(self) -> tuple[int, dict[str, Any]]:
        """(status code, body) of ``/healthz``: 503 without a live version; ``degraded``
        while the registry state, the watcher or the impression log has a problem."""
        routing = self.store.routing
        problems = []
        if self.store.last_error:
            problems.append(self.store.last_error)
        watcher_problem = self.watcher.problem
        if watcher_problem:
            problems.append(watcher_problem)
        impressions = None
        if self.impressions is not None:
            stats = self.impressions.stats
            impressions = {
                "rows_written": stats.rows_written,
                "rows_dropped": stats.rows_dropped,
                "write_errors": stats.write_errors,
                "last_error": stats.last_error,
            }
            if not self.impressions.healthy:
                problems.append(f"impression log: {stats.last_error or 'writer stopped'}")
        status = "no_live_version" if routing.live is None else "degraded" if problems else "ok"
        body = {
            "status": status,
            "generation": routing.generation,
            "live": routing.live_name,
            "canary": (
                {"version": routing.canary_name, "share": routing.canary_share}
                if routing.canary_name
                else None
            ),
            "shadow": routing.shadow_name,
            "last_reload_error": self.store.last_error or watcher_problem,
            "problems": problems,
            "impression_log": impressions,
            "process": os.getpid(),  # which server process answered (serve --processes N)
        }
        return (200 if routing.live is not None else 503), body

    def drift_report(self, version: LoadedVersion) -> dict[str, Any]:
        c = self.config
        return version.drift.report(c.psi_threshold, c.unseen_threshold, c.drift_min_requests)

    def drift(self) -> dict[str, Any]:
        routing = self.store.routing
        if routing.live is None:
            raise HTTPProblem(503, "no_live_version", "the registry has no live version")
        report = self.drift_report(routing.live)
        report["version"] = routing.live_name
        return report

    def reset_drift(self, request: Request) -> dict[str, Any]:
        check_same_origin(request, self.allowed_hosts)
        assert self.admin_token is not None, "the service was not started"
        check_token(request, self.admin_token)
        routing = self.store.routing
        for version in (routing.live, routing.canary):
            if version is not None:
                version.drift.reset()
        return {"reset": True}


class _StateCollector(Collector):
    """Gauges read from this process's state when scraped: the live version, the registry
    and impression log health, and the drift of the live and canary windows (computed per
    scrape, so never stale; with several processes, the answering process's values)."""

    def __init__(self, service: RecommendService):
        self.service = service

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        service = self.service
        routing = service.store.routing
        live = GaugeMetricFamily(
            "recsys_live_version", "1 for the live version", labels=["version"]
        )
        if routing.live_name:
            live.add_metric([routing.live_name], 1)
        degraded = GaugeMetricFamily(
            "recsys_registry_degraded",
            "1 while the registry state cannot be followed (the last good version serves)",
        )
        degraded.add_metric(
            [], int(service.store.last_error is not None or service.watcher.problem is not None)
        )
        yield from (live, degraded)
        if service.impressions is not None:
            stats = service.impressions.stats
            rows = CounterMetricFamily(
                "recsys_impression_rows", "Impression log rows by outcome", labels=["outcome"]
            )
            rows.add_metric(["written"], stats.rows_written)
            rows.add_metric(["dropped"], stats.rows_dropped)
            errors = CounterMetricFamily(
                "recsys_impression_write_errors", "Failed impression log writes (retried)"
            )
            errors.add_metric([], stats.write_errors)
            failing = GaugeMetricFamily(
                "recsys_impression_log_failing", "1 while impression log writes fail"
            )
            failing.add_metric([], int(not service.impressions.healthy))
            yield from (rows, errors, failing)
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
            report = service.drift_report(version)
            window.add_metric([name], report["requests"])
            for row in report["features"]:
                psi.add_metric([row["feature"], name], row["psi"])
                flagged.add_metric([row["feature"], name], int(row["flagged"]))
                if "unseen_share" in row:
                    unseen.add_metric([row["feature"], name], row["unseen_share"])
        yield from (psi, unseen, flagged, window)


def build_router(service: RecommendService) -> APIRouter:
    """The service's endpoints (each a thin call into ``service``)."""
    router = APIRouter()
    scrape = service.metrics.registry
    if multiprocess_dir():  # --processes N: every process's counters, from their files
        scrape = CollectorRegistry()
        MultiProcessCollector(scrape)
    scrape.register(_StateCollector(service))

    @router.post("/recommend")
    async def recommend(request: Request, background: BackgroundTasks) -> Any:
        return await service.recommend(request, background)

    @router.get("/healthz")
    async def healthz() -> JSONResponse:
        status, body = service.health()
        return JSONResponse(status_code=status, content=body)

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(scrape), media_type=CONTENT_TYPE_LATEST)

    @router.get("/drift")
    async def drift() -> JSONResponse:
        return JSONResponse(service.drift())

    @router.post("/drift/reset")
    async def drift_reset(request: Request) -> JSONResponse:
        return JSONResponse(service.reset_drift(request))

    return router


def create_app(config: ServiceConfig) -> FastAPI:
    """The FastAPI application for ``config`` (the registry watcher starts with it);
    ``app.state.service`` is its :class:`RecommendService`."""
    disable_created_metrics()
    service = RecommendService(config)

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
        await anyio.to_thread.run_sync(service.start)
        yield
        service.stop()

    app = FastAPI(title="torchrec_recsys serving", lifespan=lifespan)
    app.state.service = service
    app.state.store = service.store
    app.state.metrics = service.metrics
    app.include_router(build_router(service))

    async def problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPProblem)
        service.metrics.refused(request.url.path, exc.status, exc.reason)
        return JSONResponse(
            status_code=exc.status, content={"error": exc.message}, headers=exc.headers
        )

    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("request to %s failed", request.url.path, exc_info=exc)
        service.metrics.refused(request.url.path, 500, "internal")
        return JSONResponse(
            status_code=500, content={"error": f"internal error: {type(exc).__name__}"}
        )

    app.add_exception_handler(HTTPProblem, problem)
    app.add_exception_handler(Exception, internal)  # a JSON 500, never plain text
    app.add_middleware(
        BodyLimit, max_bytes=config.max_body_bytes, on_refuse=service.metrics.refused
    )
    return app


CONFIG_ENV = "TORCHREC_RECSYS_SERVE_CONFIG"
"""How ``serve --processes N`` hands the service settings to its worker processes."""
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
NO_LIVE_VERSION = "(no live version)"
"""What the ready line names while the registry has no live version."""


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
    config = ServiceConfig(**settings)
    # the token the parent process resolved (never passed through the environment itself)
    return create_app(replace(config, admin_token=read_admin_token(config.logs)))


def check_serve_options(
    host: str,
    port: int,
    torch_threads: int,
    processes: int,
    label: Callable[[str], str] = lambda name: name,
) -> None:
    """Refuse what uvicorn would fail on later (or hang with); ``label`` as in
    :func:`check_service_settings`.

    Raises:
        UserError: port outside 0..65535 (0: any free port), threads or processes below 1.
    """
    for name, value, ok, expected in (
        ("port", port, 0 <= port <= 65535, "0..65535 (0: any free port)"),
        ("torch_threads", torch_threads, torch_threads >= 1, "an integer >= 1"),
        ("processes", processes, processes >= 1, "an integer >= 1"),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not ok:
            raise UserError(f"{label(name)} {value!r} is invalid; expected {expected}")
    if not host:
        raise UserError(f"{label('host')} '' is invalid; expected an address such as 127.0.0.1")


def ready_line(version: str | None, host: str, port: int) -> str:
    """``serving <version> on http://<host>:<port>``, printed once the server answers."""
    shown = f"[{host}]" if ":" in host else host
    return f"serving {version or NO_LIVE_VERSION} on http://{shown}:{port}"


def _announce(line: str) -> None:
    print(line, flush=True)


def serve(
    config: ServiceConfig,
    host: str = "127.0.0.1",
    port: int = 8080,
    torch_threads: int = 1,
    processes: int = 1,
    announce: Callable[[str], None] = _announce,
) -> None:
    """Run the service with uvicorn until interrupted; ``announce`` gets :func:`ready_line`
    once it answers (with port 0, the port it got).

    ``processes`` > 1 runs that many worker processes on one listening socket (uvicorn's
    workers): each loads the live version and follows the registry on its own, so a promote or
    rollback reaches every process within ``poll_seconds``; ``/metrics`` sums the counters
    and histograms of all of them (prometheus_client multiprocess mode); the drift window,
    admission limit and impression log are per process; they share one admin token.
    """
    import uvicorn

    check_serve_options(host, port, torch_threads, processes)
    config = replace(config, bind_host=host)
    options = {"log_level": "warning", "timeout_keep_alive": 30}
    if processes == 1:
        _setup_process(torch_threads)
        app = create_app(config)
        service: RecommendService = app.state.service

        class AnnouncingServer(uvicorn.Server):
            async def startup(self, sockets: list[socket.socket] | None = None) -> None:
                await super().startup(sockets)
                if self.started and sockets:
                    bound = sockets[0].getsockname()[1]
                    announce(ready_line(service.store.routing.live_name, host, bound))

        with _listening_socket(host, port) as sock:
            server = AnnouncingServer(uvicorn.Config(app, **options))  # type: ignore[arg-type]
            server.run(sockets=[sock])
        return
    from uvicorn.supervisors import Multiprocess

    if config.admin_token is not None:  # a caller's own token reaches the workers as TOKEN_ENV
        os.environ[TOKEN_ENV] = config.admin_token
    resolve_admin_token(config.logs)  # once, for every worker process (read from its file)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    settings["admin_token"] = None  # never through the environment in plain settings
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
            stop = threading.Event()
            bound = sock.getsockname()[1]
            waiter = threading.Thread(
                target=_announce_when_answering,
                args=(host, bound, announce, stop),
                name="ready-line",
                daemon=True,
            )
            waiter.start()
            try:
                Multiprocess(uvicorn_config, sockets=[sock]).run()
            finally:
                stop.set()
        os.environ.pop(CONFIG_ENV, None)


def _announce_when_answering(
    host: str, port: int, announce: Callable[[str], None], stop: threading.Event
) -> None:
    """Poll ``/healthz`` of the worker processes until one answers, then announce it."""
    import http.client
    import ipaddress

    try:
        local = "127.0.0.1" if ipaddress.ip_address(host).is_unspecified else host
    except ValueError:
        local = host
    while not stop.wait(0.2):
        conn = http.client.HTTPConnection(local, port, timeout=2)
        try:
            conn.request("GET", "/healthz")
            health = json.loads(conn.getresponse().read())
        except (OSError, ValueError, http.client.HTTPException):
            continue
        finally:
            conn.close()
        announce(ready_line(health.get("live"), host, port))
        return


def _listening_socket(host: str, port: int) -> socket.socket:
    """The TCP socket the server listens on, created with ``IPPROTO_TCP``: uvicorn's own
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

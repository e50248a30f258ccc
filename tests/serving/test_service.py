"""The serving stack end to end: bundle -> registry -> real server (subprocess) over HTTP.

One pytest-session fixture's setup (two tiny runs, two bundles, one server) serves every test:
bad inputs, offline-online parity, promote/rollback under a request loop, a failed reload,
canary share and stickiness, shadow, drift, the impression log, overload, metrics.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import REPO_ROOT, tiny_overrides

from torchrec_recsys.app.retrieval_commands import export_main
from torchrec_recsys.app.train import main as train_main
from torchrec_recsys.app.trained import load_trained
from torchrec_recsys.cli import main as cli_main
from torchrec_recsys.data.readers import check_interactions
from torchrec_recsys.distributed.env import init_distributed, shutdown_distributed
from torchrec_recsys.files import atomic_write_text
from torchrec_recsys.retrieval.faiss_index import load_index
from torchrec_recsys.retrieval.two_stage import recommend
from torchrec_recsys.serving.impressions import impressions_to_examples, read_impressions
from torchrec_recsys.serving.registry import Registry
from torchrec_recsys.serving.routing import user_bucket

MAX_K = 20
CANDIDATES = 30
ADMIN_TOKEN = "test-admin-token-0123456789"
PARITY_USERS = ["u0", "u7", "u33", "someone-new"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    port: int
    registry: Registry
    log_dir: Path
    bundles: dict[str, Path]
    offline: dict[tuple[str, tuple[str, ...]], list[tuple[str, float, float]]]
    """(user, history) -> offline recommend() items (id, retrieval, ranking)."""
    before_promote: dict[str, tuple[int, dict[str, Any]]]
    """/recommend and /healthz answers while the registry had no live version."""
    users: list[str]
    """User ids of the training interactions, one per row (the unshifted traffic)."""

    def request(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None
    ) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            data = raw if raw is not None else (None if body is None else json.dumps(body))
            headers = {"Content-Type": "application/json"}
            if method == "POST":
                headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            text = response.read().decode()
            try:
                return response.status, json.loads(text)
            except json.JSONDecodeError:
                return response.status, text
        finally:
            conn.close()

    def recommend(self, user: str, k: int = 5, history: list[str] | None = None) -> Any:
        body: dict[str, Any] = {"user_id": user, "k": k}
        if history is not None:
            body["history"] = history
        return self.request("POST", "/recommend", body)

    def wait_for(self, check: Any, seconds: float = 20.0) -> dict[str, Any]:
        """Poll /healthz until ``check(health)`` holds."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                _, health = self.request("GET", "/healthz")
                if check(health):
                    return health
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server never reached the expected state: {health!r}")
            time.sleep(0.1)


def _offline(tt_dir: Path, dlrm_dir: Path, index_dir: Path) -> dict[Any, Any]:
    """What the offline ``recommend`` path answers for PARITY_USERS (same code as the CLI)."""
    ctx = init_distributed()
    try:
        retriever = load_trained(tt_dir, ctx)
        ranker = load_trained(dlrm_dir, ctx)
        index = load_index(index_dir, expected_metric="cosine")
        out = {}
        for user in PARITY_USERS:
            for history in ((), ("i3", "i5")):
                result = recommend(retriever, ranker, index, user, 10, CANDIDATES, list(history))
                out[(user, history)] = [
                    (r.item_id, r.retrieval_score, r.ranking_score) for r in result.items
                ]
        return out
    finally:
        shutdown_distributed()


def _start_serve(registry: Registry, port: int, *flags: str) -> subprocess.Popen[str]:
    """``python -m torchrec_recsys serve`` over ``registry`` on ``port`` (1 thread, polling
    every 0.1 s, the tests' k and candidate limits) plus ``flags``; output piped."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "OMP_NUM_THREADS": "1",
        "TORCHREC_RECSYS_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    command = [
        sys.executable, "-m", "torchrec_recsys", "serve", "--registry", str(registry.root),
        "--port", str(port), "--max-k", str(MAX_K), "--candidates", str(CANDIDATES),
        "--poll-seconds", "0.1", *flags,
    ]  # fmt: skip
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _stop(process: subprocess.Popen[str], timeout: float, tail: int) -> None:
    """Terminate the server (kill it after ``timeout`` s) and print its last ``tail`` chars."""
    process.terminate()
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    print(output[-tail:])


@pytest.fixture(scope="session")
def server(synthetic_paths, tmp_path_factory) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("serving")
    base = [*tiny_overrides(synthetic_paths, root / "runs"), "--train.epochs=1"]
    tt_dir = Path(train_main([*base, "--name=tt", "--model.name=two_tower"])["run_dir"])
    dlrm_dir = Path(train_main([*base, "--name=dlrm"])["run_dir"])
    bundles = {}
    for quant in ("fp32", "int8"):
        bundles[quant] = root / f"bundle_{quant}"
        argv = ["export-bundle", "--retriever", str(tt_dir), "--ranker", str(dlrm_dir)]
        assert cli_main([*argv, "--out", str(bundles[quant]), "--quantize", quant]) == 0
    assert export_main(["--run-dir", str(tt_dir), "--out", str(root / "index")]) is None
    offline = _offline(tt_dir, dlrm_dir, root / "index")

    registry = Registry(root / "registry")
    assert registry.add(bundles["fp32"]) == "v1"
    assert registry.add(bundles["int8"]) == "v2"
    log_dir = root / "logs"
    port = _free_port()
    process = _start_serve(
        registry, port, "--max-concurrency", "2", "--log-dir", str(log_dir),
        "--drift-window-seconds", "3600", "--drift-min-requests", "50",
    )  # fmt: skip
    users = list(pd.read_csv(synthetic_paths.interactions, dtype=str)["user_id"])
    srv = Server(port, registry, log_dir, bundles, offline, {}, users)
    try:
        srv.wait_for(lambda h: h["status"] == "no_live_version", seconds=90)
        srv.before_promote["recommend"] = srv.recommend("u1")
        srv.before_promote["healthz"] = srv.request("GET", "/healthz")
        registry.promote("v1")
        srv.wait_for(lambda h: h["live"] == "v1")
        yield srv
    finally:
        _stop(process, timeout=20, tail=5000)


def test_no_live_version_answers_503_with_a_reason(server: Server) -> None:
    status, body = server.before_promote["recommend"]
    assert status == 503 and "no live version" in body["error"]
    status, health = server.before_promote["healthz"]
    assert status == 503 and health["live"] is None


def test_bad_inputs_get_clear_status_codes(server: Server) -> None:
    status, body = server.request("POST", "/recommend", raw=b'{"user_id": "u1",')
    assert status == 400 and "not valid JSON" in body["error"]
    status, body = server.request("POST", "/recommend", {"k": 3})
    assert status == 422 and body["error"] == "field 'user_id': Field required"
    status, body = server.request("POST", "/recommend", {"user_id": 5, "k": "3"})
    assert status == 422 and "'user_id'" in body["error"] and "'k'" in body["error"]
    status, body = server.request("POST", "/recommend", [1, 2])
    assert status == 422 and "JSON object" in body["error"]
    status, body = server.request("POST", "/recommend", {"user_id": "u1", "k": 3, "x": 1})
    assert status == 422 and "'x'" in body["error"]
    for k in (0, -1, MAX_K + 1):
        status, body = server.recommend("u1", k=k)
        assert status == 422 and f"k = {k} is out of range" in body["error"]
    status, body = server.recommend("never-seen-user", k=3)
    assert status == 200 and body["cold_start"] is True and len(body["items"]) == 3
    status, body = server.recommend("u1", k=3, history=["i3", "no-such-item"])
    assert status == 200 and body["unknown_history_items"] == ["no-such-item"]
    assert body["cold_start"] is False


def test_a_history_that_leaves_too_few_items_is_said(server: Server) -> None:
    status, body = server.recommend("u1", k=5)
    assert status == 200 and body["returned"] == 5 and body["reason"] is None
    catalogue = [f"i{i}" for i in range(80)]
    status, body = server.recommend("cold-one", k=3, history=catalogue)
    assert status == 422 and "nothing to recommend" in body["error"], body
    status, body = server.recommend("cold-one", k=3)
    left = [item["item_id"] for item in body["items"]]
    history = [i for i in catalogue if i not in left]
    status, body = server.recommend("cold-one", k=10, history=history)
    assert status == 200 and body["returned"] == 3 == len(body["items"]), body
    assert {item["item_id"] for item in body["items"]} == set(left)
    assert "only 3" in body["reason"] and "k = 10" in body["reason"]


def test_a_corrupt_bundle_is_refused_at_add(server: Server, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    corrupt = tmp_path / "corrupt"
    shutil.copytree(server.bundles["fp32"], corrupt)
    with open(corrupt / "ranker" / "model.pt", "r+b") as handle:
        handle.seek(100)
        handle.write(b"\x00\x01\x02")
    before = server.registry.versions()
    root = str(server.registry.root)
    assert cli_main(["registry", "--root", root, "add", str(corrupt)]) == 2
    err = capsys.readouterr().err
    assert "model.pt" in err and "corrupt" in err
    (corrupt / "manifest.json").write_text('{"schema": "something else"}')
    assert cli_main(["registry", "--root", root, "add", str(corrupt)]) == 2
    assert "not a serving-bundle manifest" in capsys.readouterr().err
    assert server.registry.versions() == before


def test_service_scores_equal_offline_recommend(server: Server) -> None:
    for (user, history), expected in server.offline.items():
        status, body = server.recommend(user, k=10, history=list(history) or None)
        assert status == 200, body
        got = [(i["item_id"], i["retrieval_score"], i["ranking_score"]) for i in body["items"]]
        assert [g[0] for g in got] == [e[0] for e in expected]
        np.testing.assert_allclose(
            [g[1:] for g in got], [e[1:] for e in expected], rtol=1e-5, atol=1e-6
        )
        assert body["cold_start"] == (user == "someone-new") and body["version"] == "v1"


def test_promote_and_rollback_under_load_fail_no_request(server: Server) -> None:
    results: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def loop() -> None:
        deadline = time.monotonic() + 60  # bounded even if the test fails
        i = 0
        while not stop.is_set() and time.monotonic() < deadline:
            status, body = server.recommend(f"u{i % 60}", k=5)
            results.append((status, body.get("version") if isinstance(body, dict) else None))
            i += 1

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        time.sleep(0.3)
        server.registry.promote("v2")
        server.wait_for(lambda h: h["live"] == "v2")
        time.sleep(0.5)
        server.registry.rollback()
        server.wait_for(lambda h: h["live"] == "v1")
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join()
    assert results and all(status == 200 for status, _ in results), results
    versions = [v for _, v in results]
    assert "v2" in versions and versions[0] == "v1" and versions[-1] == "v1"


def test_a_version_that_fails_to_load_leaves_the_old_one_serving(server: Server) -> None:
    name = server.registry.add(server.bundles["fp32"], "broken")
    state = server.registry.state()
    (server.registry.version_path(name) / "ranker" / "model.pt").write_bytes(b"garbage")
    # promote refuses it: the checksum no longer matches
    with pytest.raises(Exception, match="corrupt or changed"):
        server.registry.promote(name)
    # a state written behind the registry's back: the server must refuse it too
    bad = {**state.to_dict(), "live": name, "generation": state.generation + 1}
    atomic_write_text(server.registry.state_path, json.dumps(bad))
    health = server.wait_for(lambda h: h["last_reload_error"] is not None)
    assert health["live"] == "v1" and "corrupt" in health["last_reload_error"]
    status, body = server.recommend("u3")
    assert status == 200 and body["version"] == "v1"
    restored = {**state.to_dict(), "generation": state.generation + 2}
    atomic_write_text(server.registry.state_path, json.dumps(restored))
    server.wait_for(lambda h: h["last_reload_error"] is None and h["live"] == "v1")


def test_canary_gets_a_sticky_share_of_users(server: Server) -> None:
    server.registry.set_canary("v2", 0.3)
    server.wait_for(lambda h: h["canary"] is not None)
    try:
        users = [f"canary-user-{i}" for i in range(120)] + [f"u{i}" for i in range(60)]
        versions = {u: server.recommend(u, k=3)[1]["version"] for u in users}
        expected = {u: "v2" if user_bucket(u) < 0.3 else "v1" for u in users}
        assert versions == expected  # sticky: decided by the user's hash alone
        share = sum(v == "v2" for v in versions.values()) / len(users)
        assert abs(share - 0.3) < 0.1
        assert all(server.recommend(u, k=3)[1]["version"] == versions[u] for u in users[:10])
    finally:
        server.registry.set_canary(None)
        server.wait_for(lambda h: h["canary"] is None)


def test_shadow_never_alters_responses_and_is_logged(server: Server) -> None:
    users = [f"u{i}" for i in range(0, 60, 4)] + ["shadow-cold"]

    def answers() -> list[Any]:
        out = []
        for u in users:
            status, body = server.recommend(u, k=5)
            assert status == 200
            out.append({k: v for k, v in body.items() if k not in ("request_id", "latency_ms")})
        return out

    def dropped() -> int:  # shadow copies dropped because 2 were already running
        _, text = server.request("GET", "/metrics")
        found = re.search(r'recsys_shadow_requests_total\{outcome="dropped"\} (\S+)', text)
        return int(float(found.group(1))) if found else 0

    plain = answers()
    dropped_before = dropped()
    server.registry.set_shadow("v2")
    server.wait_for(lambda h: h["shadow"] == "v2")
    try:
        assert answers() == plain
        log = server.log_dir / "shadow.jsonl"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            records = (
                [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
            )
            if len(records) + dropped() - dropped_before >= len(users):
                break
            time.sleep(0.1)
        # every copy is either compared and logged or dropped (counted), most are logged
        assert len(records) + dropped() - dropped_before == len(users)
        assert len(records) >= len(users) // 2
        assert {(r["primary_version"], r["shadow_version"]) for r in records} == {("v1", "v2")}
        assert all(0.0 <= r["topk_overlap"] <= 1.0 and r["shadow_latency_ms"] > 0 for r in records)
    finally:
        server.registry.set_shadow(None)
        server.wait_for(lambda h: h["shadow"] is None)


def test_drift_flags_a_shifted_stream_and_not_an_unshifted_one(
    server: Server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    server.request("POST", "/drift/reset")
    for user in rng.choice(server.users, size=150):  # users as often as they interact
        assert server.recommend(str(user), k=3)[0] == 200
    status, report = server.request("GET", "/drift")
    assert status == 200 and report["requests"] == 150 and report["enough_requests"]
    assert report["flagged"] == [], report["features"]

    server.request("POST", "/drift/reset")
    for i in range(60):  # new users whose histories hold only two items
        assert server.recommend(f"new-{i}", k=3, history=["i1", "i2"])[0] == 200
    status, report = server.request("GET", "/drift")
    assert "user_id" in report["flagged"] and "user_history" in report["flagged"]
    user_id = next(r for r in report["features"] if r["feature"] == "user_id")
    assert user_id["unseen_share"] == 1.0

    _, metrics = server.request("GET", "/metrics")
    assert 'recsys_drift_flagged{feature="user_id",version="v1"} 1.0' in metrics
    png = tmp_path / "drift.png"
    url = f"http://127.0.0.1:{server.port}"
    assert cli_main(["drift", "--url", url, "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_impression_log_is_readable_training_data(server: Server) -> None:
    status, body = server.recommend("u5", k=4)
    assert status == 200
    deadline = time.monotonic() + 10
    while True:
        read = read_impressions(server.log_dir)
        assert read.torn_lines == 0
        log = read.frame
        rows = log[log["request_id"] == body["request_id"]]
        if len(rows) == 4 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert list(rows["item_id"]) == [i["item_id"] for i in body["items"]]
    assert list(rows["position"].astype(int)) == [1, 2, 3, 4]
    assert set(rows["version"]) == {"v1"} and set(rows["user_id"]) == {"u5"}
    shown = check_interactions(rows, "impressions").assign(request_id=list(rows["request_id"]))
    chosen = pd.DataFrame(
        {"user_id": ["u5"], "item_id": [body["items"][2]["item_id"]], "rating": [5.0],
         "timestamp": [float(shown["timestamp"].iloc[0]) + 60]}
    )  # fmt: skip
    examples = impressions_to_examples(shown, chosen, horizon_seconds=3600)
    assert list(examples["chosen"]) == [False, False, True, False]
    assert list(examples["rating"]) == [0.0, 0.0, 5.0, 0.0]


def test_overload_is_answered_503_quickly(server: Server) -> None:
    def one(i: int) -> tuple[int, float, Any]:
        start = time.perf_counter()
        status, body = server.recommend(f"u{i % 60}", k=MAX_K)
        return status, time.perf_counter() - start, body

    with ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(one, range(48)))
    statuses = [s for s, _, _ in results]
    assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses
    rejected = [(t, b) for s, t, b in results if s == 503]
    assert all("overloaded" in b["error"] for _, b in rejected)


def test_metrics_expose_counts_latency_versions_and_drift(server: Server) -> None:
    status, text = server.request("GET", "/metrics")
    assert status == 200
    for needle in (
        'recsys_requests_total{endpoint="/recommend",status="200"}',
        'recsys_requests_total{endpoint="/recommend",status="422"}',
        'recsys_errors_total{reason="malformed_json"}',
        "recsys_request_latency_seconds_bucket",
        'recsys_version_requests_total{role="canary",version="v2"}',
        'recsys_live_version{version="v1"} 1.0',
        "recsys_drift_psi{",
        "recsys_shadow_topk_overlap_count",
    ):
        assert needle in text, needle


def test_several_processes_follow_the_registry_and_share_metrics(
    server: Server, tmp_path: Path
) -> None:
    registry = Registry(tmp_path / "registry")
    assert registry.add(server.bundles["fp32"]) == "v1"
    assert registry.add(server.bundles["int8"]) == "v2"
    registry.promote("v1")
    port = _free_port()
    process = _start_serve(registry, port, "--processes", "2")
    multi = Server(port, registry, tmp_path / "logs", server.bundles, {}, {}, [])
    try:
        live: dict[int, str] = {}  # process id -> live version it reported

        def seen(version: str) -> Any:
            def check(health: dict[str, Any]) -> bool:
                live[health["process"]] = health["live"]
                return len(live) == 2 and set(live.values()) == {version}

            return check

        multi.wait_for(seen("v1"), seconds=120)  # both processes up with v1
        answers = [multi.recommend(f"u{i}", k=5) for i in range(20)]
        assert all(status == 200 and body["version"] == "v1" for status, body in answers)
        registry.promote("v2")
        multi.wait_for(seen("v2"), seconds=60)  # each process reloaded on its own
        answers = [multi.recommend(f"u{i}", k=5) for i in range(20)]
        assert all(status == 200 and body["version"] == "v2" for status, body in answers)
        _, text = multi.request("GET", "/metrics")
        assert 'recsys_requests_total{endpoint="/recommend",status="200"} 40.0' in text
        assert 'recsys_version_requests_total{role="live",version="v2"} 20.0' in text
        assert 'recsys_live_version{version="v2"} 1.0' in text
    finally:
        _stop(process, timeout=30, tail=3000)


def test_the_shared_listening_socket_is_tcp_so_answers_are_not_delayed() -> None:
    # protocol 0 here would leave Nagle on for every accepted connection (uvicorn #3149)
    from torchrec_recsys.serving.service import _listening_socket

    with _listening_socket("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP and sock.get_inheritable()
        sock.listen()
        conn = socket.create_connection(sock.getsockname())
        accepted, _ = sock.accept()
        with conn, accepted:
            assert accepted.proto == socket.IPPROTO_TCP  # what asyncio checks for TCP_NODELAY

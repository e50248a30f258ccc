"""Load test of the serving stack: real server subprocess, bounded asyncio HTTP client, loopback.

    python benchmarks/serve_load.py --bundle ml100k_fp32=BUNDLE --bundle ml100k_int8=BUNDLE \
        --rates 50,100,200 --concurrency 4,16 --seconds 10 \
        --rollout ml100k_fp32,ml100k_int8 --out results

For each bundle: a fresh registry (the bundle promoted), ``python -m torchrec_recsys serve``
on a free 127.0.0.1 port, then one case per (rate, concurrency): an *open-loop* schedule of
``rate x seconds`` requests (request i is due at ``i / rate``) sent over ``concurrency``
keep-alive connections. Latency is measured from the request's *due* time to the last byte of
the answer, so a server that falls behind is charged for the wait (no coordinated omission).
Requests: ``POST /recommend {user_id, k=10}``, users drawn from the bundle's users plus 10 %
unknown (cold-start) ones; the server retrieves ``--candidates`` (100) and ranks them.

``--rollout A,B``: A live, ``--rollout-rate`` (100) req/s for ``--rollout-seconds``; B is
promoted a quarter of the way in and rolled back at three quarters; every non-200 answer is
counted as a failure.

Bounded: at most ``rate x seconds`` requests per case, a 10 s client timeout per request, a
``seconds + 15`` s cap per case (requests not answered by then count as errors).
Writes ``<out>.json`` and a markdown table ``<out>.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import (  # noqa: E402
    CpuWindow,
    load_average,
    machine_info,
    other_cpu_share,
)

from torchrec_recsys.distributed.env import free_loopback_port  # noqa: E402
from torchrec_recsys.observability.provenance import start_run_meta, write_result_to  # noqa: E402
from torchrec_recsys.observability.timing import percentile  # noqa: E402
from torchrec_recsys.serving.registry import Registry  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PERCENTILES = (50, 95, 99)
CASE_GRACE_S = 15.0
"""A case stops this long after its last request was due; what is unanswered is an error."""


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int, body: bytes
) -> tuple[int, bytes]:
    """One HTTP/1.1 keep-alive POST /recommend; returns (status, body)."""
    writer.write(
        b"POST /recommend HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (port, len(body), body)
    )
    await writer.drain()
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return status, await reader.readexactly(length)


async def run_case(
    port: int, users: list[str], rate: float, concurrency: int, seconds: float, k: int
) -> dict[str, Any]:
    """Open-loop load at ``rate`` requests/s over ``concurrency`` connections."""
    total = int(rate * seconds)
    rng = random.Random(0)
    bodies = [
        json.dumps(
            {"user_id": rng.choice(users) if rng.random() > 0.1 else f"new-{i}", "k": k}
        ).encode()
        for i in range(total)
    ]
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    versions: dict[str, int] = {}
    server_ms: list[float] = []
    next_index = 0
    start = time.perf_counter() + 0.05

    async def worker() -> None:
        nonlocal next_index
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while next_index < total:
                i = next_index
                next_index += 1
                due = start + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                try:
                    status, payload = await asyncio.wait_for(
                        _request(reader, writer, port, bodies[i]), timeout=10
                    )
                except (TimeoutError, OSError, ValueError, asyncio.IncompleteReadError) as exc:
                    statuses[type(exc).__name__] = statuses.get(type(exc).__name__, 0) + 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                latencies.append(time.perf_counter() - due)
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if status == 200:
                    answer = json.loads(payload)
                    versions[answer["version"]] = versions.get(answer["version"], 0) + 1
                    server_ms.append(answer["latency_ms"])
        finally:
            writer.close()

    with CpuWindow() as window:
        tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
        _, pending = await asyncio.wait(tasks, timeout=seconds + CASE_GRACE_S)
        for task in pending:  # the server fell too far behind: stop, count what is left
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    wall = window.wall_s
    ok = statuses.get("200", 0)
    if total - sum(statuses.values()):
        statuses["not_answered_in_time"] = total - sum(statuses.values())
    return {
        "rate": rate,
        "concurrency": concurrency,
        "requests": total,
        "ok": ok,
        "errors": total - ok,
        "statuses": statuses,
        "versions": versions,
        "achieved_rps": ok / wall,
        **{f"p{q}_ms": 1000 * percentile(latencies, q) for q in PERCENTILES},
        "server_p50_ms": percentile(server_ms, 50),
        "server_p95_ms": percentile(server_ms, 95),
        "other_cpu_share": other_cpu_share(wall, window.machine_busy_s, window.own_cpu_s),
        "load_average": load_average(),
    }


def _get(port: int, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


class Server:
    """``serve`` in a subprocess on a free loopback port."""

    def __init__(
        self, registry: Path, candidates: int, max_concurrency: int, processes: int = 1
    ) -> None:
        self.port = free_loopback_port()
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torchrec_recsys",
                "serve",
                "--registry",
                str(registry),
                "--port",
                str(self.port),
                "--candidates",
                str(candidates),
                "--max-concurrency",
                str(max_concurrency),
                "--poll-seconds",
                "0.2",
                "--processes",
                str(processes),
            ],  # fmt: skip
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 180
        ready: set[int] = set()  # server processes that answered with a live version
        while True:
            try:
                health = _get(self.port, "/healthz")
                if health["live"]:
                    ready.add(health["process"])
                if len(ready) >= processes:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError("the server did not come up")
            time.sleep(0.25)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _users(bundle: Path) -> list[str]:
    return json.loads((bundle / "retriever" / "snapshot.json").read_text())["user_ids"]


def _registry(bundles: list[Path]) -> Registry:
    registry = Registry(Path(tempfile.mkdtemp(prefix="serve_load_registry_")))
    names = [registry.add(b) for b in bundles]
    registry.promote(names[0])
    return registry


async def _rollout(
    server: Server, registry: Registry, users: list[str], seconds: float, k: int, rate: float
) -> dict[str, Any]:
    """``rate`` requests/s while the second version is promoted and rolled back."""

    async def switch() -> list[dict[str, Any]]:
        events = []
        await asyncio.sleep(seconds / 4)
        await asyncio.to_thread(registry.promote, "v2")
        events.append({"t": time.time(), "event": "promote v2"})
        await asyncio.sleep(seconds / 2)
        await asyncio.to_thread(registry.rollback)
        events.append({"t": time.time(), "event": "rollback"})
        return events

    case, events = await asyncio.gather(run_case(server.port, users, rate, 8, seconds, k), switch())
    return {**case, "events": events}


def _table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| bundle | items | index | rate (req/s) | conc. | requests | errors | achieved "
        "req/s | p50 ms | p95 ms | p99 ms | load avg (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['bundle']} | {r['items']} | {r['index']} | {r['rate']:.0f} | "
            f"{r['concurrency']} | {r['requests']} | {r['errors']} | {r['achieved_rps']:.1f} | "
            f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['load_average'][0] if r['load_average'] else ''} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bundle", action="append", required=True, help="NAME=BUNDLE folder (repeatable)"
    )
    parser.add_argument("--rates", default="50,100,200", help="requests/s, comma-separated")
    parser.add_argument("--concurrency", default="4,16", help="connections, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each case")
    parser.add_argument("-k", type=int, default=10, help="items per answer")
    parser.add_argument("--candidates", type=int, default=100, help="retrieved, then ranked")
    parser.add_argument("--max-concurrency", type=int, default=32, help="server admission")
    parser.add_argument("--processes", type=int, default=1, help="server processes")
    parser.add_argument("--rollout", help="A,B: promote B and roll back under 100 req/s")
    parser.add_argument("--rollout-seconds", type=float, default=20.0, help="rollout length")
    parser.add_argument("--rollout-rate", type=float, default=100.0, help="rollout req/s")
    parser.add_argument("--out", default="results", help="results folder, or a .json path")
    parser.add_argument("--topic", default="serve_load", help="result topic")
    args = parser.parse_args(argv)
    meta = start_run_meta(threads=1)
    bundles = dict(item.split("=", 1) for item in args.bundle)
    rates = [float(x) for x in args.rates.split(",")]
    levels = [int(x) for x in args.concurrency.split(",")]
    config = {
        "command": " ".join(["python", *sys.argv]),
        "rates": rates,
        "concurrency": levels,
        "seconds": args.seconds,
        "k": args.k,
        "candidates": args.candidates,
        "server_max_concurrency": args.max_concurrency,
        "server_processes": args.processes,
        "machine": machine_info(threads=1),
    }
    print(json.dumps(config))
    results: list[dict[str, Any]] = []
    for name, folder in bundles.items():
        manifest = json.loads((Path(folder) / "manifest.json").read_text())
        registry = _registry([Path(folder)])
        server = Server(registry.root, args.candidates, args.max_concurrency, args.processes)
        try:
            users = _users(Path(folder))
            asyncio.run(run_case(server.port, users, 20.0, 2, 2.0, args.k))  # warm-up
            for concurrency in levels:
                for rate in rates:
                    case = asyncio.run(
                        run_case(server.port, users, rate, concurrency, args.seconds, args.k)
                    )
                    case.update(
                        bundle=name,
                        items=manifest["items"],
                        index=manifest["index_kind"],
                        quantization=manifest["quantization"],
                    )
                    results.append(case)
                    print(json.dumps(case), flush=True)
        finally:
            server.stop()
    rollout = None
    if args.rollout:
        first, second = args.rollout.split(",")
        registry = _registry([Path(bundles[first]), Path(bundles[second])])
        server = Server(registry.root, args.candidates, args.max_concurrency, args.processes)
        try:
            users = _users(Path(bundles[first]))
            rollout = asyncio.run(
                _rollout(server, registry, users, args.rollout_seconds, args.k, args.rollout_rate)
            )
            rollout.update(bundle=f"{first} -> {second} -> {first}")
            print(json.dumps(rollout), flush=True)
        finally:
            server.stop()
    table = _table(results)
    if rollout:
        table += (
            f"\n\nPromote + rollback under {rollout['rate']:.0f} req/s "
            f"({rollout['bundle']}): {rollout['requests']} requests, {rollout['errors']} "
            f"failed, versions answered {rollout['versions']}, p95 {rollout['p95_ms']:.1f} ms"
        )
    payload = {"config": config, "results": results, "rollout": rollout}
    md = f"`{config['command']}`\n\n{table}\n"
    print(f"wrote {write_result_to(args.out, args.topic, payload, meta, markdown=md)}")
    print(table)


if __name__ == "__main__":
    main()

"""CPU cost of one retrieve-then-rank request, in process (no HTTP), per serving bundle.

    python benchmarks/serve_cpu.py --bundle ml100k_fp32=BUNDLE ... \
        --out results

Loads each bundle as the service does (``serving.bundle.load_bundle``), warms up with 20
users, then times each path (top 10 of 100 retrieved) for up to 400 known users, one torch
thread: ``offline`` = ``retrieval.two_stage.recommend`` (per-request tables), ``online`` =
``serving.online.recommend_online`` (what the service runs: batches gathered from the
bundle's feature rows; each user requested once, so no cached query embedding), ``online,
repeat`` = the same users again (query embeddings cached). Per request it records the
*thread CPU time* (``time.thread_time``: what the request costs, whatever else runs on the
machine) and the wall time (what it took on this machine now). On a shared machine the two
differ by the share of the CPU other processes took. Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_utils import load_average, machine_info  # noqa: E402

from torchrec_recsys.observability.provenance import start_run_meta, write_result_to  # noqa: E402
from torchrec_recsys.observability.timing import percentile  # noqa: E402
from torchrec_recsys.retrieval.two_stage import recommend  # noqa: E402
from torchrec_recsys.serving.bundle import ServingBundle, load_bundle  # noqa: E402
from torchrec_recsys.serving.online import recommend_online  # noqa: E402


def _paths(bundle: ServingBundle) -> dict[str, Callable[[str], object]]:
    """Path name -> one request for a user (top 10 of 100)."""
    return {
        "offline": lambda user: recommend(
            bundle.retriever, bundle.ranker, bundle.index, user, 10, 100
        ),
        "online": lambda user: recommend_online(
            bundle.retriever, bundle.ranker, bundle.index, bundle.online, user, 10, 100
        ),
        # the same users again: their query embeddings are now cached
        "online, repeat": lambda user: recommend_online(
            bundle.retriever, bundle.ranker, bundle.index, bundle.online, user, 10, 100
        ),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", action="append", required=True, help="NAME=BUNDLE")
    parser.add_argument("--users", type=int, default=400, help="timed requests per bundle")
    parser.add_argument("--out", default="results", help="results folder, or a .json path")
    args = parser.parse_args(argv)
    meta = start_run_meta(threads=1)
    torch.set_num_threads(1)
    rows = []
    for item in args.bundle:
        name, folder = item.split("=", 1)
        bundle = load_bundle(folder)
        users = bundle.retriever.data.user_ids
        for path, answer in _paths(bundle).items():
            for user in users[:20]:  # warm-up
                answer(user)
            cpu, wall = [], []
            for user in users[20 : 20 + args.users]:
                c, w = time.thread_time(), time.perf_counter()
                answer(user)
                cpu.append(1000 * (time.thread_time() - c))
                wall.append(1000 * (time.perf_counter() - w))
            row = {
                "bundle": name,
                "path": path,
                "items": bundle.manifest["items"],
                "index": bundle.manifest["index_kind"],
                "quantization": bundle.manifest["quantization"],
                "requests": len(cpu),
                "cpu_p50_ms": percentile(cpu, 50),
                "cpu_p95_ms": percentile(cpu, 95),
                "wall_p50_ms": percentile(wall, 50),
                "wall_p95_ms": percentile(wall, 95),
                "load_average": load_average(),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    config = {"command": " ".join(["python", *sys.argv]), "machine": machine_info(threads=1)}
    lines = [
        "| bundle | path | items | index | requests | CPU p50 ms | CPU p95 ms | wall p50 ms | "
        "wall p95 ms | load avg (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['bundle']} | {r['path']} | {r['items']} | {r['index']} | {r['requests']} | "
            f"{r['cpu_p50_ms']:.2f} | {r['cpu_p95_ms']:.2f} | {r['wall_p50_ms']:.2f} | "
            f"{r['wall_p95_ms']:.2f} | {r['load_average'][0] if r['load_average'] else ''} |"
        )
    table = "\n".join(lines)
    payload = {"config": config, "rows": rows}
    md = f"`{config['command']}`\n\n{table}\n"
    print(f"wrote {write_result_to(args.out, 'serve_cpu', payload, meta, markdown=md)}")
    print(table)


if __name__ == "__main__":
    main()

"""Growth curves (small sizes): time and peak memory as the problem grows.

Cases (each row records seconds, peak RSS growth over the block, and the load average):

    catalogue      Q queries x I items (D = 32): the project's retrieval evaluation core
                   (``metrics.retrieval.target_ranks``), its chunked top-k, FAISS flat search
                   (k = 100) and, where it fits, a dense Q x I matmul + top-k
    eval_pipeline  the retrieval part of ``evaluate-pipeline`` at U users x I items
                   (``chunked_top_k``, 100 candidates), against the dense U x I matrix it
                   used to build (its size computed, not allocated)
    interactions   ``build_dataset`` of N synthetic interactions (in memory) + DLRM step time
    sid            RQ-VAE fit by steps, encode and quality report on N items (random
                   clustered 384-d embeddings; the text encoder is not part of it)
    tables         the Criteo DLRM of ``dlrm_scale_benchmark.py`` with N tables of
                   ``--rows-per-table`` rows (1 process): build seconds, ms per step (p50
                   of windows) and peak RSS

    python benchmarks/growth_benchmark.py --case tables --sizes 1,4,16,26,64 --threads 1 \
        --out results

    python benchmarks/growth_benchmark.py --case catalogue --sizes 1000,10000,100000,1000000 \\
        --out results

The machine is shared: every row records the 1-minute load average.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_utils as bu  # noqa: E402

from torchrec_recsys.distributed.threads import configure_threads  # noqa: E402
from torchrec_recsys.metrics.retrieval import chunked_top_k, target_ranks  # noqa: E402
from torchrec_recsys.observability.provenance import start_run_meta, write_result_to  # noqa: E402

MiB = 2**20


def timed(fn: Any) -> tuple[Any, float, float]:
    """``(result, seconds, peak RSS growth in MiB)`` of ``fn()``."""
    with bu.PeakMemory() as peak:
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
    return result, seconds, peak.peak_delta_bytes / MiB


def dense_top_k(q: torch.Tensor, items: torch.Tensor, k: int) -> Any:
    """The dense reference: the whole [Q, I] score matrix, then top-k."""
    return torch.topk(q @ items.T, k, dim=1)


def train_steps(model: Any, optimizer: Any, batches: Any, steps: int) -> None:
    """``steps`` plain forward/backward/update steps."""
    for _ in range(steps):
        loss, _ = model(next(batches))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def catalogue(
    sizes: list[int], queries: int, dim: int = 32, repeats: int = 3
) -> list[dict[str, Any]]:
    """Median seconds of each method per size over ``repeats`` interleaved rounds, and its
    ratio to the FAISS flat search of the same queries."""
    rows = []
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(queries, dim, generator=gen)  # [Q, D]
    for n in sizes:
        items = torch.randn(n, dim, generator=gen)  # [I, D]
        targets = torch.randint(0, n, (queries,), generator=gen)
        index = faiss.IndexFlatIP(dim)
        index.add(items.numpy())
        methods = {
            "target_ranks": partial(target_ranks, q, items, targets),
            "chunked_top_k": partial(chunked_top_k, q, items, 100),
            "faiss_flat_k100": partial(index.search, q.numpy(), 100),
        }
        if queries * n <= 2 * 10**8:
            methods["dense_matmul_top_k"] = partial(dense_top_k, q, items, 100)
        for fn in methods.values():
            fn()  # warm-up
        runs: dict[str, list[float]] = {name: [] for name in methods}
        peaks: dict[str, float] = dict.fromkeys(methods, 0.0)
        for _ in range(repeats):  # interleaved: load from elsewhere falls on every method alike
            for name, fn in methods.items():
                _, seconds, peak = timed(fn)
                runs[name].append(seconds)
                peaks[name] = max(peaks[name], peak)
        faiss_s = statistics.median(runs["faiss_flat_k100"])
        for name, times in runs.items():
            rows.append(
                {
                    "case": "catalogue",
                    "items": n,
                    "queries": queries,
                    "method": name,
                    "seconds": statistics.median(times),
                    "runs_s": [round(t, 4) for t in times],
                    "vs_faiss_flat": round(statistics.median(times) / faiss_s, 3),
                    "peak_rss_growth_mib": peaks[name],
                    "load1": bu.load_average()[0],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def eval_pipeline(users: int, items: int, dim: int = 32) -> list[dict[str, Any]]:
    gen = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(users, dim, generator=gen), dim=1)
    v = torch.nn.functional.normalize(torch.randn(items, dim, generator=gen), dim=1)
    _, seconds, peak = timed(lambda: chunked_top_k(q, v, 100))
    return [
        {
            "case": "eval_pipeline",
            "users": users,
            "items": items,
            "seconds": seconds,
            "peak_rss_growth_mib": peak,
            "process_peak_rss_mib": bu.read_proc_status().get("VmHWM", 0) / MiB,
            "dense_matrix_mib_avoided": users * items * 4 / MiB,
            "load1": bu.load_average()[0],
        }
    ]


def interactions(sizes: list[int], steps: int) -> list[dict[str, Any]]:
    from torchrec_recsys.app import builders
    from torchrec_recsys.config import load_config
    from torchrec_recsys.data.loader import ShardInfo, train_batches
    from torchrec_recsys.data.synthetic import write_synthetic_dataset
    from torchrec_recsys.distributed.env import init_distributed

    ctx = init_distributed()
    rows = []
    for n in sizes:
        per_user = 50
        with tempfile.TemporaryDirectory() as tmp:
            paths = write_synthetic_dataset(
                tmp,
                num_users=n // per_user,
                num_items=max(n // 100, 300),
                interactions_per_user=per_user,
            )
            cfg = load_config(
                None,
                [
                    "--data.source=files",
                    f"--data.interactions_path={paths.interactions}",
                    f"--data.items_path={paths.items}",
                    f"--data.users_path={paths.users}",
                    "--train.progress_bar=false",
                ],
            )
            data, build_seconds, build_peak = timed(partial(builders.build_data, cfg))
        model, optimizer = builders.build_sharded(cfg, data, ctx)
        batches = train_batches(
            data.splits["train"], data.spec, cfg.train.batch_size, ShardInfo(), seed=0, epoch=0
        )
        run = partial(train_steps, model, optimizer, batches, steps)
        run()  # warm-up (the same number of steps)
        _, seconds, step_peak = timed(run)
        rows.append(
            {
                "case": "interactions",
                "interactions": n,
                "build_seconds": build_seconds,
                "build_peak_rss_growth_mib": build_peak,
                "ms_per_step": 1e3 * seconds / steps,
                "step_peak_rss_growth_mib": step_peak,
                "process_peak_rss_mib": bu.read_proc_status().get("VmHWM", 0) / MiB,
                "load1": bu.load_average()[0],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
        del data, model, optimizer
    return rows


def sid(sizes: list[int], max_steps: int) -> list[dict[str, Any]]:
    from torchrec_recsys.semantic_ids.report import build_report
    from torchrec_recsys.semantic_ids.rqvae import RQVAE, RQVAEConfig

    rows = []
    rng = np.random.default_rng(0)
    genre_names = [f"g{i}" for i in range(5000)]  # a large category vocabulary
    for n in sizes:
        centres = rng.normal(size=(256, 384)).astype(np.float32)
        labels = rng.integers(0, 256, size=n)
        x = centres[labels] + 0.3 * rng.normal(size=(n, 384)).astype(np.float32)  # [N, 384]
        genres = ["|".join(rng.choice(genre_names, size=3)) for _ in range(n)]
        model = RQVAE(RQVAEConfig(codebook_size=256, max_steps=max_steps))
        _, fit_seconds, fit_peak = timed(lambda: model.fit(x))  # noqa: B023
        codes, encode_seconds, _ = timed(lambda: model.encode(x))  # noqa: B023
        _, report_seconds, report_peak = timed(
            lambda: build_report(codes, 256, genres=genres)  # noqa: B023
        )
        rows.append(
            {
                "case": "sid",
                "items": n,
                "max_steps": max_steps,
                "fit_seconds": fit_seconds,
                "fit_peak_rss_growth_mib": fit_peak,
                "encode_seconds": encode_seconds,
                "report_seconds": report_seconds,
                "report_peak_rss_growth_mib": report_peak,
                "dense_items_x_categories_mib_avoided": n * len(genre_names) / MiB,
                "load1": bu.load_average()[0],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def tables(sizes: list[int], rows_per_table: int, steps: int, windows: int) -> list[dict[str, Any]]:
    import itertools

    from dlrm_scale_benchmark import build_sharded_dlrm, criteo_batches, table_spec
    from train_pipeline_benchmark import time_engine

    from torchrec_recsys.distributed.env import init_distributed
    from torchrec_recsys.observability.timing import percentile

    ctx = init_distributed()
    batch_size = 1024
    rows = []
    for n in sizes:
        spec = table_spec([rows_per_table] * n, 16)
        with bu.PeakMemory() as peak:
            start = time.perf_counter()
            model, optimizer, _ = build_sharded_dlrm(spec, "table_wise", ctx, batch_size)
            build_seconds = time.perf_counter() - start
            batches = criteo_batches(spec, batch_size, 8, seed=0)
            run = partial(
                time_engine, "sparse_dist", model, optimizer, itertools.cycle(batches), ctx
            )
            found = run(5, steps, windows)
        rows.append(
            {
                "case": "tables",
                "tables": n,
                "rows_per_table": rows_per_table,
                "dim": 16,
                "batch_size": batch_size,
                "build_seconds": build_seconds,
                "ms_per_step": percentile([1e3 * w["seconds"] / steps for w in found], 50),
                "windows_ms_per_step": [1e3 * w["seconds"] / steps for w in found],
                "peak_rss_growth_mib": peak.peak_delta_bytes / MiB,
                "process_peak_rss_mib": bu.read_proc_status().get("VmHWM", 0) / MiB,
                "weights_mib": n * rows_per_table * 16 * 4 / MiB,
                "load1": bu.load_average()[0],
                "window_load1": [w["load1"] for w in found],
            }
        )
        print(json.dumps({k: v for k, v in rows[-1].items() if "window" not in k}), flush=True)
        del model, optimizer, batches
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--case",
        choices=("catalogue", "eval_pipeline", "interactions", "sid", "tables"),
        required=True,
    )
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated sizes")
    parser.add_argument("--queries", type=int, default=2000, help="catalogue: queries")
    parser.add_argument("--repeats", type=int, default=3, help="catalogue: interleaved rounds")
    parser.add_argument("--users", type=int, default=20000, help="eval_pipeline: users")
    parser.add_argument("--items", type=int, default=150000, help="eval_pipeline: items")
    parser.add_argument("--steps", type=int, default=50, help="interactions: timed steps")
    parser.add_argument("--max-steps", type=int, default=2000, help="sid: RQ-VAE steps")
    parser.add_argument("--rows-per-table", type=int, default=100_000, help="tables: rows each")
    parser.add_argument("--windows", type=int, default=5, help="tables: timed windows")
    parser.add_argument("--threads", default=None, help="threads (default: the project policy)")
    parser.add_argument("--out", default="results", help="results folder, or a .json path")
    args = parser.parse_args(argv)
    threads = configure_threads(args.threads)
    meta = start_run_meta(threads=threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.case == "catalogue":
        rows = catalogue(sizes, args.queries, repeats=args.repeats)
    elif args.case == "eval_pipeline":
        rows = eval_pipeline(args.users, args.items)
    elif args.case == "interactions":
        rows = interactions(sizes, args.steps)
    elif args.case == "tables":
        rows = tables(sizes, args.rows_per_table, args.steps, args.windows)
    else:
        rows = sid(sizes, args.max_steps)
    result = {
        "benchmark": f"growth_{args.case}",
        "command": "python " + " ".join(sys.argv),
        "threads": threads,
        "machine": bu.machine_info(threads=threads),
        "rows": rows,
    }
    # an explicit --threads names the file, so runs at 1 and 2 threads on one day both stay
    topic = f"growth_{args.case}" + (f"_t{threads}" if args.threads else "")
    print(f"wrote {write_result_to(args.out, topic, result, meta)}")


if __name__ == "__main__":
    main()

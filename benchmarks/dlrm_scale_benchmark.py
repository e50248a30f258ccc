"""End-to-end DLRM throughput on Criteo-shaped synthetic data, per table size and sharding.

The model is the project's DLRM (``models.dlrm.build_dlrm`` + ``tasks.RankingTask``) with the
layers, embedding dim and optimizers of ``configs/criteo_synthetic_dlrm.toml`` (dim 16, the
reference DLRM's Criteo Kaggle setting), sharded by ``distributed.sharding.shard_model``
(planner -> DistributedModelParallel -> fused sparse + dense optimizers) over ``--nproc``
processes on gloo, each table forced to one sharding type. Batches come from
``data.criteo.synthetic_criteo_blocks`` (Zipf-distributed 32-bit values per column, hashed
into each table as the reference DLRM does with ``--max-ind-range``), built before timing::

    keys    cat_0 .. cat_{T-1}          (one ID per example per table)
    values  [T * B] row ids             lengths [T * B] all 1
    dense   [B, 13]  labels [B]

Table sizes (``--rows``): a number N = T tables of N rows each; ``kaggle`` = the 26 table
sizes of the Criteo Kaggle dataset capped at 10^7 rows (``--max-ind-range 10000000``: 33.8M
rows in all, 2.2 GB of fp32 weights at dim 16). 26 x 10^7 rows would be 16.6 GB of weights
plus optimizer state: more than this 24 GB machine shared with other jobs can give.

Per case it reports p50 ms/step and samples/s over ``--windows`` windows of ``--steps`` steps
after ``--warmup`` steps (the load average beside every window), the peak RSS of each rank,
and what the plan put on each rank (shards, rows, MiB of weights).

    python benchmarks/dlrm_scale_benchmark.py --threads 1 --rows 1e3 1e5 1e6 kaggle \\
        --sharding-types table_wise row_wise column_wise \\
        --out results/dlrm_scale.json     # -> results/dlrm_scale_<hw>_<date>.json
    python benchmarks/plot_scale.py      # markdown table + scale_dlrm.png
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_utils as bu  # noqa: E402
from train_pipeline_benchmark import time_engine  # noqa: E402

from torchrec_recsys.config import ShardingConfig, load_config  # noqa: E402
from torchrec_recsys.data.batch import Batch, build_kjt  # noqa: E402
from torchrec_recsys.data.criteo import (  # noqa: E402
    NUM_SPARSE,
    criteo_spec,
    encode_dense,
    hash_rows,
    one_hot_columns,
    synthetic_criteo_blocks,
)
from torchrec_recsys.data.features import FeatureSpec  # noqa: E402
from torchrec_recsys.distributed.env import (  # noqa: E402
    DistContext,
    free_loopback_port,
    init_distributed,
    shutdown_distributed,
)
from torchrec_recsys.distributed.sharding import shard_model  # noqa: E402
from torchrec_recsys.distributed.threads import configure_threads  # noqa: E402
from torchrec_recsys.models.dlrm import build_dlrm  # noqa: E402
from torchrec_recsys.models.tasks import RankingTask  # noqa: E402
from torchrec_recsys.observability.provenance import (  # noqa: E402
    start_run_meta,
    write_result_to,
)
from torchrec_recsys.observability.timing import percentile  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "criteo_synthetic_dlrm.toml"
RESULTS = Path(__file__).resolve().parents[1] / "results"
SHARDING_TYPES = ("table_wise", "row_wise", "column_wise")
# Criteo Kaggle (Display Advertising Challenge) rows per categorical feature, as in TorchRec's
# DLRM example; capped at KAGGLE_CAP like the reference DLRM's --max-ind-range.
KAGGLE_ROWS = (
    1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
    27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572,
)  # fmt: skip
KAGGLE_CAP = 10_000_000
MAX_CARDINALITY = 1_000_000  # distinct raw values per column in the synthetic data
MiB = 2**20


def table_rows(size: str, num_tables: int = NUM_SPARSE) -> list[int]:
    """Rows per table for a ``--rows`` token: ``kaggle`` or a number (``1e6`` style).

    Raises:
        ValueError: neither ``kaggle`` nor a positive whole number.
    """
    if size == "kaggle":
        return [min(r, KAGGLE_CAP) for r in KAGGLE_ROWS]
    value = float(size)
    if value < 1 or value != int(value):
        raise ValueError(f"--rows {size!r}: expected 'kaggle' or a positive whole number")
    return [int(value)] * num_tables


def table_spec(rows: list[int], dim: int) -> FeatureSpec:
    """The Criteo spec (13 dense features, one one-ID table per categorical) for any T."""
    return criteo_spec(rows, dim, names=[f"cat_{j}" for j in range(len(rows))])


def criteo_batches(spec: FeatureSpec, batch_size: int, count: int, seed: int) -> list[Batch]:
    """``count`` batches of Criteo-shaped synthetic examples hashed into ``spec``'s tables.

    Table ``j`` reads column ``j mod 26`` of the generator, salted by ``j // 26`` so tables
    beyond the 26th do not repeat the same ids.
    """
    rows = [f.num_embeddings for f in spec.sparse]
    cardinality = min(max(rows), MAX_CARDINALITY)
    n = batch_size * count
    blocks = list(synthetic_criteo_blocks(n, seed=seed, cardinality=cardinality, block=n))
    labels, ints, raw = blocks[0]  # [n], [n, 13], [n, 26]
    cols = np.arange(len(rows))
    salt = (cols // NUM_SPARSE).astype(np.int64) * 0x9E3779B1  # [T]
    raw_t = np.where(raw[:, cols % NUM_SPARSE] < 0, -1, raw[:, cols % NUM_SPARSE] ^ salt)
    names = [f.name for f in spec.sparse]
    columns = one_hot_columns(hash_rows(raw_t, rows), names)  # [n, T] -> T jagged columns
    dense = torch.from_numpy(encode_dense(ints))  # [n, 13]
    target = torch.from_numpy(labels.astype(np.float32))  # [n]
    out = []
    for b in range(count):
        idx = torch.arange(b * batch_size, (b + 1) * batch_size)  # [B]
        out.append(
            Batch(
                dense_features=dense[idx],
                sparse_features=build_kjt(columns, idx, spec.sparse),
                labels=target[idx],
                weights=torch.ones(batch_size),
                user_rows=torch.zeros(batch_size, dtype=torch.int64),
                item_rows=torch.zeros(batch_size, dtype=torch.int64),
            )
        )
    return out


def build_sharded_dlrm(
    spec: FeatureSpec, sharding_type: str, ctx: DistContext, batch_size: int
) -> tuple[Any, Any, dict[str, Any]]:
    """The criteo config's DLRM on meta, every table ``sharding_type``, sharded over ``ctx``.

    Column-wise tables are split into ``world_size`` column shards (``column_wise_min_dim``;
    TorchRec's default of 128 would leave a dim-16 table whole).

    Returns:
        (DMP model, combined optimizer, this rank's share of the plan)
    """
    cfg = load_config(str(CONFIG), [])
    dim = spec.sparse[0].embedding_dim
    task = RankingTask(
        build_dlrm(
            spec,
            cfg.model.dense_arch_layers,
            cfg.model.over_arch_layers,
            sparse_device="meta",
            dense_device=str(ctx.device),
        )
    )
    options = ShardingConfig(
        default=sharding_type, column_wise_min_dim=max(1, dim // ctx.world_size)
    )
    model, optimizer = shard_model(
        task, spec.table_names(), options, cfg.optimizer, ctx, batch_size
    )
    return model, optimizer, rank_share(model, ctx.rank)


def rank_share(model: Any, rank: int) -> dict[str, Any]:
    """Shards, rows and MiB of fp32 weights the plan put on ``rank``."""
    shards = rows = elems = 0
    for module_plan in model.plan.plan.values():
        for ps in module_plan.values():
            for shard in ps.sharding_spec.shards:
                if shard.placement.rank() == rank:
                    shards += 1
                    rows += shard.shard_sizes[0]
                    elems += shard.shard_sizes[0] * shard.shard_sizes[1]
    return {"shards": shards, "rows": rows, "weights_mib": elems * 4 / MiB}


def run_case(
    size: str, sharding_type: str, args: argparse.Namespace, ctx: DistContext
) -> dict[str, Any]:
    """Build, warm up and time one (table sizes, sharding type) case on this rank."""
    rows = table_rows(size, args.tables)
    spec = table_spec(rows, args.dim)
    gc.collect()
    with bu.PeakMemory() as peak:
        start = time.perf_counter()
        model, optimizer, share = build_sharded_dlrm(spec, sharding_type, ctx, args.batch_size)
        build_s = time.perf_counter() - start
        batches = criteo_batches(spec, args.batch_size, args.batches, seed=ctx.rank)
        windows = time_engine(
            args.engine,
            model,
            optimizer,
            itertools.cycle(batches),
            ctx,
            args.warmup,
            args.steps,
            args.windows,
        )
    ms = [1e3 * w["seconds"] / args.steps for w in windows]
    global_batch = args.batch_size * ctx.world_size
    row = {
        "rows": size,
        "table_rows": rows,
        "total_rows": sum(rows),
        "weights_mib": sum(rows) * args.dim * 4 / MiB,
        "sharding_type": sharding_type,
        "world_size": ctx.world_size,
        "threads_per_rank": torch.get_num_threads(),
        "batch_per_rank": args.batch_size,
        "p50_ms_per_step": percentile(ms, 50),
        "p50_samples_per_second": percentile(
            [args.steps * global_batch / w["seconds"] for w in windows], 50
        ),
        "windows": windows,
        "build_seconds": build_s,
        "rank": {
            **share,
            "peak_rss_growth_mib": peak.peak_delta_bytes / MiB,
            "peak_rss_mib": bu.read_proc_status().get("VmHWM", 0) / MiB,
        },
    }
    del model, optimizer, batches
    gc.collect()
    return row


def _rank_main(local_rank: int, args: argparse.Namespace, port: int) -> None:
    """One spawned rank: join the gloo group, run every case, rank 0 writes the JSON."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(local_rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(args.nproc),
        LOCAL_WORLD_SIZE=str(args.nproc),
    )
    warnings.filterwarnings("ignore")
    configure_threads(args.threads)
    ctx = init_distributed()
    rows: list[dict[str, Any]] = []
    try:
        for size in args.rows:
            for sharding_type in args.sharding_types:
                row = run_case(size, sharding_type, args, ctx)
                per_rank: list[Any] = [None] * ctx.world_size
                torch.distributed.all_gather_object(per_rank, row["rank"])
                row["per_rank"] = per_rank
                del row["rank"]
                rows.append(row)
                if ctx.is_main:
                    write(args, rows)
                    loads = ", ".join(str(w["load1"]) for w in row["windows"])
                    rss = "/".join(f"{r['peak_rss_mib']:.0f}" for r in per_rank)
                    print(
                        f"rows={size:>7} {sharding_type:<11} {row['p50_ms_per_step']:8.2f} "
                        f"ms/step {row['p50_samples_per_second']:>9,.0f} samples/s  peak RSS "
                        f"{rss} MiB  "
                        f"load {loads}",
                        flush=True,
                    )
    finally:
        shutdown_distributed()


def write(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    """Write the rows so far (after every case: a long run leaves its results behind)."""
    doc = {
        "benchmark": "dlrm_scale",
        "command": "python benchmarks/dlrm_scale_benchmark.py " + " ".join(args.argv),
        "settings": {
            k: v
            for k, v in vars(args).items()
            if k not in ("argv", "out", "run_meta") and v is not None
        },
        "model_config": str(CONFIG.relative_to(CONFIG.parents[1])),
        "machine": bu.machine_info(threads=args.threads),
        "rows": rows,
    }
    args.written = str(write_result_to(args.out, "dlrm_scale", doc, args.run_meta))


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(prog="dlrm_scale_benchmark", description=__doc__.splitlines()[0])
    p.add_argument(
        "--rows",
        nargs="+",
        default=["1e3", "1e5", "1e6", "kaggle"],
        help="table sizes: N (every table N rows) or 'kaggle' (Criteo Kaggle sizes, cap 1e7)",
    )
    p.add_argument(
        "--sharding-types", nargs="+", default=list(SHARDING_TYPES), choices=SHARDING_TYPES
    )
    p.add_argument("--tables", type=int, default=NUM_SPARSE, help="tables for numeric --rows")
    p.add_argument("--dim", type=int, default=16, help="embedding dim (the config's: 16)")
    p.add_argument("--nproc", type=int, default=2, help="processes (gloo over loopback)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--batch-size", type=int, default=1024, help="examples per process per step")
    p.add_argument("--batches", type=int, default=8, help="distinct prebuilt batches, cycled")
    p.add_argument("--engine", default="sparse_dist", choices=("sparse_dist", "base", "none"))
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--steps", type=int, default=10, help="steps per timed window")
    p.add_argument("--windows", type=int, default=5, help="timed windows (p50 over them)")
    p.add_argument(
        "--out",
        default=str(RESULTS),
        help="results folder, or a .json path whose name is the topic",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point: validate, spawn ``--nproc`` ranks; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    args.run_meta = start_run_meta(threads=args.threads)
    try:
        for size in args.rows:
            table_rows(size, args.tables)
    except ValueError as err:
        print(f"dlrm_scale_benchmark: error: {err}", file=sys.stderr)
        return 2
    import torch.multiprocessing as mp

    print(
        f"dlrm_scale_benchmark: {args.nproc} processes x {args.threads} thread(s), batch "
        f"{args.batch_size}/process, dim {args.dim}, engine {args.engine}, loadavg "
        f"{bu.load_average()}",
        flush=True,
    )
    mp.spawn(_rank_main, args=(args, free_loopback_port()), nprocs=args.nproc, join=True)
    print(f"wrote {args.out} (results/<topic>_<hardware>_<date>.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

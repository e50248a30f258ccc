"""Planner under a per-rank memory budget: a table too large for one rank gets split over two.

The per-rank cap goes into the topology (``TrainerConfig(ddr_cap_bytes=...)``: on a CPU compute
device the planner places embedding storage in DDR, on CUDA in HBM, so the cap is ``hbm_cap_bytes``
there). The planner keeps 15% of each rank's cap in reserve (``HeuristicalStorageReservation``).

Steps:

1. plan the table for 1 rank under the cap -> the planner refuses (reason printed);
2. plan it for 2 ranks without a cap -> what the planner picks when memory is no issue;
3. plan it for 2 ranks under the cap -> a split plan (row_wise / column_wise / ...), printed with
   the planner's own ``EmbeddingStats`` table;
4. spawn 2 processes on gloo (127.0.0.1), wrap the EBC in DistributedModelParallel with that plan
   and train a few steps on a fixed batch: the loss falls and each rank's rows change.

Run (from the repo root)::

    python benchmarks/planner_budget.py                      # 2M x 64 table, 400 MiB per rank
    python benchmarks/planner_budget.py --rows 4e6 --cap-mb 700 --steps 10

Writes ``results/planner_budget_<hardware>_<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_utils as bu  # noqa: E402
import ebc_benchmark as eb  # noqa: E402

from torchrec_recsys.distributed.env import free_loopback_port  # noqa: E402
from torchrec_recsys.distributed.sharding import planner_topology, sharders  # noqa: E402
from torchrec_recsys.observability.provenance import start_run_meta, write_result_to  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(
        prog="planner_budget",
        description="Show the TorchRec planner splitting a table that does not fit one rank's "
        "memory cap over 2 ranks, then train it for a few steps on 2 processes.",
    )
    p.add_argument("--rows", type=eb._positive_int, default=2_000_000, help="table rows")
    p.add_argument("--dim", type=eb._positive_int, default=64, help="embedding dim")
    p.add_argument("--pooling", type=eb._positive_int, default=20, help="ids per sample")
    p.add_argument("--batch-size", type=eb._positive_int, default=1024, help="global batch size")
    p.add_argument(
        "--optimizer",
        default="rowwise_adagrad",
        help=f"fused optimizer: {', '.join(eb.OPTIMIZERS)}",
    )
    p.add_argument("--lr", type=float, default=0.005, help="learning rate")
    p.add_argument(
        "--cap-mb",
        type=float,
        default=400.0,
        help="per-rank memory cap in MiB put into the topology (DDR on cpu, HBM on cuda)",
    )
    p.add_argument("--steps", type=eb._positive_int, default=6, help="training steps to run")
    p.add_argument(
        "--threads", type=eb._positive_int, default=2, help="total torch threads (1 per rank)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of ids and targets")
    p.add_argument(
        "--out",
        default=str(RESULTS_DIR),
        help="results folder, or a .json path (a .md summary is written next to it)",
    )
    return p


def make_planner(
    world_size: int,
    cap_mb: float | None,
    batch: int,
    pooling: int,
    sharding_types: list[str] | None = None,
) -> Any:
    """An ``EmbeddingShardingPlanner`` for a CPU topology with an optional per-rank DDR cap.

    ``sharding_types`` restricts the table's candidates (None = every type the sharder offers).
    """
    from torchrec.distributed.planner import EmbeddingShardingPlanner
    from torchrec.distributed.planner.stats import EmbeddingStats
    from torchrec.distributed.planner.types import ParameterConstraints

    return EmbeddingShardingPlanner(
        topology=planner_topology(world_size, "cpu", cap_mb or 0.0),
        batch_size=batch // world_size,
        constraints={
            eb.TABLE: ParameterConstraints(
                sharding_types=sharding_types, pooling_factors=[float(pooling)]
            )
        },
        stats=[EmbeddingStats()],
        debug=True,
    )


def describe_plan(planner: Any) -> dict[str, Any]:
    """Sharding type, kernel, shards and per-rank storage estimate of the planner's best plan."""
    best = planner._best_plan or []  # list[ShardingOption]
    per_rank, shards = eb.plan_shards(planner, len(planner._topology.devices))
    return {
        "sharding_type": best[0].sharding_type if best else None,
        "compute_kernel": best[0].compute_kernel if best else None,
        "shards": shards,
        "estimate_per_rank_bytes": per_rank,
    }


def stats_table(planner: Any) -> list[str]:
    """The rows of the planner's ``EmbeddingStats`` table (normally sent to the logger)."""
    rows = [line for st in planner._stats for line in getattr(st, "_stats_table", [])]
    # the table is padded with spaces and a closing "#" to a very wide fixed width
    out = []
    for r in rows:
        body = r.strip().strip("#")
        if not body.strip():
            out.append("#" * 40)
        elif body.startswith(" " * 20):  # centred title lines
            out.append("# " + body.strip())
        else:
            out.append(("#" + body).rstrip())
    return out


def _local_shards(dmp: Any) -> list[torch.Tensor]:
    """This rank's pieces of the table weight (ShardedTensor, DTensor or plain tensor)."""
    out = []
    for name, t in dmp.state_dict().items():
        if not name.endswith(f"{eb.TABLE}.weight"):
            continue
        if hasattr(t, "local_shards"):
            out += [s.tensor for s in t.local_shards()]
        elif hasattr(t, "to_local"):
            out.append(t.to_local())
        else:
            out.append(t)
    return out


def _rank_main(
    rank: int, case: eb.Case, plan: Any, args: dict[str, Any], port: int, out_path: str
) -> None:
    """One of 2 spawned ranks: DMP with the capped plan, a few training steps, rank 0 reports."""
    import torch.distributed as dist
    from torchrec.distributed import DistributedModelParallel

    eb._quiet_libraries()
    torch.set_num_threads(max(1, args["threads"] // 2))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        local_b = case.batch // 2
        ids = eb.make_ids(case, args["seed"])  # [B * P], global batch
        ids_local = ids[rank * local_b * case.pooling : (rank + 1) * local_b * case.pooling]
        kjt = eb.make_kjt(ids_local, local_b, case.pooling)
        g = torch.Generator().manual_seed(args["seed"] + 1 + rank)
        target = torch.randn(local_b, case.dim, generator=g) * 0.1  # [B_local, D]

        with bu.PeakMemory() as mem:
            dmp = DistributedModelParallel(
                eb.make_meta_ebc(case, args["lr"]),
                device=torch.device("cpu"),
                plan=plan,
                sharders=sharders(),
            )
            # per-row checksums, not a copy of the shard, so the copy does not count as peak
            before = [t.detach().sum(dim=1) for t in _local_shards(dmp)]  # [rows_local] each
            losses = []
            for _ in range(args["steps"]):
                pooled = dmp(kjt)[eb.FEATURE]  # [B_local, D]
                loss = torch.nn.functional.mse_loss(pooled, target)
                loss.backward()  # the fused optimizer updates this rank's rows here
                mean = loss.detach().clone()
                dist.all_reduce(mean)
                losses.append(float(mean) / 2)
            after = _local_shards(dmp)
        rows_changed = sum(
            int((b != a.detach().sum(dim=1)).sum()) for b, a in zip(before, after, strict=True)
        )
        local_rows = sum(int(t.shape[0]) for t in after)
        local_shape = [list(t.shape) for t in after]
        report = {
            "rank": rank,
            "local_shard_shapes": local_shape,
            "local_rows": local_rows,
            "rows_changed": rows_changed,
            "peak_delta_bytes": mem.peak_delta_bytes,
            "losses": losses,
        }
        gathered: list[Any] = [None] * 2
        dist.all_gather_object(gathered, report)
        if rank == 0:
            with open(out_path, "w") as f:
                json.dump(gathered, f)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for bad input or a plan that cannot be found)."""
    args = build_parser().parse_args(argv)
    meta = start_run_meta(threads=args.threads)
    if args.optimizer not in eb.OPTIMIZERS:
        print(
            f"planner_budget: error: unknown optimizer {args.optimizer!r}; "
            f"valid: {', '.join(eb.OPTIMIZERS)}",
            file=sys.stderr,
        )
        return 2
    if args.batch_size % 2:
        print(f"planner_budget: error: --batch-size {args.batch_size} is odd", file=sys.stderr)
        return 2
    from torchrec.distributed.planner.types import PlannerError

    eb._quiet_libraries()
    torch.set_num_threads(args.threads)
    case = eb.Case(
        "dmp",
        args.rows,
        args.dim,
        args.pooling,
        args.batch_size,
        args.optimizer,
        sharding_type="auto",
        kernel="auto",
        world_size=2,
    )
    table_bytes = args.rows * args.dim * 4
    print(
        f"planner_budget: table {args.rows:,} x {args.dim} fp32 = {bu.fmt_bytes(table_bytes)} "
        f"+ {args.optimizer} state, cap {args.cap_mb:g} MiB per rank (DDR, CPU topology; the "
        f"planner reserves 15%), batch {args.batch_size} pooling {args.pooling}, "
        f"threads {args.threads} (1 per rank), loadavg {bu.load_average()}",
        flush=True,
    )
    doc: dict[str, Any] = {"config": vars(args), "loadavg_start": bu.load_average()}

    # 1) one rank under the cap: must fail
    one = make_planner(1, args.cap_mb, args.batch_size, args.pooling)
    try:
        one.plan(eb.make_meta_ebc(case, args.lr), sharders())
        doc["one_rank"] = {"fits": True}
        print(
            "1 rank under the cap: the table FITS (raise --rows or lower --cap-mb to force a split)"
        )
    except PlannerError as err:
        reason = eb._planner_reason(err, replace(case, world_size=1), _cap_settings(args))
        doc["one_rank"] = {"fits": False, "reason": reason}
        print(f"1 rank under the cap: no plan -> {reason}")

    # 2) two ranks under the cap, but the whole table on one rank (table_wise): must fail too
    tw = make_planner(2, args.cap_mb, args.batch_size, args.pooling, ["table_wise"])
    try:
        tw.plan(eb.make_meta_ebc(case, args.lr), sharders())
        doc["two_ranks_table_wise"] = {"fits": True}
        print("2 ranks, table_wise only, under the cap: FITS")
    except PlannerError as err:
        reason = eb._planner_reason(
            err, replace(case, sharding_type="table_wise"), _cap_settings(args)
        )
        doc["two_ranks_table_wise"] = {"fits": False, "reason": reason}
        print(f"2 ranks, table_wise only, under the cap: no plan -> {reason}")

    # 2b) two ranks, no cap
    free = make_planner(2, None, args.batch_size, args.pooling)
    free.plan(eb.make_meta_ebc(case, args.lr), sharders())
    doc["two_ranks_uncapped"] = describe_plan(free)
    print(f"2 ranks, no cap: planner picks {_fmt_plan(doc['two_ranks_uncapped'])}")

    # 3) two ranks under the cap
    capped = make_planner(2, args.cap_mb, args.batch_size, args.pooling)
    try:
        plan = capped.plan(eb.make_meta_ebc(case, args.lr), sharders())
    except PlannerError as err:
        print(
            f"planner_budget: error: {eb._planner_reason(err, case, _cap_settings(args))}",
            file=sys.stderr,
        )
        return 2
    doc["two_ranks_capped"] = describe_plan(capped)
    table = stats_table(capped)
    doc["two_ranks_capped"]["planner_stats"] = table
    print(f"2 ranks, cap {args.cap_mb:g} MiB: planner picks {_fmt_plan(doc['two_ranks_capped'])}")
    print("\n".join(table))

    # 4) train on 2 processes with the capped plan
    import torch.multiprocessing as mp

    print(f"training {args.steps} steps on 2 processes (gloo, 127.0.0.1) ...", flush=True)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ranks.json")
        mp.spawn(
            _rank_main,
            args=(case, plan, vars(args), free_loopback_port(), path),
            nprocs=2,
            join=True,
        )
        ranks = json.loads(Path(path).read_text())
    doc["training"] = {"ranks": ranks, "elapsed_s": time.time() - t0}
    losses = ranks[0]["losses"]
    est = doc["two_ranks_capped"]["estimate_per_rank_bytes"]
    for r in ranks:
        print(
            f"rank {r['rank']}: shard {r['local_shard_shapes']}, rows changed "
            f"{r['rows_changed']:,}/{r['local_rows']:,}, peak memory "
            f"{bu.fmt_bytes(r['peak_delta_bytes'])} (planner estimate "
            f"{bu.fmt_bytes(est[r['rank']])}, cap {args.cap_mb:g} MiB)"
        )
    print("loss per step (mean over ranks): " + ", ".join(f"{x:.3e}" for x in losses))
    trains = losses[-1] < losses[0] and all(r["rows_changed"] > 0 for r in ranks)
    doc["trains"] = trains
    doc["loadavg_end"] = bu.load_average()
    print(f"trains: {trains} (loss {losses[0]:.3e} -> {losses[-1]:.3e})")

    out = write_result_to(args.out, "planner_budget", doc, meta, markdown=_markdown(doc))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0 if trains else 1


def _cap_settings(args: argparse.Namespace) -> eb.Settings:
    return eb.Settings(memory_budget_mb=args.cap_mb)


def _fmt_plan(d: dict[str, Any]) -> str:
    shards = ", ".join(f"rank {s['rank']}: {s['size']}@{s['offset']}" for s in d["shards"])
    est = ", ".join(bu.fmt_bytes(b) for b in d["estimate_per_rank_bytes"])
    return f"{d['sharding_type']}/{d['compute_kernel']} ({shards}; estimate per rank {est})"


def _markdown(doc: dict[str, Any]) -> str:
    """A short markdown report of the three plans and the training run."""
    c = doc["config"]
    ranks = doc["training"]["ranks"]
    lines = [
        "# Planner under a per-rank memory budget",
        "",
        f"Table {c['rows']:,} x {c['dim']} fp32, {c['optimizer']}, cap {c['cap_mb']:g} MiB per "
        f"rank (DDR; CPU topology), batch {c['batch_size']}, pooling {c['pooling']}; "
        f"loadavg {doc['loadavg_start']} -> {doc['loadavg_end']}.",
        "",
        f"Command: `python benchmarks/planner_budget.py --rows {c['rows']} --dim {c['dim']} "
        f"--cap-mb {c['cap_mb']:g} --steps {c['steps']}`",
        "",
        "| plan | result |",
        "|---|---|",
        f"| 1 rank, capped | {doc['one_rank'].get('reason', 'fits')} |",
        f"| 2 ranks, table_wise only, capped | "
        f"{doc['two_ranks_table_wise'].get('reason', 'fits')} |",
        f"| 2 ranks, no cap | {_fmt_plan(doc['two_ranks_uncapped'])} |",
        f"| 2 ranks, capped | {_fmt_plan(doc['two_ranks_capped'])} |",
        "",
        "| rank | shard | rows changed | peak RSS growth | planner estimate |",
        "|---|---|---|---|---|",
    ]
    est = doc["two_ranks_capped"]["estimate_per_rank_bytes"]
    for r in ranks:
        lines.append(
            f"| {r['rank']} | {r['local_shard_shapes']} | {r['rows_changed']:,} / "
            f"{r['local_rows']:,} | {bu.fmt_bytes(r['peak_delta_bytes'])} | "
            f"{bu.fmt_bytes(est[r['rank']])} |"
        )
    losses = ranks[0]["losses"]
    lines += [
        "",
        "Loss per step (mean over ranks): " + ", ".join(f"{x:.3e}" for x in losses),
        "",
        "Planner stats (capped plan):",
        "",
        "```",
        *doc["two_ranks_capped"]["planner_stats"],
        "```",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

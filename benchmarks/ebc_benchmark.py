"""Embedding-table memory and throughput benchmark: sharded TorchRec EBC vs plain PyTorch.

One step = forward + backward + optimizer update of a single-table EmbeddingBagCollection
(sum pooling, fp32) on a synthetic batch of uniform random ids::

    KJT for one feature "f0", B samples, fixed pooling P (keys x batch):
              sample 0      sample 1      ...  sample B-1
      f0    [id .. id]P   [id .. id]P     ...  [id .. id]P
      values  [B*P] int64 ids in [0, rows)
      lengths [B]   all equal to P

Variants, all on the same ids:

* ``dmp``: EBC built on ``meta``, planned by ``EmbeddingShardingPlanner`` (the sharding type and
  kernel are forced through ``ParameterConstraints``), wrapped in ``DistributedModelParallel``;
  the optimizer is fused into backward (``_apply_optimizer_in_backward``); world size 1 runs in
  this process, world size 2 in two spawned processes on gloo over 127.0.0.1.
* ``nn_dense``: ``torch.nn.EmbeddingBag(mode="sum")`` with a dense gradient + torch optimizer.
* ``nn_sparse``: the same with ``sparse=True`` + SGD or Adagrad (the sparse-capable ones).
* ``fused_ebc``: unsharded ``torchrec.FusedEmbeddingBagCollection`` (fbgemm kernel).

Per row it reports analytic bytes, the planner's memory estimate next to the measured peak
(RSS high-water mark on CPU), p50/p90 step latency (``observability.timing.percentile``),
samples/s, effective GB/s and that GB/s as a share of two probes measured in the same run at
the run's own ``--threads`` (sequential copy; the limit probe: gather + scatter-add of the same
rows, see ``bench_utils.limit_probe``). The thread count is a recorded setting: it is in every
row's config, the JSON header and the table, and the headline ratios depend on it.

Run (from the repo root)::

    python benchmarks/ebc_benchmark.py --quick                 # smoke run, < 1 min
    python benchmarks/ebc_benchmark.py --preset headline --threads 1 \
        --out /tmp/ebc/ebc_headline_t1_a.json                    # the headline ratios, ~1 min
    python benchmarks/ebc_benchmark.py --preset readme         # the broad grid, ~10 min quiet
    python benchmarks/ebc_benchmark.py --rows 1e5 1e6 --sharding-types table_wise row_wise \\
        --world-sizes 1 2 --optimizers sgd rowwise_adagrad --profile /tmp/ebc_prof
    python benchmarks/plot_ebc.py      # table + plots of the newest results/ebc_readme_*.json
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import logging
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_utils as bu  # noqa: E402

from torchrec_recsys.config import SPARSE_OPTIMIZERS, ShardingConfig  # noqa: E402
from torchrec_recsys.distributed.env import free_loopback_port  # noqa: E402
from torchrec_recsys.distributed.sharding import (  # noqa: E402
    OPTIMIZER_CLASSES,
    fuse_sparse_optimizer,
    planner_topology,
    sharders,
    sharding_constraints,
)
from torchrec_recsys.observability.profiler import maybe_enable_profiling  # noqa: E402
from torchrec_recsys.observability.provenance import (  # noqa: E402
    start_run_meta,
    write_result_to,
)
from torchrec_recsys.observability.timing import percentile, summarize, time_calls  # noqa: E402

SHARDING_TYPES = (
    "table_wise",
    "column_wise",
    "table_column_wise",
    "row_wise",
    "table_row_wise",
    "data_parallel",
)
KERNELS = ("fused", "dense")
OPTIMIZERS = SPARSE_OPTIMIZERS  # the optimizers TorchRec fuses into backward
BASELINES = ("nn_dense", "nn_sparse", "fused_ebc")
WORLD_SIZES = (1, 2)
SPARSE_CAPABLE = ("sgd", "adagrad")  # torch optimizers that accept sparse gradients

# The configuration the targets are stated for.
REFERENCE = {"rows": 1_000_000, "dim": 64, "pooling": 20, "batch": 4096}
TARGET_DENSE_SPEEDUP = 6.0
TARGET_ESTIMATE_TOLERANCE = 0.15
CONTENDED_SHARE = 0.10  # rows timed while others used more than this are flagged
MEMORY_NOISE_FLOOR = 64 * 2**20  # estimates below this are not checked against RSS

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
FEATURE = "f0"
TABLE = "t0"

SWEEP_KEYS = (
    "rows",
    "dims",
    "pooling",
    "batch_sizes",
    "sharding_types",
    "kernels",
    "optimizers",
    "world_sizes",
    "baselines",
)


def _ref_grid(**over: Any) -> dict[str, list[Any]]:
    """A grid around the reference config; ``over`` replaces whole lists."""
    grid: dict[str, list[Any]] = {
        "rows": [REFERENCE["rows"]],
        "dims": [REFERENCE["dim"]],
        "pooling": [REFERENCE["pooling"]],
        "batch_sizes": [REFERENCE["batch"]],
        "sharding_types": ["table_wise"],
        "kernels": ["auto"],  # fused, or dense for data_parallel
        "optimizers": ["sgd"],
        "world_sizes": [1],
        "baselines": list(BASELINES),
    }
    grid.update(over)
    return grid


# Presets are unions of cross-product grids. Keep "readme" near 10 minutes on 2 quiet cores.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "grids": [
            _ref_grid(
                rows=[10_000],
                dims=[16],
                pooling=[4],
                batch_sizes=[256],
                sharding_types=["table_wise", "row_wise"],
                world_sizes=[1, 2],
            )
        ],
        "warmup": 2,
        "repeats": 5,
        "copy_probe_mib": 64,
        "out": "ebc_quick.json",
    },
    # The headline ratios: the reference config, fused DMP table_wise on 1 rank
    # against the three unsharded baselines (run once per --threads, twice for run-to-run).
    "headline": {
        "grids": [_ref_grid()],
        "warmup": 3,
        "repeats": 15,
        "copy_probe_mib": 256,
        "interleave": True,
        "out": "ebc_headline.json",
    },
    "readme": {
        "grids": [
            # Throughput vs rows: the main curve, SGD, sharded tw/rw on 1 and 2 ranks.
            _ref_grid(
                rows=[10_000, 100_000, 1_000_000, 10_000_000],
                sharding_types=["table_wise", "row_wise"],
                world_sizes=[1, 2],
            ),
            # The reference config: every sharding type / kernel on 1 rank, cw/tcw on 2.
            _ref_grid(
                sharding_types=["column_wise", "table_column_wise", "data_parallel"],
                world_sizes=[1],
                baselines=[],
            ),
            _ref_grid(
                sharding_types=["column_wise", "table_column_wise"],
                world_sizes=[2],
                baselines=[],
            ),
            # Optimizers on the reference config.
            _ref_grid(optimizers=["adagrad", "rowwise_adagrad"]),
            # Row width.
            _ref_grid(dims=[16, 256], baselines=["nn_sparse", "fused_ebc"]),
        ],
        "warmup": 3,
        "repeats": 10,
        "copy_probe_mib": 256,
        "out": "ebc_readme.json",
    },
}
DEFAULTS: dict[str, Any] = {
    "grids": [_ref_grid()],
    "warmup": 3,
    "repeats": 10,
    "copy_probe_mib": 256,
    "out": "ebc_results.json",
}


class BenchmarkError(Exception):
    """A user-facing error: one sentence naming the bad value and what was expected."""


@dataclass(frozen=True)
class Case:
    """One benchmark row: a variant at one table / batch / optimizer configuration.

    Attributes:
        variant: ``dmp``, ``nn_dense``, ``nn_sparse`` or ``fused_ebc``.
        rows: table rows (num_embeddings).
        dim: embedding dim.
        pooling: ids per sample (fixed, every sample has exactly this many).
        batch: global batch size (split evenly over ``world_size`` ranks).
        optimizer: ``sgd``, ``adagrad`` or ``rowwise_adagrad``.
        sharding_type: TorchRec sharding type (``dmp`` only).
        kernel: ``fused`` or ``dense`` (``dmp`` only).
        world_size: ranks (1 for the unsharded baselines).
    """

    variant: str
    rows: int
    dim: int
    pooling: int
    batch: int
    optimizer: str
    sharding_type: str | None = None
    kernel: str | None = None
    world_size: int = 1

    @property
    def label(self) -> str:
        """Short variant label, e.g. ``DMP/row_wise/fused/w2`` or ``nn.EmbeddingBag/sparse``."""
        if self.variant == "dmp":
            return f"DMP/{self.sharding_type}/{self.kernel}/w{self.world_size}"
        return {
            "nn_dense": "nn.EmbeddingBag/dense",
            "nn_sparse": "nn.EmbeddingBag/sparse",
            "fused_ebc": "FusedEBC/unsharded",
        }[self.variant]

    @property
    def data_key(self) -> tuple[int, int, int, int]:
        """(rows, dim, pooling, batch): cases with the same key share ids and probes."""
        return (self.rows, self.dim, self.pooling, self.batch)

    def describe(self) -> str:
        """One config line."""
        return (
            f"{self.label} {self.rows:,}x{self.dim} fp32 P{self.pooling} B{self.batch} "
            f"{self.optimizer}"
        )


@dataclass
class Settings:
    """Run-wide settings shared by all cases (picklable: sent to spawned ranks).

    Attributes:
        warmup: untimed steps before timing.
        repeats: timed steps.
        lr: learning rate of every optimizer.
        seed: base seed of the synthetic ids.
        threads: total intra-op threads; each rank gets ``max(1, threads // world_size)``.
        device: ``cpu`` or ``cuda``.
        memory_budget_mb: per-rank memory cap given to the planner topology (None = default).
        profile_dir: where torch.profiler traces go (None = no profiling).
        copy_probe_mib: size of the sequential-copy probe tensor.
        interleave: time the world-size-1 cases in rounds, one step of each case per round,
            so a change in the machine's load hits every variant alike (their ratios are then
            comparable on a shared machine); memory is still measured per case.
    """

    warmup: int = 3
    repeats: int = 10
    lr: float = 0.01
    seed: int = 0
    threads: int = 2
    device: str = "cpu"
    memory_budget_mb: float | None = None
    profile_dir: str | None = None
    copy_probe_mib: int = 256
    interleave: bool = False

    def threads_per_rank(self, world_size: int) -> int:
        """Threads each of ``world_size`` processes uses."""
        return max(1, self.threads // world_size)


@dataclass
class PlanInfo:
    """What the planner decided for one ``dmp`` case.

    Attributes:
        plan: the ``ShardingPlan`` (picklable; sent to spawned ranks).
        estimate_per_rank: planner storage estimate per rank in bytes (DDR on CPU, HBM on GPU).
        summary: shards as ``rank:[rows, cols]@[row_off, col_off]``.
    """

    plan: Any
    estimate_per_rank: list[int]
    summary: str


@dataclass
class Measurement:
    """What one process measured for one case.

    Attributes:
        times_s: seconds per timed step.
        peak_delta_bytes: peak memory growth while building and running the case.
        memory_method: how the peak was read.
        profile_top_ops: top ops by self CPU time when profiled.
        extra: variant-specific notes.
    """

    times_s: list[float]
    peak_delta_bytes: int
    memory_method: str
    profile_top_ops: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- CLI


def _positive_int(text: str) -> int:
    """argparse type: a positive integer, accepting ``1e6`` style."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(
        prog="ebc_benchmark",
        description=(
            "Sweep a single-table EmbeddingBagCollection under DistributedModelParallel against "
            "nn.EmbeddingBag baselines; print and write JSON rows with latency, throughput, "
            "bandwidth vs in-run probes, and planner memory estimate vs measured peak."
        ),
    )
    p.add_argument("--rows", nargs="+", type=_positive_int, help="table rows to sweep (1e4..1e7)")
    p.add_argument(
        "--dims", nargs="+", type=_positive_int, help="embedding dims to sweep (16..256)"
    )
    p.add_argument("--pooling", nargs="+", type=_positive_int, help="ids per sample to sweep")
    p.add_argument(
        "--batch-sizes", nargs="+", type=_positive_int, help="global batch sizes to sweep"
    )
    p.add_argument(
        "--sharding-types",
        nargs="+",
        help=f"DMP sharding types to sweep; one or more of: {', '.join(SHARDING_TYPES)}",
    )
    p.add_argument(
        "--kernels",
        nargs="+",
        help="compute kernels to sweep: fused (non-data-parallel) and/or dense (data_parallel); "
        "default: whichever is valid for each sharding type",
    )
    p.add_argument("--optimizers", nargs="+", help=f"optimizers to sweep: {', '.join(OPTIMIZERS)}")
    p.add_argument(
        "--world-sizes", nargs="+", type=_positive_int, help="DMP world sizes to sweep: 1 and/or 2"
    )
    p.add_argument(
        "--baselines",
        nargs="*",
        help=f"unsharded baselines to run (none = no baselines): {', '.join(BASELINES)}",
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="named grid; 'readme' is the broad grid (~10 min on 2 quiet cores); sweep flags "
        "given alongside replace that list in every grid of the preset",
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke run (< 1 min); same as --preset quick"
    )
    p.add_argument("--warmup", type=int, help="untimed steps before timing (default per preset)")
    p.add_argument("--repeats", type=_positive_int, help="timed steps (default per preset)")
    p.add_argument("--lr", type=float, default=0.01, help="learning rate of every optimizer")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic ids")
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=2,
        help="total torch intra-op threads; each of N ranks gets max(1, threads // N)",
    )
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="compute device (cuda uses nccl and the CUDA allocator's peak stats)",
    )
    p.add_argument(
        "--memory-budget-mb",
        type=float,
        help="per-rank memory cap (MiB) given to the planner topology (DDR on cpu, HBM on cuda)",
    )
    p.add_argument(
        "--copy-probe-mib", type=_positive_int, help="size of the sequential copy probe tensor"
    )
    p.add_argument(
        "--interleave",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="time world-size-1 cases in rounds (one step of each per round) so load changes "
        "hit every variant alike (default: on for --preset headline, else off)",
    )
    p.add_argument(
        "--profile",
        metavar="DIR",
        help="write torch.profiler traces (wait 1, warmup 1, active 3 steps per case) and a "
        "top-ops table per case to DIR, and print the top ops by self CPU time",
    )
    p.add_argument(
        "--out",
        help="a .json path, or a folder for results/<topic>_<hardware>_<date>.json (default: "
        "results/, topic ebc_<preset>)",
    )
    return p


def _check_names(kind: str, values: list[str] | None, valid: tuple[str, ...]) -> None:
    """Raise BenchmarkError naming the first unknown value and the valid ones."""
    for v in values or []:
        if v not in valid:
            raise BenchmarkError(f"unknown {kind} {v!r}; valid: {', '.join(valid)}")


def resolve(args: argparse.Namespace) -> tuple[list[Case], Settings, Path, str]:
    """Validate arguments and expand the grid into cases.

    Returns:
        (cases, settings, json output path (or ``<folder>/<topic>``), preset name)
    """
    _check_names("sharding type", args.sharding_types, SHARDING_TYPES)
    _check_names("kernel", args.kernels, KERNELS)
    _check_names("optimizer", args.optimizers, OPTIMIZERS)
    _check_names("baseline", args.baselines, BASELINES)
    for ws in args.world_sizes or []:
        if ws not in WORLD_SIZES:
            raise BenchmarkError(f"unsupported world size {ws}; valid: 1, 2")
    if args.quick and args.preset and args.preset != "quick":
        raise BenchmarkError(f"--quick conflicts with --preset {args.preset}; give one of them")
    preset_name = "quick" if args.quick else (args.preset or "default")
    preset = copy.deepcopy(PRESETS.get(preset_name, DEFAULTS))

    grids: list[dict[str, list[Any]]] = preset["grids"]
    for key in SWEEP_KEYS:
        value = getattr(args, key)
        if value is not None:
            for grid in grids:
                grid[key] = list(value)

    cases: dict[Case, None] = {}  # ordered set
    for grid in grids:
        for case in expand_grid(grid):
            cases[case] = None
    if not cases:
        raise BenchmarkError("the grid is empty; give at least one sharding type or baseline")
    if not any(c.variant == "dmp" for c in cases) and (args.sharding_types or args.kernels):
        raise BenchmarkError(
            "no valid sharding type/kernel pair in the grid; the dense kernel runs only with "
            "data_parallel and the fused kernel only with the other sharding types"
        )
    for c in cases:
        if c.batch % c.world_size:
            raise BenchmarkError(
                f"batch size {c.batch} is not divisible by world size {c.world_size}"
            )
    if args.device == "cuda" and not torch.cuda.is_available():
        raise BenchmarkError("--device cuda was given but torch.cuda.is_available() is False")

    settings = Settings(
        warmup=args.warmup if args.warmup is not None else preset["warmup"],
        repeats=args.repeats or preset["repeats"],
        lr=args.lr,
        seed=args.seed,
        threads=args.threads,
        device=args.device,
        memory_budget_mb=args.memory_budget_mb,
        profile_dir=args.profile,
        copy_probe_mib=args.copy_probe_mib or preset["copy_probe_mib"],
        interleave=(
            args.interleave if args.interleave is not None else preset.get("interleave", False)
        ),
    )
    if settings.warmup < 0:
        raise BenchmarkError(f"--warmup must be >= 0, got {settings.warmup}")
    topic = Path(preset["out"]).stem
    if args.out and args.out.endswith(".json"):
        out = Path(args.out)
    else:  # a folder: the dated name is chosen when writing
        out = Path(args.out or RESULTS_DIR) / topic
    return list(cases), settings, out, preset_name


def expand_grid(grid: dict[str, list[Any]]) -> list[Case]:
    """Cross product of one grid: baselines first, then DMP cases; invalid pairs are skipped.

    Skipped: ``nn_sparse`` with rowwise_adagrad (no sparse-capable torch optimizer), the dense
    kernel with a sharding type other than data_parallel, the fused kernel with data_parallel.
    Kernel ``auto`` (the default unless ``--kernels`` is given) picks the valid one.
    """
    out: list[Case] = []
    for rows in grid["rows"]:
        for dim in grid["dims"]:
            for pooling in grid["pooling"]:
                for batch in grid["batch_sizes"]:
                    for opt in grid["optimizers"]:
                        base = Case("dmp", rows, dim, pooling, batch, opt)
                        for b in grid["baselines"]:
                            if b == "nn_sparse" and opt not in SPARSE_CAPABLE:
                                continue
                            out.append(replace(base, variant=b))
                        for ws in grid["world_sizes"]:
                            for st in grid["sharding_types"]:
                                for k in grid["kernels"]:
                                    if k == "auto":
                                        k = "dense" if st == "data_parallel" else "fused"
                                    if (k == "dense") != (st == "data_parallel"):
                                        continue
                                    out.append(
                                        replace(base, sharding_type=st, kernel=k, world_size=ws)
                                    )
    return out


# --------------------------------------------------------------------------- model pieces


def _quiet_libraries() -> None:
    """Silence planner/fx warnings that repeat once per case."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*is_fx_tracing.*")
    warnings.filterwarnings("ignore", message=".*TorchRec.*")
    for name in ("torchrec", "torch.fx", "fbgemm_gpu", "torch.distributed"):
        logging.getLogger(name).setLevel(logging.ERROR)


def make_ids(case: Case, seed: int) -> torch.Tensor:
    """Global batch ids, identical for every variant of the same ``data_key``.

    Returns:
        ``[B * P]`` int64 ids, sample-major (sample b owns ``ids[b*P:(b+1)*P]``).
    """
    rows, dim, pooling, batch = case.data_key
    g = torch.Generator().manual_seed(seed * 1_000_003 + rows * 31 + dim * 7 + pooling * 3 + batch)
    return torch.randint(0, case.rows, (case.batch * case.pooling,), generator=g)


def make_kjt(ids: torch.Tensor, batch: int, pooling: int) -> Any:
    """One-feature KJT over ``batch`` samples of ``pooling`` ids each.

    ::
        keys    ["f0"]
        values  [batch * pooling]   (ids)
        lengths [batch]             (all == pooling)
    """
    from torchrec import KeyedJaggedTensor

    lengths = torch.full((batch,), pooling, dtype=torch.int32)  # [B]
    return KeyedJaggedTensor.from_lengths_sync(keys=[FEATURE], values=ids, lengths=lengths)


def _table_config(case: Case) -> Any:
    from torchrec import EmbeddingBagConfig

    return EmbeddingBagConfig(
        name=TABLE, embedding_dim=case.dim, num_embeddings=case.rows, feature_names=[FEATURE]
    )


def make_meta_ebc(case: Case, lr: float) -> Any:
    """Single-table EBC on ``meta`` with the optimizer registered for fusion into backward."""
    from torchrec import EmbeddingBagCollection

    ebc = EmbeddingBagCollection(tables=[_table_config(case)], device=torch.device("meta"))
    fuse_sparse_optimizer(ebc, case.optimizer, lr)
    return ebc


def _planner_reason(err: Exception, case: Case, settings: Settings) -> str:
    """Condense a PlannerError into one sentence (its first line plus the storage it reports)."""
    msg = str(err).strip()
    first = msg.splitlines()[0].strip().rstrip(". ") if msg else type(err).__name__
    tier = "ddr" if settings.device == "cpu" else "hbm"

    def gb(label: str) -> str | None:
        m = re.search(label + r": Storage\(([^)]*)\)", msg)
        t = m and re.search(tier + r" = ([0-9.]+) GB", m.group(1))
        return t.group(1) if t else None

    need, avail = gb("requirement for model parallel"), gb("available for model parallel")
    budget = ""
    if settings.memory_budget_mb is not None:
        budget = f" within a {settings.memory_budget_mb:g} MiB per-rank memory budget"
    detail = ""
    shard = re.search(r"find a rank for shard.*?storage: Storage\(([^)]*)\)", msg, re.S)
    largest = re.search(r"largest device storage: Storage\(([^)]*)\)", msg)
    if shard and largest:
        s_b = re.search(tier + r"=(\d+)", shard.group(1))
        l_b = re.search(tier + r"=(\d+)", largest.group(1))
        if s_b and l_b:
            detail = (
                f" (a {int(s_b.group(1)) / 1e9:.3f} GB shard does not fit the "
                f"{int(l_b.group(1)) / 1e9:.3f} GB of {tier.upper()} left on the largest rank)"
            )
    if not detail and need and avail:
        detail = (
            f" (needs {need} GB of {tier.upper()} in total over {case.world_size} rank(s), "
            f"{avail} GB left after the planner's reservations)"
        )
    return f"the planner found no plan for {case.describe()}{budget}: {first}{detail}"


def plan_case(case: Case, settings: Settings) -> PlanInfo:
    """Run the planner for one ``dmp`` case with its sharding type and kernel forced.

    Raises:
        BenchmarkError: the planner found no plan (e.g. it does not fit the memory budget).
    """
    from torchrec.distributed.planner import EmbeddingShardingPlanner
    from torchrec.distributed.planner.stats import NoopEmbeddingStats
    from torchrec.distributed.planner.types import PlannerError

    topology = planner_topology(case.world_size, settings.device, settings.memory_budget_mb or 0.0)
    # the package derives the kernel from the sharding type exactly as expand_grid pairs them:
    # dense for data_parallel, fused otherwise
    assert case.sharding_type is not None
    constraints = sharding_constraints(
        [TABLE], ShardingConfig(default=case.sharding_type), pooling_factors={TABLE: case.pooling}
    )
    assert constraints[TABLE].compute_kernels == [case.kernel]
    planner = EmbeddingShardingPlanner(
        topology=topology,
        batch_size=case.batch // case.world_size,  # local batch per rank
        constraints=constraints,
        stats=[NoopEmbeddingStats()],
        debug=False,
    )
    ebc = make_meta_ebc(case, settings.lr)
    try:
        plan = planner.plan(ebc, sharders())
    except PlannerError as err:
        raise BenchmarkError(_planner_reason(err, case, settings)) from None
    estimate, shards = plan_shards(planner, case.world_size)
    summary = " ".join(f"{s['rank']}:{s['size']}@{s['offset']}" for s in shards)
    return PlanInfo(plan=plan, estimate_per_rank=estimate, summary=summary)


def plan_shards(planner: Any, world_size: int) -> tuple[list[int], list[dict[str, Any]]]:
    """The planner's chosen plan as a per-rank storage estimate and a list of shards.

    Returns:
        (bytes per rank, DDR + HBM as the planner estimated them;
        ``[{"rank", "size": [rows, cols], "offset": [row_off, col_off]}]`` per shard)
    """
    estimate = [0] * world_size
    shards = []
    for so in planner._best_plan or []:  # ShardingOption list of the chosen plan
        for shard in so.shards:
            rank = shard.rank or 0
            storage = shard.storage
            if storage is not None:
                estimate[rank] += storage.ddr + storage.hbm
            shards.append({"rank": rank, "size": list(shard.size), "offset": list(shard.offset)})
    return estimate, shards


# --------------------------------------------------------------------------- measurement


def _profile(
    step: Callable[[], None], label: str, settings: Settings, rank: int, print_table: bool
) -> list[dict[str, Any]]:
    """Profile a few steps (wait 1, warmup 1, active 3) into ``settings.profile_dir``.

    Returns:
        The five ops with the most self CPU time: name, self CPU ms per step, share of total.
    """
    assert settings.profile_dir is not None
    worker = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{label}_rank{rank}")
    active = 3
    with maybe_enable_profiling(
        True, Path(settings.profile_dir), rank, wait=1, warmup=1, active=active, worker_name=worker
    ) as prof:
        assert prof is not None
        for _ in range(1 + 1 + active):
            step()
            prof.step()
    averages = prof.key_averages()
    if print_table:
        print(f"--- profile {label} (rank {rank}), traces in {settings.profile_dir}")
        print(averages.table(sort_by="self_cpu_time_total", row_limit=10))
    total = sum(e.self_cpu_time_total for e in averages) or 1.0
    ops = [e for e in averages if not e.key.startswith("ProfilerStep")]  # step wrapper is not an op
    top = sorted(ops, key=lambda e: e.self_cpu_time_total, reverse=True)[:5]
    return [
        {
            "name": e.key,
            "self_cpu_ms_per_step": round(e.self_cpu_time_total / 1000.0 / active, 3),
            "share": round(e.self_cpu_time_total / total, 3),
        }
        for e in top
    ]


def _measure(
    build: Callable[[], Callable[[], None]],
    label: str,
    settings: Settings,
    rank: int = 0,
    print_profile: bool = True,
) -> Measurement:
    """Build a variant and time its step inside a peak-memory window.

    Args:
        build: creates the model/optimizer and returns the step closure.
        label: used for profiler trace names.
        settings: run settings.
        rank: this process's rank (trace names).
        print_profile: print the profiler table (rank 0 only).
    """
    gc.collect()
    # CPU accounting spans build + warm-up + timed steps: /proc/stat ticks are 10 ms, so the timed
    # steps alone are often too short to say whether other processes competed for the cores
    with bu.CpuWindow() as cpu, bu.PeakMemory(device=settings.device) as mem:
        step = build()
        if settings.device == "cuda":
            inner = step

            def step() -> None:
                inner()
                torch.cuda.synchronize()

        times = time_calls(step, settings.warmup, settings.repeats)
    top_ops: list[dict[str, Any]] = []
    if settings.profile_dir:
        top_ops = _profile(step, label, settings, rank, print_profile)
    del step
    gc.collect()
    extra = {
        "wall_s": cpu.wall_s,
        "machine_busy_s": cpu.machine_busy_s,
        "own_cpu_s": cpu.own_cpu_s,
        "loadavg": bu.load_average(),
    }
    return Measurement(times, mem.peak_delta_bytes, mem.method, top_ops, extra)


def measure_interleaved(
    builds: list[Callable[[], Callable[[], None]]], settings: Settings
) -> list[Measurement]:
    """Build every variant (memory measured per build + warm-up), then time them in rounds.

    Round r runs one step of each variant in turn, so slow phases of a shared machine land on
    every variant alike. All variants stay alive until the end (their memory adds up).
    """
    steps: list[Callable[[], None]] = []
    out: list[Measurement] = []
    for build in builds:
        gc.collect()
        with bu.PeakMemory(device=settings.device) as mem:
            step = build()
            if settings.device == "cuda":
                inner = step

                def step(inner: Callable[[], None] = inner) -> None:
                    inner()
                    torch.cuda.synchronize()

            time_calls(step, settings.warmup, 0)
        steps.append(step)
        out.append(Measurement([], mem.peak_delta_bytes, mem.method))
    with bu.CpuWindow() as cpu:
        for _ in range(settings.repeats):
            for step, m in zip(steps, out, strict=True):
                m.times_s.extend(time_calls(step, 0, 1))
    own = cpu.own_cpu_s / len(steps)  # shared out: the window is one for all variants
    for m in out:
        m.extra = {
            "wall_s": cpu.wall_s,
            "machine_busy_s": cpu.machine_busy_s - cpu.own_cpu_s + own,
            "own_cpu_s": own,
            "loadavg": bu.load_average(),
            "interleaved": True,
        }
    del steps
    gc.collect()
    return out


def build_baseline(case: Case, ids: torch.Tensor, settings: Settings) -> Callable[[], None]:
    """Build an unsharded baseline and return its step (fwd + bwd + update)."""
    device = torch.device(settings.device)
    ids = ids.to(device)
    offsets = torch.arange(0, case.batch * case.pooling, case.pooling, device=device)  # [B]
    opt_cls = OPTIMIZER_CLASSES[case.optimizer]
    if case.variant in ("nn_dense", "nn_sparse"):
        emb = torch.nn.EmbeddingBag(
            case.rows, case.dim, mode="sum", sparse=case.variant == "nn_sparse", device=device
        )
        torch.nn.init.uniform_(emb.weight, -0.01, 0.01)
        opt = opt_cls(emb.parameters(), lr=settings.lr)

        def step() -> None:
            pooled = emb(ids, offsets)  # [B, D]
            pooled.sum().backward()
            opt.step()
            opt.zero_grad()

        return step

    from torchrec.modules.fused_embedding_modules import FusedEmbeddingBagCollection

    febc = FusedEmbeddingBagCollection(
        tables=[_table_config(case)],
        optimizer_type=opt_cls,
        optimizer_kwargs={"lr": settings.lr},
        device=device,
    )
    kjt = make_kjt(ids, case.batch, case.pooling).to(device)

    def fused_step() -> None:
        pooled = febc(kjt)[FEATURE]  # [B, D]
        pooled.sum().backward()  # the fused optimizer updates rows inside backward

    return fused_step


def build_dmp(
    case: Case, info: PlanInfo, ids_local: torch.Tensor, settings: Settings
) -> Callable[[], None]:
    """Wrap a meta EBC in DistributedModelParallel with the given plan; return its step."""
    from torchrec.distributed import DistributedModelParallel
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    device = torch.device(settings.device)
    local_batch = case.batch // case.world_size
    kjt = make_kjt(ids_local, local_batch, case.pooling).to(device)
    dmp = DistributedModelParallel(
        make_meta_ebc(case, settings.lr), device=device, plan=info.plan, sharders=sharders()
    )
    # Data-parallel (DENSE kernel) tables ignore the in-backward optimizer: their replicated
    # weights get a regular optimizer (gradients are all-reduced by DDP first).
    dense_params = [p for _, p in in_backward_optimizer_filter(dmp.named_parameters())]
    dense_opt = None
    if dense_params:
        dense_opt = OPTIMIZER_CLASSES[case.optimizer](dense_params, lr=settings.lr)

    def step() -> None:
        pooled = dmp(kjt)[FEATURE]  # [B_local, D]
        pooled.sum().backward()  # fused kernels update their rows here
        if dense_opt is not None:
            dense_opt.step()
            dense_opt.zero_grad()

    return step


def _builder(
    case: Case, info: PlanInfo | None, ids: torch.Tensor, settings: Settings
) -> Callable[[], Callable[[], None]]:
    """The build function of one world-size-1 case (for :func:`measure_interleaved`)."""
    if case.variant == "dmp":
        assert info is not None
        return lambda: build_dmp(case, info, ids, settings)
    return lambda: build_baseline(case, ids, settings)


def run_case_local(
    case: Case, info: PlanInfo | None, ids: torch.Tensor, settings: Settings, rank: int = 0
) -> Measurement:
    """Run one case in this process (world size 1, or one rank of world size 2)."""
    if case.variant == "dmp":
        assert info is not None
        per_rank = case.batch // case.world_size * case.pooling
        ids_local = ids[rank * per_rank : (rank + 1) * per_rank]  # [B_local * P]
        return _measure(
            lambda: build_dmp(case, info, ids_local, settings),
            case.label,
            settings,
            rank,
            print_profile=rank == 0,
        )
    return _measure(lambda: build_baseline(case, ids, settings), case.label, settings, rank)


def warm_process(cases: list[Case], settings: Settings, rank: int = 0) -> None:
    """Run each distinct DMP sharding type/kernel once on a tiny table, untimed.

    One-time allocations (gloo buffers, fbgemm/autograd lazy init) then do not land in the first
    measured case's peak memory or latency.
    """
    quiet = replace(settings, warmup=1, repeats=1, profile_dir=None)
    seen: set[tuple[Any, ...]] = set()
    for c in cases:
        kind = (c.variant, c.sharding_type, c.kernel, c.optimizer, c.world_size)
        if c.variant != "dmp" or kind in seen:
            continue
        seen.add(kind)
        tiny = replace(c, rows=64 * c.world_size, dim=16, pooling=2, batch=8 * c.world_size)
        info = plan_case(tiny, quiet)
        run_case_local(tiny, info, make_ids(tiny, 0), quiet, rank)


def _rank_main(
    rank: int,
    world_size: int,
    work: list[tuple[Case, PlanInfo]],
    settings: Settings,
    port: int,
    out_path: str,
) -> None:
    """Entry point of each spawned rank: run every world-size-2 case, rank 0 writes results."""
    import torch.distributed as dist

    _quiet_libraries()
    torch.set_num_threads(settings.threads_per_rank(world_size))
    backend = "nccl" if settings.device == "cuda" else "gloo"
    if settings.device == "cuda":
        torch.cuda.set_device(rank)
    dist.init_process_group(
        backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    results = []
    try:
        warm_process([case for case, _ in work], settings, rank)
        for case, info in work:
            ids = make_ids(case, settings.seed)
            m = run_case_local(case, info, ids, settings, rank)
            gathered: list[Any] = [None] * world_size
            dist.all_gather_object(gathered, asdict(m))
            if rank == 0:
                results.append(gathered)
                times = [max(ts) for ts in zip(*(g["times_s"] for g in gathered), strict=True)]
                print(
                    f"    [w{world_size}] {case.describe()}: p50 "
                    f"{percentile(times, 50) * 1e3:.1f} ms",
                    flush=True,
                )
        if rank == 0:
            with open(out_path, "w") as f:
                json.dump(results, f)
        dist.barrier()
    finally:
        dist.destroy_process_group()


# --------------------------------------------------------------------------- reporting


def analytic_bytes(case: Case, unique_rows: int) -> dict[str, int]:
    """Bytes a step must touch under a simple model (fp32, 4 bytes per element).

    fwd reads ``B*P`` rows; bwd reads one gradient row per lookup (``B*P*D*4``), then reads and
    writes each unique row once to update it, plus its optimizer state (D floats per row for
    Adagrad, 1 for row-wise Adagrad, none for SGD). A dense-gradient path also sweeps the whole
    table every step (``full_table_update_bytes``, not counted in ``step_bytes``).
    """
    state_per_row = {"sgd": 0, "adagrad": case.dim, "rowwise_adagrad": 1}[case.optimizer]
    lookups = case.batch * case.pooling
    row = case.dim * 4
    out = {
        "weights_bytes": case.rows * row,
        "optimizer_state_bytes": case.rows * state_per_row * 4,
        "lookups": lookups,
        "unique_rows": unique_rows,
        "fwd_bytes": lookups * row,
        "bwd_grad_bytes": lookups * row,
        "update_bytes": 2 * unique_rows * row,
        "optimizer_state_update_bytes": 2 * unique_rows * state_per_row * 4,
    }
    out["bwd_bytes"] = (
        out["bwd_grad_bytes"] + out["update_bytes"] + out["optimizer_state_update_bytes"]
    )
    out["step_bytes"] = out["fwd_bytes"] + out["bwd_bytes"]
    dense = case.variant == "nn_dense" or case.kernel == "dense"
    if dense:
        # write grad, read grad, read+write weight, read+write state: whole table each step
        out["full_table_update_bytes"] = case.rows * 4 * (4 * case.dim + 2 * state_per_row)
    # resident: weights + optimizer state (+ a dense gradient the size of the table)
    out["resident_bytes"] = out["weights_bytes"] + out["optimizer_state_bytes"]
    if dense:
        out["resident_bytes"] += out["weights_bytes"]
    return out


def make_row(
    case: Case,
    per_rank: list[dict[str, Any]],
    info: PlanInfo | None,
    unique_rows: int,
    probes: dict[str, Any],
    settings: Settings,
) -> dict[str, Any]:
    """Assemble one JSON row from the per-rank measurements of one case."""
    times = [max(ts) for ts in zip(*(m["times_s"] for m in per_rank), strict=True)]  # [repeats]
    stats = summarize(times)
    p50, p90 = stats["p50"], stats["p90"]
    ab = analytic_bytes(case, unique_rows)
    gbps = ab["step_bytes"] / p50 / bu.GB
    limit = probes["limit"][_probe_key(case)]["gbps"]
    copy_gbps = probes["seq_copy"]["gbps"]
    measured = [int(m["peak_delta_bytes"]) for m in per_rank]
    # other processes' CPU use while the timed steps ran: rank 0's machine-wide busy time minus
    # what all ranks of this case used themselves
    x0 = per_rank[0]["extra"]
    other = bu.other_cpu_share(
        max(m["extra"]["wall_s"] for m in per_rank),
        x0["machine_busy_s"],
        sum(m["extra"]["own_cpu_s"] for m in per_rank),
    )
    est = info.estimate_per_rank if info else None
    err = None
    if est and max(measured) > 0:
        err = (max(est) - max(measured)) / max(measured)
    return {
        "variant": case.variant,
        "label": case.label,
        "config": {
            **asdict(case),
            "dtype": "fp32",
            "threads": settings.threads,
            "threads_per_rank": settings.threads_per_rank(case.world_size),
            "lr": settings.lr,
            "warmup": settings.warmup,
            "repeats": settings.repeats,
            "device": settings.device,
            "memory_budget_mb": settings.memory_budget_mb,
        },
        "is_reference": _is_reference(case),
        "analytic": ab,
        "memory": {
            "planner_estimate_bytes": max(est) if est else None,
            "planner_estimate_per_rank": est,
            "measured_peak_bytes": max(measured),
            "measured_peak_per_rank": measured,
            "method": per_rank[0]["memory_method"],
            "estimate_error": err,
        },
        "plan": info.summary if info else None,
        "latency_ms": {
            "p50": p50 * 1e3,
            "p90": p90 * 1e3,
            "mean": stats["mean"] * 1e3,
            "min": min(times) * 1e3,
            "samples": [t * 1e3 for t in times],
        },
        "samples_per_s": case.batch / p50,
        "effective_gbps": gbps,
        "share_of_copy_probe": gbps / copy_gbps,
        "share_of_limit_probe": gbps / limit,
        "profile_top_ops": per_rank[0].get("profile_top_ops", []),
        "other_cpu_share": other,
        "loadavg": x0["loadavg"],
    }


def _is_reference(case: Case) -> bool:
    return (case.rows, case.dim, case.pooling, case.batch) == tuple(REFERENCE.values())


def _probe_key(case: Case) -> str:
    return f"{case.rows}x{case.dim}xL{case.batch * case.pooling}"


def print_row(i: int, n: int, row: dict[str, Any]) -> None:
    """Config line, analytic bytes, latency, throughput, bandwidth and memory of one row."""
    c, a, m, lat = row["config"], row["analytic"], row["memory"], row["latency_ms"]
    est = m["planner_estimate_bytes"]
    est_txt = (
        f"planner est {bu.fmt_bytes(est)} vs measured {bu.fmt_bytes(m['measured_peak_bytes'])} "
        f"({m['estimate_error'] * 100:+.0f}%)"
        if est is not None and m["estimate_error"] is not None
        else f"measured {bu.fmt_bytes(m['measured_peak_bytes'])} "
        f"(analytic resident {bu.fmt_bytes(a['resident_bytes'])})"
    )
    print(
        f"[{i}/{n}] {row['label']} {c['rows']:,}x{c['dim']} fp32 P{c['pooling']} B{c['batch']} "
        f"{c['optimizer']} threads/rank {c['threads_per_rank']}\n"
        f"    bytes: weights {bu.fmt_bytes(a['weights_bytes'])}, opt state "
        f"{bu.fmt_bytes(a['optimizer_state_bytes'])}, per step fwd {bu.fmt_bytes(a['fwd_bytes'])} "
        f"bwd {bu.fmt_bytes(a['bwd_bytes'])} ({a['unique_rows']:,} unique rows)\n"
        f"    p50 {lat['p50']:.2f} ms  p90 {lat['p90']:.2f} ms  {row['samples_per_s']:,.0f} "
        f"samples/s  {row['effective_gbps']:.2f} GB/s = {row['share_of_copy_probe'] * 100:.0f}% "
        f"of copy, {row['share_of_limit_probe'] * 100:.0f}% of limit; other processes used "
        f"{row['other_cpu_share'] * 100:.0f}% of the CPUs meanwhile\n"
        f"    memory: {est_txt}" + (f"\n    plan: {row['plan']}" if row["plan"] else ""),
        flush=True,
    )


def evaluate_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Check the stated targets on every fused DMP row; the reference config is flagged.

    Targets: fused sharded EBC >= 6x the dense-gradient nn.EmbeddingBag (samples/s); no slower
    than nn.EmbeddingBag(sparse=True) with the same optimizer (p50); effective GB/s >= the limit
    probe's (gather + scatter-add of the same rows at the same thread count); planner estimate
    within 15% of measured peak memory (every DMP row whose estimate is at least
    ``MEMORY_NOISE_FLOOR`` bytes; below that RSS page noise dominates).
    """

    def group(r: dict[str, Any]) -> tuple[Any, ...]:
        c = r["config"]
        return (c["rows"], c["dim"], c["pooling"], c["batch"], c["optimizer"])

    baselines: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
    for r in rows:
        if r["variant"] != "dmp":
            baselines.setdefault(group(r), {})[r["variant"]] = r
    out: list[dict[str, Any]] = []

    def add(
        r: dict[str, Any],
        name: str,
        value: float,
        threshold: float,
        text: str,
        met: bool,
        miss: float,
        miss_text: str,
    ) -> None:
        out.append(
            {
                "target": name,
                "label": r["label"],
                "config": r["config"],
                "is_reference": r["is_reference"],
                "value": value,
                "threshold": threshold,
                "met": met,
                "missed_by": None if met else miss,
                "text": text + ("" if met else f" ({miss_text})") + _contention(r),
                "other_cpu_share": r["other_cpu_share"],
            }
        )

    for r in rows:
        if r["variant"] != "dmp":
            continue
        base = baselines.get(group(r), {})
        if r["config"]["kernel"] == "fused":
            if "nn_dense" in base:
                x = r["samples_per_s"] / base["nn_dense"]["samples_per_s"]
                short = 1 - x / TARGET_DENSE_SPEEDUP
                add(
                    r,
                    "speedup_vs_dense_grad",
                    x,
                    TARGET_DENSE_SPEEDUP,
                    f"{x:.1f}x the dense-gradient nn.EmbeddingBag (target >= "
                    f"{TARGET_DENSE_SPEEDUP:g}x)",
                    x >= TARGET_DENSE_SPEEDUP,
                    short,
                    f"missed by {short * 100:.0f}%",
                )
            if "nn_sparse" in base:
                p50, sp50 = r["latency_ms"]["p50"], base["nn_sparse"]["latency_ms"]["p50"]
                slower = p50 / sp50 - 1
                add(
                    r,
                    "p50_vs_sparse_grad",
                    p50,
                    sp50,
                    f"p50 {p50:.2f} ms vs nn.EmbeddingBag(sparse=True) {sp50:.2f} ms",
                    p50 <= sp50,
                    slower,
                    f"missed by {slower * 100:.0f}%: slower",
                )
            share = r["share_of_limit_probe"]
            add(
                r,
                "bandwidth_vs_limit_probe",
                share,
                1.0,
                f"{r['effective_gbps']:.2f} GB/s = {share * 100:.0f}% of the limit probe",
                share >= 1.0,
                1 - share,
                f"missed by {(1 - share) * 100:.0f}%",
            )
        est, err = r["memory"]["planner_estimate_bytes"], r["memory"]["estimate_error"]
        if err is not None and est >= MEMORY_NOISE_FLOOR:
            over = abs(err) - TARGET_ESTIMATE_TOLERANCE
            add(
                r,
                "planner_estimate_within_15pct",
                err,
                TARGET_ESTIMATE_TOLERANCE,
                f"planner estimate {err * 100:+.1f}% vs measured peak",
                abs(err) <= TARGET_ESTIMATE_TOLERANCE,
                over,
                f"missed by {over * 100:.1f} points beyond +-15%",
            )
    return out


def _contention(r: dict[str, Any]) -> str:
    """A warning suffix when other processes used much CPU while this row was timed."""
    share = r["other_cpu_share"]
    if share == share and share > CONTENDED_SHARE:
        return f" [contended: other processes used {share * 100:.0f}% of the CPUs]"
    return ""


def print_targets(targets: list[dict[str, Any]]) -> None:
    """Print each target check; misses say by how much."""
    if not targets:
        return
    print("\n=== targets (* = the reference config 1,000,000x64 P20 B4096)")
    for t in targets:
        c = t["config"]
        mark = "*" if t["is_reference"] else " "
        where = (
            f"{t['label']} {c['rows']:,}x{c['dim']} P{c['pooling']} B{c['batch']} {c['optimizer']}"
        )
        status = "met   " if t["met"] else "MISSED"
        print(f"{mark} {status} {t['target']}: {where}: {t['text']}")


def print_top_ops(rows: list[dict[str, Any]]) -> None:
    """Which ops dominate a step, per profiled row (self CPU time, ProfilerStep excluded)."""
    profiled = [r for r in rows if r.get("profile_top_ops")]
    if not profiled:
        return
    print("\n=== top ops by self CPU time per step (profiled rows)")
    for r in profiled:
        c = r["config"]
        ops = "; ".join(
            f"{o['name'][:60]} {o['self_cpu_ms_per_step']:.2f} ms ({o['share'] * 100:.0f}%)"
            for o in r["profile_top_ops"][:3]
        )
        print(f"{r['label']} {c['rows']:,}x{c['dim']} {c['optimizer']}: {ops}")


def print_summary(rows: list[dict[str, Any]]) -> None:
    """One line per row."""
    print("\n=== summary")
    hdr = (
        f"{'variant':28} {'rows':>10} {'dim':>4} {'P':>3} {'B':>5} {'opt':>15} {'thr':>3} "
        f"{'p50ms':>8} {'p90ms':>8} {'samples/s':>10} {'GB/s':>6} {'%copy':>6} {'%limit':>6} "
        f"{'estMiB':>8} {'measMiB':>8} {'other%':>6}"
    )
    print(hdr)
    for r in rows:
        c, m = r["config"], r["memory"]
        est = m["planner_estimate_bytes"]
        print(
            f"{r['label']:28} {c['rows']:>10} {c['dim']:>4} {c['pooling']:>3} {c['batch']:>5} "
            f"{c['optimizer']:>15} {c['threads_per_rank']:>3} "
            f"{r['latency_ms']['p50']:>8.2f} {r['latency_ms']['p90']:>8.2f} "
            f"{r['samples_per_s']:>10.0f} {r['effective_gbps']:>6.2f} "
            f"{r['share_of_copy_probe'] * 100:>6.0f} {r['share_of_limit_probe'] * 100:>6.0f} "
            f"{(est / bu.MiB if est is not None else float('nan')):>8.1f} "
            f"{m['measured_peak_bytes'] / bu.MiB:>8.1f} {r['other_cpu_share'] * 100:>6.0f}"
        )


# --------------------------------------------------------------------------- driver


def run(cases: list[Case], settings: Settings, out: Path, preset: str, argv: list[str]) -> dict:
    """Plan, probe, run every case and write the JSON; return the result document."""
    import torch.distributed as dist

    _quiet_libraries()
    torch.set_num_threads(settings.threads)
    started = time.time()
    load_start = bu.load_average()
    run_meta = start_run_meta(settings.threads, argv=["benchmarks/ebc_benchmark.py", *argv])
    n_w2 = sum(c.world_size == 2 for c in cases)
    print(
        f"ebc_benchmark: preset={preset} cases={len(cases)} (world-2: {n_w2}) "
        f"threads={settings.threads} (per rank: w1 {settings.threads_per_rank(1)}, "
        f"w2 {settings.threads_per_rank(2)}) torch.get_num_threads()={torch.get_num_threads()} "
        f"warmup={settings.warmup} repeats={settings.repeats} device={settings.device} "
        f"loadavg={load_start}",
        flush=True,
    )

    # 1) plan every DMP case first: a budget that cannot fit fails before anything runs.
    plans: dict[Case, PlanInfo] = {c: plan_case(c, settings) for c in cases if c.variant == "dmp"}

    # 2) probes measured in this run
    probes: dict[str, Any] = {
        "seq_copy": bu.seq_copy_probe(settings.copy_probe_mib * bu.MiB),
        "limit": {},
        "threads": torch.get_num_threads(),
        "notes": "both probes run at the run's --threads; seq_copy GB/s counts read+write bytes; "
        "limit = gather + scatter-add of the lookup's rows, GB/s in the step's analytic bytes",
    }
    print(f"probe seq copy: {probes['seq_copy']['gbps']:.2f} GB/s", flush=True)
    unique: dict[tuple[int, int, int, int], int] = {}
    for c in cases:
        key = _probe_key(c)
        if key not in probes["limit"]:
            g = bu.limit_probe(c.rows, c.dim, make_ids(c, settings.seed))
            probes["limit"][key] = g
            print(
                f"probe gather+scatter-add {key}: {g['gbps']:.2f} GB/s "
                f"({g['median_s'] * 1e3:.2f} ms at {g['threads']} threads)",
                flush=True,
            )
        if c.data_key not in unique:
            unique[c.data_key] = int(torch.unique(make_ids(c, settings.seed)).numel())

    # 3) world-size-1 cases in this process
    rows_by_case: dict[Case, dict[str, Any]] = {}
    local = [c for c in cases if c.world_size == 1]
    need_pg = any(c.variant == "dmp" for c in local) and not dist.is_initialized()
    if need_pg:
        backend = "nccl" if settings.device == "cuda" else "gloo"
        port = free_loopback_port()
        dist.init_process_group(
            backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1
        )
    try:
        warm_process(local, settings)
        if settings.interleave and local:
            seed = settings.seed
            builds = [_builder(c, plans.get(c), make_ids(c, seed), settings) for c in local]
            # the limit probes join the rounds too: their share is then a same-time ratio
            keys = list(dict.fromkeys(_probe_key(c) for c in local))
            first = {_probe_key(c): c for c in reversed(local)}
            moved = {}
            for key in keys:
                c = first[key]
                step, moved[key] = bu.limit_probe_step(c.rows, c.dim, make_ids(c, seed))
                builds.append(lambda step=step: step)
            measured = measure_interleaved(builds, settings)
            for key, m in zip(keys, measured[len(local) :], strict=True):
                probes["limit"][key] = {
                    **bu.limit_result(moved[key], percentile(m.times_s, 50)),
                    "interleaved": True,
                }
                print(f"probe {key} interleaved: {probes['limit'][key]['gbps']:.2f} GB/s")
            measured = measured[: len(local)]
        else:
            measured = [
                run_case_local(c, plans.get(c), make_ids(c, settings.seed), settings) for c in local
            ]
        for c, m in zip(local, measured, strict=True):
            row = make_row(c, [asdict(m)], plans.get(c), unique[c.data_key], probes, settings)
            rows_by_case[c] = row
            print_row(len(rows_by_case), len(cases), row)
    finally:
        if need_pg:
            dist.destroy_process_group()

    # 4) world-size-2 cases in two spawned processes on gloo over loopback
    remote = [c for c in cases if c.world_size == 2]
    if remote:
        import torch.multiprocessing as mp

        print(f"spawning 2 ranks for {len(remote)} world-size-2 cases", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "w2.json")
            work = [(c, plans[c]) for c in remote]
            try:
                mp.spawn(
                    _rank_main,
                    args=(2, work, settings, free_loopback_port(), path),
                    nprocs=2,
                    join=True,
                )
            except Exception as err:  # noqa: BLE001 - report a rank failure in one line
                last = str(err).strip().splitlines()[-1] if str(err).strip() else repr(err)
                raise BenchmarkError(f"a world-size-2 rank failed: {last}") from None
            with open(path) as f:
                gathered = json.load(f)
        for c, per_rank in zip(remote, gathered, strict=True):
            row = make_row(c, per_rank, plans[c], unique[c.data_key], probes, settings)
            rows_by_case[c] = row
            print_row(len(rows_by_case), len(cases), row)

    rows = [rows_by_case[c] for c in cases]
    targets = evaluate_targets(rows)
    print_summary(rows)
    print_top_ops(rows)
    print_targets(targets)
    doc = {
        "meta": {
            **bu.machine_info(settings.threads),
            "argv": argv,
            "preset": preset,
            "settings": asdict(settings),
            "started_unix": started,
            "elapsed_s": time.time() - started,
            "loadavg_start": load_start,
            "loadavg_end": bu.load_average(),
            "note": "the 2 cores may be shared: compare rows of one run, not across runs",
        },
        "probes": probes,
        "rows": rows,
        "targets": targets,
    }
    out = write_result_to(out if out.suffix == ".json" else out.parent, out.stem, doc, run_meta)
    print(
        f"\nwrote {out} ({len(rows)} rows) in {doc['meta']['elapsed_s']:.0f} s, "
        f"loadavg start {load_start} end {doc['meta']['loadavg_end']}",
        flush=True,
    )
    return doc


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        cases, settings, out, preset = resolve(args)
        run(cases, settings, out, preset, argv)
    except BenchmarkError as err:
        print(f"ebc_benchmark: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

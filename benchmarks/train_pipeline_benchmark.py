"""Training-pipeline benchmark: the ML-100K DLRM step, measured per engine.

For each thread count and engine (``none`` = the plain loop, TorchRec's ``base`` and
``sparse_dist`` pipelines), and for batches that are

    prebuilt   made before timing (the step alone)
    real       made by ``data.loader.train_batches`` while training (gather + KJT build)

it times windows of ``--steps`` steps after ``--warmup`` steps and reports p50 samples/s over
``--repeats`` windows. The data path's share of a step is (time to make one batch) / (time
of a real step of the plain loop). ``--compile`` adds the sparse-dist engine with
``model.compile = true`` (compilation happens in the warm-up, outside the timed windows).

One process:   python benchmarks/train_pipeline_benchmark.py --threads 1,2 --compile \\
                   --topic train_pipeline_1proc
Two processes: torchrun --nproc_per_node 2 benchmarks/train_pipeline_benchmark.py \\
                   --threads 1 --topic train_pipeline_2proc
One GPU:       torchrun --nproc_per_node 1 benchmarks/train_pipeline_benchmark.py \\
                   --batch-size 4096 --topic train_pipeline_b4096

The machine is shared: every window records the 1-minute load average beside its timing.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_utils as bu  # noqa: E402

from torchrec_recsys.app import builders  # noqa: E402
from torchrec_recsys.config import load_config  # noqa: E402
from torchrec_recsys.data.batch import Batch  # noqa: E402
from torchrec_recsys.data.dataset import RecDataset  # noqa: E402
from torchrec_recsys.data.loader import ShardInfo, train_batches  # noqa: E402
from torchrec_recsys.distributed.env import DistContext, init_distributed  # noqa: E402
from torchrec_recsys.observability.provenance import start_run_meta, write_result_to  # noqa: E402
from torchrec_recsys.observability.timing import percentile  # noqa: E402
from torchrec_recsys.training.trainer import make_pipeline  # noqa: E402

ENGINES = ("none", "base", "sparse_dist")


def endless_batches(data: RecDataset, batch_size: int, shard: ShardInfo) -> Iterator[Batch]:
    """Training batches epoch after epoch (the real data path)."""
    for epoch in itertools.count():
        yield from train_batches(
            data.splits["train"], data.spec, batch_size, shard, seed=0, epoch=epoch
        )


def time_engine(
    engine: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[Batch],
    ctx: DistContext,
    warmup: int,
    steps: int,
    repeats: int,
) -> list[dict[str, float]]:
    """Seconds of ``repeats`` windows of ``steps`` steps of ``engine`` after ``warmup`` steps."""
    pipeline = make_pipeline(engine, model, optimizer, ctx.device)
    model.train()

    def step() -> torch.Tensor:
        if pipeline is not None:
            return pipeline.progress(batches)[0]
        batch = next(batches).to(ctx.device)
        loss, _ = model(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.detach()

    for _ in range(warmup):
        step()
    windows = []
    for _ in range(repeats):
        torch.distributed.barrier()
        start = time.perf_counter()
        for _ in range(steps):
            loss = step()
        float(loss)  # one read-back per window, as the trainer does at log steps
        windows.append({"seconds": time.perf_counter() - start, "load1": bu.load_average()[0]})
    if hasattr(pipeline, "detach"):
        pipeline.detach()
    return windows


def write(args: argparse.Namespace, rows: list[dict[str, object]]) -> None:
    """Write the rows so far (after every row: a long run leaves its results behind)."""
    result = {
        "benchmark": "train_pipeline",
        "command": " ".join(sys.argv),
        "machine": bu.machine_info(threads=torch.get_num_threads()),
        "rows": rows,
    }
    write_result_to(args.out, args.topic, result, args.run_meta)


def measure(args: argparse.Namespace, ctx: DistContext) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    sizes = [f"--train.batch_size={args.batch_size}"] if args.batch_size else []
    cfg = load_config(None, ["--train.progress_bar=false", *sizes])
    data = builders.build_data(cfg)
    shard = ShardInfo(ctx.rank, ctx.world_size)
    global_batch = cfg.train.batch_size * ctx.world_size
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        # data path alone: seconds to make one batch
        source = endless_batches(data, cfg.train.batch_size, shard)
        for _ in range(args.warmup):
            next(source)
        start = time.perf_counter()
        prebuilt = [next(source) for _ in range(args.steps)]
        data_seconds = (time.perf_counter() - start) / args.steps
        variants = [(e, False) for e in ENGINES] + ([("sparse_dist", True)] if args.compile else [])
        for engine, compiled in variants:
            run_cfg = load_config(None, [f"--model.compile={str(compiled).lower()}", *sizes])
            model, optimizer = builders.build_sharded(run_cfg, data, ctx)
            for batches_kind in ("prebuilt", "real") if not compiled else ("prebuilt",):
                if batches_kind == "prebuilt":
                    batches: Iterator[Batch] = itertools.cycle(prebuilt)
                else:
                    batches = endless_batches(data, cfg.train.batch_size, shard)
                windows = time_engine(
                    engine,
                    model,
                    optimizer,
                    batches,
                    ctx,
                    args.warmup * (5 if compiled else 1),
                    args.steps,
                    args.repeats,
                )
                rates = [args.steps * global_batch / w["seconds"] for w in windows]
                row = {
                    "world_size": ctx.world_size,
                    "threads": threads,
                    "engine": engine,
                    "compile": compiled,
                    "batches": batches_kind,
                    "p50_samples_per_second": percentile(rates, 50),
                    "p50_ms_per_step": percentile(
                        [1e3 * w["seconds"] / args.steps for w in windows], 50
                    ),
                    "data_ms_per_batch": 1e3 * data_seconds,
                    "windows": windows,
                }
                rows.append(row)
                if ctx.is_main:
                    write(args, rows)
                    print(
                        f"procs={ctx.world_size} threads={threads} {engine:<11} "
                        f"compile={compiled!s:<5} {batches_kind:<8} "
                        f"{row['p50_samples_per_second']:>9,.0f} samples/s "
                        f"{row['p50_ms_per_step']:6.2f} ms/step  load {windows[-1]['load1']}",
                        flush=True,
                    )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1", help="comma-separated thread counts")
    parser.add_argument("--steps", type=int, default=100, help="steps per timed window")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=3, help="timed windows")
    parser.add_argument("--compile", action="store_true", help="also model.compile = true")
    parser.add_argument("--batch-size", type=int, help="per-process batch (default: the config's)")
    parser.add_argument("--out", default="results", help="results folder, or a .json path (rank 0)")
    parser.add_argument("--topic", default="train_pipeline", help="result topic")
    args = parser.parse_args(argv)
    ctx = init_distributed()
    args.run_meta = start_run_meta()
    measure(args, ctx)


if __name__ == "__main__":
    main()

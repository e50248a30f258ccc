"""Streaming benchmark (issue 11, item 3): RSS stays flat while streaming N examples.

1. Writes ``--rows`` synthetic Criteo-shaped examples straight into Parquet shards (the
   ``preprocess --synthetic-rows`` path), unless ``--shards`` already holds them.
2. Streams every batch of every shard through ``ShardedExamples`` + DataLoader (the data
   path: Parquet read, KJT build), sampling RSS every ``--every`` batches.
3. Trains the Criteo DLRM (26 tables of ``--table-rows`` rows) through TorchRec's
   TrainPipelineSparseDist on the stream for ``--train-steps`` steps, sampling RSS.

    python benchmarks/streaming_benchmark.py --rows 10000000 --shards /tmp/synth10m \\
        --out benchmarks/results/streaming.json

RSS is this process's VmRSS; the machine is shared, so load averages are recorded.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_utils as bu  # noqa: E402

from torchrec_recsys.app.preprocess import main as preprocess_main  # noqa: E402
from torchrec_recsys.config import load_config  # noqa: E402
from torchrec_recsys.data.shards import ShardedExamples, read_manifest, stream_batches  # noqa: E402
from torchrec_recsys.distributed.env import init_distributed  # noqa: E402
from torchrec_recsys.distributed.sharding import shard_model  # noqa: E402
from torchrec_recsys.distributed.threads import configure_threads  # noqa: E402
from torchrec_recsys.models.dlrm import build_dlrm  # noqa: E402
from torchrec_recsys.models.tasks import RankingTask  # noqa: E402
from torchrec_recsys.training.trainer import make_pipeline  # noqa: E402

MiB = 2**20


def rss_mib() -> float:
    return bu.read_proc_status().get("VmRSS", 0) / MiB


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="synthetic examples")
    parser.add_argument("--shards", required=True, help="shard folder (written if empty)")
    parser.add_argument("--rows-per-shard", type=int, default=1_000_000)
    parser.add_argument("--table-rows", type=int, default=100_000, help="rows per table")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--every", type=int, default=100, help="batches between RSS samples")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    threads = configure_threads(None)
    result: dict = {
        "benchmark": "streaming",
        "command": "python " + " ".join(sys.argv),
        "machine": bu.machine_info(threads=threads),
        "rss_start_mib": rss_mib(),
    }
    if not (Path(args.shards) / "manifest.json").is_file():
        start = time.perf_counter()
        preprocess_main(
            [
                "--synthetic-rows",
                str(args.rows),
                "--rows-per-shard",
                str(args.rows_per_shard),
                "--out",
                args.shards,
                f"--data.criteo.hash_rows={args.table_rows}",
            ]
        )
        result["preprocess_seconds"] = time.perf_counter() - start
        result["preprocess_peak_rss_mib"] = bu.read_proc_status().get("VmHWM", 0) / MiB
    manifest = read_manifest(args.shards)
    result["total_rows"] = manifest["total_rows"]

    # 2. the data path over every example
    dataset = ShardedExamples(args.shards, args.batch_size, embedding_dim=16)
    samples, seen, start = [], 0, time.perf_counter()
    bu.reset_peak_rss()
    for i, batch in enumerate(stream_batches(dataset, num_workers=args.workers)):
        seen += len(batch.labels)
        if i % args.every == 0:
            samples.append({"examples": seen, "rss_mib": rss_mib(), "load1": bu.load_average()[0]})
    result["stream"] = {
        "examples": seen,
        "seconds": time.perf_counter() - start,
        "examples_per_second": seen / (time.perf_counter() - start),
        "peak_rss_mib": bu.read_proc_status().get("VmHWM", 0) / MiB,
        "samples": samples,
    }
    print(json.dumps({k: v for k, v in result["stream"].items() if k != "samples"}), flush=True)

    # 3. training on the stream
    ctx = init_distributed()
    cfg = load_config(
        "configs/criteo_synthetic_dlrm.toml", [f"--train.batch_size={args.batch_size}"]
    )
    task = RankingTask(
        build_dlrm(dataset.spec, cfg.model.dense_arch_layers, cfg.model.over_arch_layers)
    )
    model, optimizer = shard_model(
        task, dataset.spec.table_names(), cfg.sharding, cfg.optimizer, ctx, args.batch_size
    )
    pipeline = make_pipeline("sparse_dist", model, optimizer, ctx.device)
    batches = iter(stream_batches(dataset, num_workers=args.workers))
    model.train()
    train_samples, start = [], time.perf_counter()
    bu.reset_peak_rss()
    for step in range(args.train_steps):
        loss = pipeline.progress(batches)[0]
        if step % 25 == 0:
            train_samples.append(
                {
                    "step": step,
                    "loss": float(loss),
                    "rss_mib": rss_mib(),
                    "load1": bu.load_average()[0],
                }
            )
    seconds = time.perf_counter() - start
    result["train"] = {
        "steps": args.train_steps,
        "batch_size": args.batch_size,
        "samples_per_second": args.train_steps * args.batch_size / seconds,
        "peak_rss_mib": bu.read_proc_status().get("VmHWM", 0) / MiB,
        "samples": train_samples,
    }
    print(json.dumps({k: v for k, v in result["train"].items() if k != "samples"}), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()

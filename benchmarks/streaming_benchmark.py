"""Streaming benchmark: flat RSS while streaming and training on N examples.

1. Writes ``--rows`` synthetic Criteo-shaped examples straight into Parquet shards (the
   ``preprocess --synthetic-rows`` path; the last 5% + 5% are validation and test shards),
   unless ``--shards`` already holds them.
2. Streams every training batch through ``ShardSource`` + DataLoader (the data path:
   Parquet read, KJT build), sampling RSS every ``--every`` batches.
3. Runs ``python -m torchrec_recsys --threads 1 train`` with ``data.source = "shards"``
   (``configs/criteo_shards_dlrm.toml``) for ``--train-steps`` steps of ``--batch-size``, then
   its validation and test passes over their whole shards, sampling the RSS of the train
   process and of its DataLoader workers every ``--sample-seconds``.

    python benchmarks/streaming_benchmark.py --rows 10000000 --shards /tmp/synth10m \\
        --out results

RSS is VmRSS; the workers' RSS counts pages they share with the train process again (an
upper bound). The machine is shared, so load averages are recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_utils as bu  # noqa: E402

from torchrec_recsys.app.preprocess import main as preprocess_main  # noqa: E402
from torchrec_recsys.data.loader import ShardInfo  # noqa: E402
from torchrec_recsys.data.shards import MANIFEST, ShardSource  # noqa: E402
from torchrec_recsys.distributed.threads import configure_threads  # noqa: E402
from torchrec_recsys.observability.provenance import start_run_meta, write_result_to  # noqa: E402

MiB = 2**20
REPO = Path(__file__).resolve().parents[1]


def rss_mib() -> float:
    return bu.read_proc_status().get("VmRSS", 0) / MiB


def _status_kib(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants (from /proc/*/stat parent ids)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def train_on_shards(args: argparse.Namespace) -> dict:
    """Run ``train`` on the shards in a child process, sampling its RSS (and its workers')."""
    run_dir = Path(args.run_dir)
    command = [
        sys.executable,
        "-m",
        "torchrec_recsys",
        "--threads",
        "1",
        "train",
        "--config",
        str(REPO / "configs" / "criteo_shards_dlrm.toml"),
        f"--run-dir={run_dir}",
        f"--data.shards_dir={args.shards}",
        f"--data.loader_workers={args.workers}",
        f"--train.batch_size={args.batch_size}",
        f"--train.eval_batch_size={args.batch_size}",
        f"--train.max_steps_per_epoch={args.train_steps}",
        "--train.epochs=1",
        "--train.progress_bar=false",
    ]
    samples = []
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    while child.poll() is None:
        tree = process_tree(child.pid)
        samples.append(
            {
                "seconds": time.perf_counter() - start,
                "rss_mib": _status_kib(child.pid, "VmRSS") / 1024,
                "tree_rss_mib": sum(_status_kib(p, "VmRSS") for p in tree) / 1024,
                "processes": len(tree),
                "load1": bu.load_average()[0],
            }
        )
        time.sleep(args.sample_seconds)
    output = child.stdout.read().decode() if child.stdout else ""
    if child.returncode:
        raise SystemExit(f"train failed ({child.returncode}):\n{output[-4000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    epoch = summary["epochs"][0]
    return {
        "command": " ".join(command[1:]),
        "steps": summary["final_state"]["global_step"],
        "batch_size": args.batch_size,
        "loader_workers": args.workers,
        "samples_per_second": epoch["samples_per_second"],
        "train_seconds": epoch["seconds"],
        "wall_seconds": time.perf_counter() - start,
        "val": epoch["val"],
        "test": summary["test"],
        "dataset": summary["dataset"],
        "peak_rss_mib": max(x["rss_mib"] for x in samples),
        "peak_tree_rss_mib": max(x["tree_rss_mib"] for x in samples),
        "samples": samples,
        "output_tail": output[-2000:],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="synthetic examples")
    parser.add_argument("--shards", required=True, help="shard folder (written if empty)")
    parser.add_argument("--rows-per-shard", type=int, default=1_000_000)
    parser.add_argument("--table-rows", type=int, default=100_000, help="rows per table")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers")
    parser.add_argument("--every", type=int, default=100, help="batches between RSS samples")
    parser.add_argument("--train-steps", type=int, default=300, help="steps of `train`")
    parser.add_argument("--sample-seconds", type=float, default=0.5)
    parser.add_argument("--run-dir", default="/tmp/streaming_benchmark_run")
    parser.add_argument("--skip-stream", action="store_true", help="skip step 2")
    parser.add_argument("--out", default="results", help="results folder, or a .json path")
    args = parser.parse_args(argv)
    threads = configure_threads(1)
    meta = start_run_meta(threads=threads)
    result: dict = {
        "benchmark": "streaming",
        "command": "python " + " ".join(sys.argv),
        "machine": bu.machine_info(threads=threads),
        "rss_start_mib": rss_mib(),
    }
    if not (Path(args.shards) / MANIFEST).is_file():
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
    source = ShardSource(args.shards, embedding_dim=16, workers=args.workers)
    result["total_rows"] = source.manifest["total_rows"]
    result["split_rows"] = {split: source.rows(split) for split in ("train", "val", "test")}

    if not args.skip_stream:  # 2. the data path over every training example
        samples, seen, start = [], 0, time.perf_counter()
        bu.reset_peak_rss()
        batches = source.train_batches(args.batch_size, ShardInfo(), seed=0, epoch=0)
        for i, batch in enumerate(batches):
            seen += len(batch.labels)
            if i % args.every == 0:
                tree = process_tree(os.getpid())  # this process + its loader workers
                samples.append(
                    {
                        "examples": seen,
                        "rss_mib": rss_mib(),
                        "tree_rss_mib": sum(_status_kib(p, "VmRSS") for p in tree) / 1024,
                        "load1": bu.load_average()[0],
                    }
                )
        seconds = time.perf_counter() - start
        result["stream"] = {
            "examples": seen,
            "seconds": seconds,
            "examples_per_second": seen / seconds,
            "peak_rss_mib": bu.read_proc_status().get("VmHWM", 0) / MiB,
            "samples": samples,
        }
        print(json.dumps({k: v for k, v in result["stream"].items() if k != "samples"}))

    # 3. `train` on the shards, in a child process
    result["train"] = train_on_shards(args)
    shown = ("samples", "output_tail")
    print(json.dumps({k: v for k, v in result["train"].items() if k not in shown}), flush=True)
    print(f"wrote {write_result_to(args.out, 'streaming', result, meta)}")


if __name__ == "__main__":
    main()

"""One process with the default thread policy vs the same run under torchrun.

Runs ``python -m torchrec_recsys train`` (one epoch of the default ML-100K DLRM) as

    default   python -m torchrec_recsys train                  (threads from configure_threads)
    t1        python -m torchrec_recsys --threads 1 train
    t2        python -m torchrec_recsys --threads 2 train      (what torch did before: all cores)
    torchrun  torchrun --nproc_per_node 1 -m torchrec_recsys train   (OMP_NUM_THREADS=1)

in rounds (variants interleaved, so a change of machine load hits all of them), and records
each run's training samples/s from its summary.json, wall time, and the load average.

    python benchmarks/threads_benchmark.py --rounds 3      # -> results/threads_<hw>_<date>.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_utils as bu  # noqa: E402

from torchrec_recsys.observability.provenance import start_run_meta, write_result_to  # noqa: E402
from torchrec_recsys.observability.timing import percentile  # noqa: E402

VARIANTS = {
    "default": [sys.executable, "-m", "torchrec_recsys", "train"],
    "t1": [sys.executable, "-m", "torchrec_recsys", "--threads", "1", "train"],
    "t2": [sys.executable, "-m", "torchrec_recsys", "--threads", "2", "train"],
    "torchrun": [
        str(Path(sys.executable).with_name("torchrun")),
        "--nproc_per_node",
        "1",
        "-m",
        "torchrec_recsys",
        "train",
    ],
}


def run_once(name: str, out_dir: Path, epochs: int) -> dict[str, object]:
    """One training run of variant ``name``; its throughput, wall time and machine load."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.pop("TORCHREC_RECSYS_THREADS", None)
    run_dir = out_dir / name
    shutil.rmtree(run_dir, ignore_errors=True)
    args = [
        *VARIANTS[name],
        f"--train.epochs={epochs}",
        "--train.progress_bar=false",
        f"--run-dir={run_dir}",
    ]
    load_before = bu.load_average()
    start = time.perf_counter()
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-2000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "variant": name,
        "samples_per_second": summary["train_samples_per_second"],
        "wall_seconds": wall,
        "test_auc": summary["test"]["auc"],
        "load_before": load_before,
        "load_after": bu.load_average(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs of every variant")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per run")
    parser.add_argument("--variants", default="default,t1,t2,torchrun", help="comma-separated")
    parser.add_argument("--out", default="results", help="results folder, or a .json path")
    parser.add_argument("--topic", default="threads", help="result topic")
    args = parser.parse_args(argv)
    meta = start_run_meta(threads=0)
    names = args.variants.split(",")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name in names:
                row = run_once(name, Path(tmp), args.epochs)
                row["round"] = round_
                runs.append(row)
                print(json.dumps(row), flush=True)
    summary = {}
    for name in names:
        rates = [float(r["samples_per_second"]) for r in runs if r["variant"] == name]
        summary[name] = {
            "p50_samples_per_second": percentile(rates, 50),
            "min": min(rates),
            "max": max(rates),
        }
    result = {
        "benchmark": "threads",
        "command": "python benchmarks/threads_benchmark.py " + " ".join(argv or sys.argv[1:]),
        "machine": bu.machine_info(threads=0),
        "cores_available": len(os.sched_getaffinity(0)),
        "runs": runs,
        "summary": summary,
    }
    print(f"wrote {write_result_to(args.out, args.topic, result, meta)}")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

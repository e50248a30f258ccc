"""Threads on a busy box: 2-thread work with and without a CPU-bound process started just
before it (so the load average has not caught up), under OpenMP's default wait policy and
under ``OMP_WAIT_POLICY=PASSIVE`` (what ``configure_threads`` sets unless told otherwise).

Workloads, each in a fresh process (the OpenMP runtime reads the policy once, at load):

    eval   target ranks of 2,000 queries over 100,000 items (D = 32), the retrieval
           evaluation core (``metrics.retrieval.target_ranks``)
    train  forward + backward + Adam of a 3-layer MLP (512 wide) on batches of 1,024 with a
           pooled ``EmbeddingBag`` of 100,000 rows, 60 steps

Conditions are interleaved (round-robin over ``--repeats``) so load from elsewhere falls on
all alike; the report gives each median and the ratio default / passive.

    python benchmarks/busy_box_threads.py --repeats 3

Writes ``results/busy_box_threads_<hardware>_<date>.json`` (+ ``.md``) with provenance.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from torchrec_recsys.observability.provenance import start_run_meta, write_result  # noqa: E402

WORKLOADS = {
    "eval": """
import torch
from torchrec_recsys.metrics.retrieval import target_ranks
g = torch.Generator().manual_seed(0)
q, items = torch.randn(2000, 32, generator=g), torch.randn(100_000, 32, generator=g)
t = torch.randint(0, 100_000, (2000,), generator=g)
target_ranks(q[:64], items, t[:64])
start = time.perf_counter()
target_ranks(q, items, t)
""",
    "train": """
import torch
torch.manual_seed(0)
bag = torch.nn.EmbeddingBag(100_000, 64, mode="sum")
mlp = torch.nn.Sequential(torch.nn.Linear(64, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512),
                          torch.nn.ReLU(), torch.nn.Linear(512, 1))
opt = torch.optim.Adam([*bag.parameters(), *mlp.parameters()], lr=1e-3)
ids = torch.randint(0, 100_000, (1024 * 8,))
offsets = torch.arange(0, 1024 * 8, 8)
y = torch.rand(1024, 1)
def step():
    loss = torch.nn.functional.binary_cross_entropy_with_logits(mlp(bag(ids, offsets)), y)
    opt.zero_grad(); loss.backward(); opt.step()
step()
start = time.perf_counter()
for _ in range(60):
    step()
""",
}
BUSY = "while True:\n    pass\n"
POLICIES = {"default": None, "passive": "PASSIVE"}


def run_once(workload: str, policy: str | None, busy: bool, threads: int) -> float:
    """Seconds of ``workload`` in a fresh process at ``threads`` threads under ``policy``
    (None = unset), with one busy-looping process started just before it if ``busy``."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO))
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    code = "import time\n" + WORKLOADS[workload] + "print(time.perf_counter() - start)\n"
    hog = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
        )
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    if done.returncode != 0:
        raise SystemExit(f"error: workload {workload!r} failed: {done.stderr.strip()[-500:]}")
    return float(done.stdout.strip().splitlines()[-1])


def measure(repeats: int, threads: int, workloads: list[str]) -> list[dict[str, Any]]:
    cases = [(w, p, b) for w in workloads for b in (False, True) for p in POLICIES]
    runs: dict[tuple[str, str, bool], list[float]] = {case: [] for case in cases}
    for _ in range(repeats):
        for workload, policy, busy in cases:
            seconds = run_once(workload, POLICIES[policy], busy, threads)
            runs[(workload, policy, busy)].append(seconds)
            print(f"{workload:5s} busy={busy!s:5s} {policy:7s} {seconds:7.3f} s", flush=True)
    return [
        {
            "workload": w,
            "busy": b,
            "policy": p,
            "median_s": round(statistics.median(times), 4),
            "runs_s": [round(t, 4) for t in times],
        }
        for (w, p, b), times in runs.items()
    ]


def markdown(rows: list[dict[str, Any]], threads: int) -> str:
    lines = [
        f"# {threads}-thread work on an idle and a busy box, by OpenMP wait policy",
        "",
        "Busy: one CPU-bound process started just before the run (the load average has not",
        "caught up, so the thread policy still chose all cores).",
        "",
        "| workload | box | default s | passive s | default / passive |",
        "|---|---|---|---|---|",
    ]
    by = {(r["workload"], r["busy"], r["policy"]): r["median_s"] for r in rows}
    for workload in dict.fromkeys(r["workload"] for r in rows):
        for busy in (False, True):
            d, p = by[(workload, busy, "default")], by[(workload, busy, "passive")]
            box = "busy" if busy else "idle"
            lines.append(f"| {workload} | {box} | {d:.3f} | {p:.3f} | {d / p:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per condition (median)")
    parser.add_argument("--threads", type=int, default=2, help="threads of the workload")
    parser.add_argument("--workloads", default="eval,train", help="comma-separated")
    parser.add_argument("--out", default=str(REPO / "results"), help="results folder")
    args = parser.parse_args(argv)
    workloads = args.workloads.split(",")
    unknown = sorted(set(workloads) - set(WORKLOADS))
    if unknown:
        parser.error(f"--workloads {unknown[0]!r} is not one of {sorted(WORKLOADS)}")
    meta = start_run_meta(threads=args.threads)
    rows = measure(args.repeats, args.threads, workloads)
    table = markdown(rows, args.threads)
    payload = {"threads": args.threads, "repeats": args.repeats, "rows": rows}
    path = write_result(args.out, "busy_box_threads", payload, meta, markdown=table)
    print(table)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

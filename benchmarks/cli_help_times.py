"""Wall time of ``python -m torchrec_recsys <subcommand> --help``, each in a fresh process.

Every subcommand's ``--help`` (plus the top-level one and the nested ``sid build`` /
``sid report`` / ``config show``) runs ``--repeats`` times, round-robin so that load on the
machine falls on all of them alike; the median and the largest are reported next to two
references measured the same way: a bare interpreter (``python -c pass``) and
``python -c "import torch"`` (what ``--help`` cost when torch was imported before parsing).

    python benchmarks/cli_help_times.py --repeats 5

Writes ``results/cli_help_times_<hardware>_<date>.json`` (+ ``.md``) with provenance.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from torchrec_recsys.cli import SUBCOMMANDS  # noqa: E402
from torchrec_recsys.observability.provenance import start_run_meta, write_result  # noqa: E402

LIMIT_S = 1.5
"""The promise: every ``--help`` answers within this many seconds on the 2-core machine."""
NESTED = [["sid", "build"], ["sid", "report"], ["config", "show"]]
REFERENCES = {"python -c pass": ["-c", "pass"], "python -c 'import torch'": ["-c", "import torch"]}


def commands() -> dict[str, list[str]]:
    """Label -> interpreter arguments of every measured command."""
    helps = [[], *([name] for name in SUBCOMMANDS), *NESTED]
    out = {
        " ".join(["torchrec_recsys", *argv, "--help"]): ["-m", "torchrec_recsys", *argv, "--help"]
        for argv in helps
    }
    return {**out, **REFERENCES}


def time_once(args: list[str]) -> float:
    """Seconds from start to exit of ``python <args>`` in a fresh process (must exit 0)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, timeout=120
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"error: python {' '.join(args)} exited {done.returncode}")
    return seconds


def measure(repeats: int) -> dict[str, dict[str, Any]]:
    """Label -> {median_s, max_s, runs_s}, measured round-robin ``repeats`` times."""
    cmds = commands()
    runs: dict[str, list[float]] = {label: [] for label in cmds}
    for args in cmds.values():  # warm-up: the page cache, .pyc files
        time_once(args)
    for _ in range(repeats):
        for label, args in cmds.items():
            runs[label].append(time_once(args))
    return {
        label: {
            "median_s": round(statistics.median(times), 3),
            "max_s": round(max(times), 3),
            "runs_s": [round(t, 3) for t in times],
        }
        for label, times in runs.items()
    }


def markdown(times: dict[str, dict[str, Any]]) -> str:
    torch_s = times["python -c 'import torch'"]["median_s"]
    lines = [
        f"# `--help` wall time, fresh process (limit {LIMIT_S} s)",
        "",
        "| command | median s | max s | median / `import torch` |",
        "|---|---|---|---|",
    ]
    for label, t in times.items():
        ratio = t["median_s"] / torch_s if torch_s else float("nan")
        lines.append(f"| `{label}` | {t['median_s']:.3f} | {t['max_s']:.3f} | {ratio:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per command (median)")
    parser.add_argument("--out", default=str(REPO / "results"), help="results folder")
    args = parser.parse_args(argv)
    meta = start_run_meta(threads=None)
    times = measure(args.repeats)
    helps = {k: v for k, v in times.items() if k not in REFERENCES}
    slowest = max(helps, key=lambda k: helps[k]["median_s"])
    over = sorted(k for k, v in helps.items() if v["median_s"] > LIMIT_S)
    payload = {
        "limit_s": LIMIT_S,
        "repeats": args.repeats,
        "slowest": slowest,
        "over_limit": over,
        "times": times,
    }
    table = markdown(times)
    path = write_result(args.out, "cli_help_times", payload, meta, markdown=table)
    print(table)
    print(f"slowest: {slowest} ({helps[slowest]['median_s']:.3f} s); over {LIMIT_S} s: {over}")
    print(f"wrote {path}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())

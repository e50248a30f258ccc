"""Where a default ``train`` spends its time: process wall vs the run's phases, and what the
learned baselines cost when turned on.

Runs, in fresh processes and interleaved over ``--repeats`` rounds::

    imports     python -c "import torch, torchrec"   (the floor of any process)
    default     python -m torchrec_recsys --threads T train --config CONFIG
    baselines   the same with --baselines.enabled=true (logistic regression + LightGBM)

CONFIG is the product's default experiment (``configs/ml100k_dlrm.toml``, what ``train``
without ``--config`` and ``torchx run dist.ddp -j 1x2 train`` train) unless ``--config``
names another, e.g. the Criteo-shaped ``configs/criteo_synthetic_dlrm.toml``.

and reads each run's ``summary.json``: ``phase_seconds`` (data, build, fit, test, baselines)
and each learned baseline's ``fit_seconds``. Reported per variant (medians): process wall,
the share of it spent training and evaluating the model (fit + test), the same share of the
run's own wall (from reading the data to the summary), and each baseline's cost as a share of
the model's training (fit).

    python benchmarks/default_run_phases.py --repeats 3
    python benchmarks/default_run_phases.py --repeats 3 --config configs/criteo_synthetic_dlrm.toml

Writes ``results/default_run_phases_<config stem>_<hardware>_<date>.json`` (+ ``.md``) with
provenance.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from torchrec_recsys.observability.provenance import start_run_meta, write_result_to  # noqa: E402

VARIANTS = {"default": [], "baselines": ["--baselines.enabled=true"]}


def run_train(config: str, threads: int, extra: list[str], overrides: list[str]) -> dict:
    """One ``train`` process: its wall seconds and its summary."""
    with tempfile.TemporaryDirectory() as scratch:
        command = [
            sys.executable,
            "-m",
            "torchrec_recsys",
            "--threads",
            str(threads),
            "train",
            "--config",
            config,
            "--train.progress_bar=false",
            f"--train.output_dir={scratch}",
            *extra,
            *overrides,
        ]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise SystemExit(f"error: {' '.join(command[2:])} failed: {tail}")
        (summary_path,) = Path(scratch).rglob("summary.json")
        summary = json.loads(summary_path.read_text())
    return {"process_s": wall, "summary": summary}


def import_seconds() -> float:
    """Wall seconds of a fresh ``import torch, torchrec``."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, torchrec"], check=True, cwd=REPO)
    return time.perf_counter() - start


def row(variant: str, runs: list[dict]) -> dict[str, Any]:
    """Medians over the runs of one variant."""

    def median(values: list[float]) -> float:
        return round(statistics.median(values), 3)

    phases = [r["summary"]["phase_seconds"] for r in runs]
    process = [r["process_s"] for r in runs]
    run_wall = [r["summary"]["wall_time_seconds"] for r in runs]
    model = [p["fit"] + p["test"] for p in phases]
    out: dict[str, Any] = {
        "variant": variant,
        "process_s": median(process),
        "process_runs_s": [round(s, 3) for s in process],
        "run_wall_s": median(run_wall),
        "outside_run_s": median([a - b for a, b in zip(process, run_wall, strict=True)]),
        **{f"{k}_s": median([p[k] for p in phases]) for k in phases[0]},
        "model_share_of_process": median([m / w for m, w in zip(model, process, strict=True)]),
        "model_share_of_run": median([m / w for m, w in zip(model, run_wall, strict=True)]),
        "test_auc": median([r["summary"]["test"]["auc"] for r in runs]),
    }
    learned = [
        {k: v for k, v in r["summary"]["baselines_test"].items() if isinstance(v, dict)}
        for r in runs
    ]
    for name in learned[0]:
        seconds = [b[name]["fit_seconds"] for b in learned]
        out[f"{name}_s"] = median(seconds)
        out[f"{name}_share_of_fit"] = median(
            [s / p["fit"] for s, p in zip(seconds, phases, strict=True)]
        )
        out[f"{name}_auc"] = median([b[name]["auc"] for b in learned])
    return out


def markdown(rows: list[dict[str, Any]], imports_s: float, command: str) -> str:
    lines = [
        "# Where a default train spends its time",
        "",
        f"`{command}`; medians of interleaved fresh processes. A fresh "
        f"`import torch, torchrec` takes {imports_s:.2f} s.",
        "",
        "| variant | process s | run s | data s | build s | fit s | test s | baselines s | "
        "fit + test / process | fit + test / run | test AUC |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['process_s']:.2f} | {r['run_wall_s']:.2f} | "
            f"{r['data_s']:.2f} | {r['build_s']:.2f} | {r['fit_s']:.2f} | {r['test_s']:.2f} | "
            f"{r['baselines_s']:.2f} | {r['model_share_of_process']:.0%} | "
            f"{r['model_share_of_run']:.0%} | {r['test_auc']:.4f} |"
        )
    for r in rows:
        for name in ("logistic_regression", "lightgbm"):
            if f"{name}_s" in r:
                lines.append("")
                lines.append(
                    f"- {r['variant']}: {name} {r[f'{name}_s']:.2f} s = "
                    f"{r[f'{name}_share_of_fit']:.0%} of the model's fit, "
                    f"AUC {r[f'{name}_auc']:.4f}"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/ml100k_dlrm.toml")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--variants", default="default,baselines", help="comma-separated")
    parser.add_argument("--out", default=str(REPO / "results"), help="results folder or .json")
    args, overrides = parser.parse_known_args(argv)
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants {unknown[0]!r} is not one of {sorted(VARIANTS)}")
    bad = [o for o in overrides if not o.startswith("--")]
    if bad:
        parser.error(f"{bad[0]!r} is not a --section.key=value override")
    meta = start_run_meta(threads=args.threads)
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    imports: list[float] = []
    for round_ in range(args.repeats):
        imports.append(import_seconds())
        for variant in variants:
            runs[variant].append(run_train(args.config, args.threads, VARIANTS[variant], overrides))
            last = runs[variant][-1]
            print(
                f"round {round_} {variant}: process {last['process_s']:.2f} s, "
                f"run {last['summary']['wall_time_seconds']:.2f} s",
                flush=True,
            )
    rows = [row(v, r) for v, r in runs.items()]
    command = f"python -m torchrec_recsys --threads {args.threads} train --config {args.config}"
    imports_s = statistics.median(imports)
    table = markdown(rows, imports_s, " ".join([command, *overrides]))
    payload = {
        "config": args.config,
        "threads": args.threads,
        "overrides": overrides,
        "import_torch_torchrec_s": round(imports_s, 3),
        "rows": rows,
    }
    topic = f"default_run_phases_{Path(args.config).stem}"
    path = write_result_to(args.out, topic, payload, meta, markdown=table)
    print(table)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

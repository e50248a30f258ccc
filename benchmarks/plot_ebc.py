"""Turn ebc_benchmark.py JSON into a markdown table and two PNG plots (matplotlib Agg).

Outputs (defaults: beside the input, the newest ``results/ebc_readme_<hw>_<date>.json``):

* ``<stem>.md``: one row per benchmark row, plus the probes and the target checks;
* ``<stem>.throughput.png``: samples/s vs table rows, one line per variant, for the
  (dim, pooling, batch, optimizer) group that sweeps the most row counts;
* ``<stem>.memory.png``: planner memory estimate vs measured peak, with the +-15% band;
* with ``--runs``: ``results/ebc_headline_<hw>_<date>.{json,md}`` (the runs folded into one
  result), the headline ratios (fused DMP table_wise on 1 rank vs
  the dense-gradient and the sparse-gradient ``nn.EmbeddingBag``) of each run, grouped by thread
  count, with the run-to-run difference of each ratio.

Run (from the repo root)::

    python benchmarks/plot_ebc.py
    python benchmarks/plot_ebc.py --runs /tmp/ebc/ebc_headline_t*.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from torchrec_recsys.files import atomic_write_text
from torchrec_recsys.observability.provenance import (
    latest_result,
    start_run_meta,
    write_result,
)

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
MiB = 2**20
MIN_PLOT_BYTES = 8 * MiB  # smaller tables are below the RSS measurement noise
HEADLINE = "DMP/table_wise/fused/w1"
HEADLINE_BASELINES = ("nn.EmbeddingBag/dense", "nn.EmbeddingBag/sparse")
REPRO_TOLERANCE = 0.10  # run-to-run difference a reproducible ratio stays within


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(prog="plot_ebc", description=__doc__.splitlines()[0])
    p.add_argument(
        "--input",
        help="JSON written by ebc_benchmark.py (default: the newest results/ebc_readme_*)",
    )
    p.add_argument("--table", help="markdown table output (default: the input's .md)")
    p.add_argument(
        "--throughput-png",
        help="throughput vs rows plot output (default: <input stem>.throughput.png)",
    )
    p.add_argument(
        "--memory-png",
        help="planner estimate vs measured memory plot output (default: <stem>.memory.png)",
    )
    p.add_argument("--note", help="a caveat paragraph put under the title of the markdown table")
    p.add_argument(
        "--runs",
        nargs="+",
        metavar="JSON",
        help="instead of plotting: compare the headline ratios of these runs (grouped by "
        "--threads) and write --repro-table",
    )
    p.add_argument(
        "--repro-table",
        help="markdown output of --runs (default: results/ebc_headline_<hw>_<date>.md + .json)",
    )
    return p


def _limit_share(r: dict[str, Any]) -> float:
    """Share of the limit probe (older files: of the gather-only probe)."""
    return r.get("share_of_limit_probe", r.get("share_of_gather_probe", float("nan")))


def _limit_text(probes: dict[str, Any]) -> str:
    """The limit probes of a run (older files: the gather-only probes)."""
    if "limit" in probes:
        return (
            "limit (gather + scatter-add of the same rows, at "
            f"{probes.get('threads', '?')} threads) "
            + ", ".join(f"{k}: {v['gbps']:.2f} GB/s" for k, v in probes["limit"].items())
            + " (the step's analytic bytes)."
        )
    return (
        "random-row gather "
        + ", ".join(f"{k}: {v['gbps']:.2f} GB/s" for k, v in probes["gather"].items())
        + " (gathered row bytes)."
    )


def headline_ratios(doc: dict[str, Any]) -> dict[str, Any]:
    """The fused DMP table_wise (1 rank) row's samples/s over each baseline's, in one run.

    Returns:
        ``{"threads", "repeats", "loadavg", "p50_ms": {label: ms}, "limit_share",
        "ratios": {baseline label: x}}``.

    Raises:
        KeyError: the run has no headline row or misses a baseline.
    """
    rows = {r["label"]: r for r in doc["rows"] if r["config"]["optimizer"] == "sgd"}
    head = rows[HEADLINE]
    return {
        "threads": head["config"].get("threads", doc["meta"]["torch_threads"]),
        "repeats": head["config"]["repeats"],
        "loadavg": [doc["meta"]["loadavg_start"][0], doc["meta"]["loadavg_end"][0]],
        "p50_ms": {k: r["latency_ms"]["p50"] for k, r in rows.items()},
        "limit_share": _limit_share(head),
        "ratios": {b: head["samples_per_s"] / rows[b]["samples_per_s"] for b in HEADLINE_BASELINES},
    }


def repro_markdown(docs: dict[str, dict[str, Any]]) -> tuple[str, bool]:
    """Headline ratios per run and, per thread count and repeats, the run-to-run difference.

    The difference of a ratio over runs is ``(max - min) / mean``.

    Returns:
        (markdown, every difference within ``REPRO_TOLERANCE``)
    """
    per = {name: headline_ratios(doc) for name, doc in docs.items()}
    labels = [HEADLINE, *HEADLINE_BASELINES, "FusedEBC/unsharded"]
    lines = [
        "# Embedding benchmark headline: run-to-run",
        "",
        "One 1,000,000 x 64 fp32 table, pooling 20, batch 4,096, SGD, fwd + bwd + update; "
        "p50 ms per step; ratio = samples/s of fused DMP table_wise (1 rank) over the baseline's.",
        "",
        "| run | threads | repeats | load1 start-end | "
        + " | ".join(f"{x} p50 ms" for x in labels)
        + " | x dense | x sparse | % of limit probe |",
        "|---|---:|---:|---|" + "---:|" * (len(labels) + 3),
    ]
    for name, h in per.items():
        ms = " | ".join(f"{h['p50_ms'][x]:.2f}" if x in h["p50_ms"] else "" for x in labels)
        r = h["ratios"]
        lines.append(
            f"| {name} | {h['threads']} | {h['repeats']} | {h['loadavg'][0]}-{h['loadavg'][1]} "
            f"| {ms} "
            f"| {r[HEADLINE_BASELINES[0]]:.2f} | {r[HEADLINE_BASELINES[1]]:.2f} "
            f"| {h['limit_share'] * 100:.0f} |"
        )
    lines += ["", "| threads | repeats | ratio | runs | run-to-run difference | within 10% |"]
    lines += ["|---:|---:|---|---|---:|---|"]
    ok = True
    for threads, repeats in sorted({(h["threads"], h["repeats"]) for h in per.values()}):
        group = [h for h in per.values() if (h["threads"], h["repeats"]) == (threads, repeats)]
        for b in HEADLINE_BASELINES:
            xs = [h["ratios"][b] for h in group]
            diff = (max(xs) - min(xs)) / (sum(xs) / len(xs))
            within = diff <= REPRO_TOLERANCE
            ok &= within or len(xs) < 2
            lines.append(
                f"| {threads} | {repeats} | vs {b} | {', '.join(f'{x:.2f}x' for x in xs)} "
                f"| {diff * 100:.1f}% | {'yes' if within else '**no**'} |"
            )
    return "\n".join(lines) + "\n", ok


def _mib(x: float | None) -> str:
    return "" if x is None else f"{x / MiB:,.1f}"


def _pct(x: float | None) -> str:
    return "" if x is None or x != x else f"{x * 100:.0f}"


def markdown(doc: dict[str, Any], source: str, note: str | None = None) -> str:
    """The results document as markdown: header, probes, rows table, target checks."""
    meta, probes, rows = doc["meta"], doc["probes"], doc["rows"]
    lines = [
        "# Embedding-table benchmark",
        "",
        *([f"**Note:** {note}", ""] if note else []),
        f"Source: `{source}` (preset `{meta['preset']}`, command "
        f"`python benchmarks/ebc_benchmark.py {' '.join(meta['argv'])}`).",
        f"torch {meta['torch']}, torchrec {meta.get('torchrec', '?')}, fbgemm-gpu-cpu "
        f"{meta.get('fbgemm_gpu', '?')}, {meta['cpu_count']} CPUs, {meta['torch_threads']} "
        f"threads in total; load average {meta['loadavg_start']} at start, "
        f"{meta['loadavg_end']} at end; {meta['elapsed_s']:.0f} s.",
        "",
        f"Probes in the same run: sequential copy {probes['seq_copy']['gbps']:.2f} GB/s "
        "(read + write); " + _limit_text(probes),
        "",
        "Bytes per step: fwd reads B*P rows; bwd reads B*P gradient rows and reads+writes each "
        "unique row (and its optimizer state) once. GB/s = those bytes / p50. "
        "\"other procs' CPU %\": share of the machine's CPU used by other processes while the "
        "row was timed (the machine is shared; rows above ~10% are inflated).",
        "",
        "| variant | rows | dim | P | B | optimizer | threads/rank | fwd+bwd MiB/step | p50 ms "
        "| p90 ms | samples/s | GB/s | % copy | % limit | planner est MiB | measured MiB "
        "| est error | other procs' CPU % |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        c, m, lat = r["config"], r["memory"], r["latency_ms"]
        err = m["estimate_error"]
        lines.append(
            f"| {r['label']} | {c['rows']:,} | {c['dim']} | {c['pooling']} | {c['batch']} "
            f"| {c['optimizer']} | {c.get('threads_per_rank', '?')} "
            f"| {r['analytic']['step_bytes'] / MiB:,.1f} "
            f"| {lat['p50']:.2f} | {lat['p90']:.2f} "
            f"| {r['samples_per_s']:,.0f} | {r['effective_gbps']:.2f} "
            f"| {r['share_of_copy_probe'] * 100:.0f} | {_limit_share(r) * 100:.0f} "
            f"| {_mib(m['planner_estimate_bytes'])} | {_mib(m['measured_peak_bytes'])} "
            f"| {'' if err is None else f'{err * 100:+.0f}%'} "
            f"| {_pct(r.get('other_cpu_share'))} |"
        )
    targets = doc.get("targets", [])
    if targets:
        lines += ["", "## Targets (* = reference config 1,000,000 x 64, P20, B4096)", ""]
        lines += ["| | target | variant | config | result |", "|---|---|---|---|---|"]
        for t in targets:
            c = t["config"]
            cfg = f"{c['rows']:,}x{c['dim']} P{c['pooling']} B{c['batch']} {c['optimizer']}"
            ok = "met" if t["met"] else "**missed**"
            ref = "*" if t["is_reference"] else ""
            lines.append(f"| {ref} | {t['target']} ({ok}) | {t['label']} | {cfg} | {t['text']} |")
    return "\n".join(lines) + "\n"


def plot_throughput(rows: list[dict[str, Any]], path: Path) -> str | None:
    """samples/s vs rows per variant for the group that sweeps the most row counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        c = r["config"]
        groups[(c["dim"], c["pooling"], c["batch"], c["optimizer"])].append(r)
    if not groups:
        return None
    key = max(groups, key=lambda k: (len({r["config"]["rows"] for r in groups[k]}), len(groups[k])))
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in groups[key]:
        series[r["label"]].append((r["config"]["rows"], r["samples_per_s"]))
    fig, ax = plt.subplots(figsize=(10, 5))
    ax.set_prop_cycle(color=plt.cm.tab20.colors)
    for label, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("table rows")
    ax.set_ylabel("samples / s (fwd + bwd + update)")
    dim, pooling, batch, opt = key
    ax.set_title(f"Throughput vs rows: dim {dim}, pooling {pooling}, batch {batch}, {opt}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"dim {dim}, pooling {pooling}, batch {batch}, {opt}"


def plot_memory(rows: list[dict[str, Any]], path: Path) -> int:
    """Planner estimate vs measured peak (MiB, log-log) with y = x and the +-15% band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [
        (r["memory"]["measured_peak_bytes"] / MiB, r["memory"]["planner_estimate_bytes"] / MiB, r)
        for r in rows
        if (r["memory"]["planner_estimate_bytes"] or 0) >= MIN_PLOT_BYTES
        and r["memory"]["measured_peak_bytes"] > 0
    ]
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.set_prop_cycle(color=plt.cm.tab20.colors)
    if pts:
        lo = min(min(p[0], p[1]) for p in pts) / 1.5
        hi = max(max(p[0], p[1]) for p in pts) * 1.5
        xs = [lo, hi]
        ax.plot(xs, xs, "k-", lw=1, label="estimate = measured")
        ax.fill_between(
            xs,
            [x * 0.85 for x in xs],
            [x * 1.15 for x in xs],
            alpha=0.15,
            color="green",
            label="+-15%",
        )
        by_label: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for meas, est, r in pts:
            by_label[r["label"]].append((meas, est))
        for label, xy in sorted(by_label.items()):
            ax.scatter([p[0] for p in xy], [p[1] for p in xy], label=label, s=30)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured peak memory growth per rank (MiB, RSS high-water mark)")
    ax.set_ylabel("planner storage estimate per rank (MiB)")
    ax.set_title("Planner memory estimate vs measured (tables >= 8 MiB)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return len(pts)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 when the input is missing or not benchmark JSON)."""
    args = build_parser().parse_args(argv)
    meta = start_run_meta()
    if args.runs:
        try:
            docs = {Path(f).stem: json.loads(Path(f).read_text()) for f in args.runs}
            text, ok = repro_markdown(docs)
        except (OSError, ValueError, KeyError, TypeError) as err:
            err_text = f"plot_ebc: error: cannot read headline rows from --runs: {err!r}"
            print(err_text, file=sys.stderr)
            return 2
        if args.repro_table:
            atomic_write_text(Path(args.repro_table), text)
            written = args.repro_table
        else:
            written = write_result(RESULTS_DIR, "ebc_headline", {"runs": docs}, meta, text)
        print(text + f"wrote {written}; every ratio within 10% run to run: {ok}")
        return 0
    src = Path(args.input) if args.input else latest_result(RESULTS_DIR, "ebc_readme")
    if src is None:
        print("plot_ebc: error: no results/ebc_readme_*.json; pass --input", file=sys.stderr)
        return 2
    base = src.with_suffix("")
    args.throughput_png = args.throughput_png or f"{base}.throughput.png"
    args.memory_png = args.memory_png or f"{base}.memory.png"
    try:
        doc = json.loads(src.read_text())
        rows = doc["rows"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"plot_ebc: error: cannot read benchmark rows from {src}: {err}", file=sys.stderr)
        return 2
    table = Path(args.table) if args.table else src.with_suffix(".md")
    atomic_write_text(table, markdown(doc, str(src), args.note))
    group = plot_throughput(rows, Path(args.throughput_png))
    n = plot_memory(rows, Path(args.memory_png))
    print(f"wrote {table} ({len(rows)} rows)")
    print(f"wrote {args.throughput_png} ({group})")
    print(f"wrote {args.memory_png} ({n} points)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

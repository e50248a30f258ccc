"""Turn the scale benchmarks' JSON (issue 11) into markdown tables and PNG plots (Agg).

Reads whichever of these exist in ``benchmarks/results/``: ``threads.json``,
``train_pipeline_*.json``, ``growth_catalogue.json``, ``growth_eval_pipeline.json``,
``growth_sid.json``, ``growth_interactions.json``, ``streaming.json``. Writes
``scale_tables.md`` and ``scale_catalogue.png``, ``scale_streaming_rss.png``,
``scale_interactions.png``.

    python benchmarks/plot_scale.py
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from torchrec_recsys.files import atomic_write_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def _slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y on log x: the growth exponent (time ~ N^slope)."""
    lx, ly = [math.log(x) for x in xs], [math.log(max(y, 1e-9)) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    den = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / den if den else 0.0


def threads_table(data: dict[str, Any]) -> list[str]:
    lines = [
        "| variant | p50 samples/s | min | max | runs (load1 before) |",
        "|---|---:|---:|---:|---|",
    ]
    for name, s in data["summary"].items():
        loads = [str(r["load_before"][0]) for r in data["runs"] if r["variant"] == name]
        lines.append(
            f"| {name} | {s['p50_samples_per_second']:,.0f} | {s['min']:,.0f} | {s['max']:,.0f} "
            f"| {', '.join(loads)} |"
        )
    return lines


def pipeline_table(files: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| procs | threads | engine | compile | batches | p50 samples/s | ms/step | "
        "data ms/batch | data share | load1 |",
        "|---:|---:|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for data in files:
        rows = data["rows"]
        real_none = {
            (r["world_size"], r["threads"]): r["p50_ms_per_step"]
            for r in rows
            if r["engine"] == "none" and r["batches"] == "real" and not r["compile"]
        }
        for r in rows:
            key = (r["world_size"], r["threads"])
            share = r["data_ms_per_batch"] / real_none[key] if key in real_none else float("nan")
            loads = ", ".join(str(w["load1"]) for w in r["windows"])
            lines.append(
                f"| {r['world_size']} | {r['threads']} | {r['engine']} | {r['compile']} | "
                f"{r['batches']} | {r['p50_samples_per_second']:,.0f} | "
                f"{r['p50_ms_per_step']:.2f} | {r['data_ms_per_batch']:.2f} | "
                f"{100 * share:.0f}% | {loads} |"
            )
    return lines


def catalogue_table(data: dict[str, Any]) -> list[str]:
    rows = data["rows"]
    lines = [
        "| items | method | seconds | peak RSS growth (MiB) | load1 |",
        "|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['items']:,} | {r['method']} | {r['seconds']:.3f} | "
            f"{r['peak_rss_growth_mib']:.0f} | {r['load1']} |"
        )
    lines.append("")
    lines.append("Growth exponents (seconds ~ items^k over the measured sizes):")
    for method in dict.fromkeys(r["method"] for r in rows):
        sel = [r for r in rows if r["method"] == method]
        if len(sel) > 1:
            k = _slope([r["items"] for r in sel], [r["seconds"] for r in sel])
            lines.append(f"- {method}: k = {k:.2f}")
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        sel = [r for r in rows if r["method"] == method]
        ax.loglog([r["items"] for r in sel], [r["seconds"] for r in sel], marker="o", label=method)
    ax.set_xlabel("catalogue items")
    ax.set_ylabel(f"seconds for {rows[0]['queries']} queries")
    ax.set_title("Retrieval evaluation vs catalogue size (2 shared cores)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "scale_catalogue.png", dpi=120)
    plt.close(fig)
    return lines


def streaming_lines(data: dict[str, Any]) -> list[str]:
    s, t = data["stream"], data["train"]
    rss = [x["rss_mib"] for x in s["samples"]]
    stream_tree = [x["tree_rss_mib"] for x in s["samples"]]
    train_rss = [x["rss_mib"] for x in t["samples"]]
    tree_rss = [x["tree_rss_mib"] for x in t["samples"]]
    splits = data.get("split_rows", {})
    lines = [
        f"- rows on disk: {data['total_rows']:,}"
        + (f" ({', '.join(f'{k} {v:,}' for k, v in splits.items())})" if splits else "")
        + (
            f", written in {data['preprocess_seconds']:.0f} s (peak RSS "
            f"{data['preprocess_peak_rss_mib']:.0f} MiB)"
            if "preprocess_seconds" in data
            else ""
        ),
        f"- data path over every training batch: {s['examples']:,} examples in "
        f"{s['seconds']:.0f} s ({s['examples_per_second']:,.0f}/s); RSS "
        f"{min(rss):.0f}..{max(rss):.0f} MiB, peak {s['peak_rss_mib']:.0f} MiB; with its "
        f"loader workers {min(stream_tree):.0f}..{max(stream_tree):.0f} MiB",
        f"- `train` on the shards (batch {t['batch_size']}, {t['loader_workers']} loader "
        f"worker(s)): {t['steps']} steps at {t['samples_per_second']:,.0f} samples/s, then "
        f"validation on {t['dataset']['val']:,} and test on {t['dataset']['test']:,} streamed "
        f"examples (test AUC {t['test']['auc']:.3f}); {t['wall_seconds']:.0f} s in all; RSS of "
        f"the train process: median {statistics.median(r for r in train_rss if r):.0f} MiB, "
        f"peak {max(train_rss):.0f} MiB; with its loader workers {max(tree_rss):.0f} MiB at most",
    ]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    examples = [x["examples"] / 1e6 for x in s["samples"]]
    left.plot(examples, rss, label="reading process")
    left.plot(examples, stream_tree, label="+ loader workers")
    left.set_xlabel("training examples streamed (millions)")
    left.set_ylabel("RSS (MiB)")
    left.set_ylim(0, max(stream_tree) * 1.3)
    left.legend()
    left.set_title("Data path: ShardSource + DataLoader")
    seconds = [x["seconds"] for x in t["samples"]]
    right.plot(seconds, train_rss, label="train process")
    right.plot(seconds, tree_rss, label="+ loader workers")
    right.set_xlabel("seconds since `train` started")
    right.set_ylim(0, max(tree_rss) * 1.3)
    right.set_title(f"`train`: {t['steps']} steps x {t['batch_size']}, then val + test")
    right.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "scale_streaming_rss.png", dpi=120)
    plt.close(fig)
    return lines


def generic_table(data: dict[str, Any], keys: list[str]) -> list[str]:
    lines = ["| " + " | ".join(keys) + " |", "|" + "---:|" * len(keys)]
    for r in data["rows"]:
        cells = []
        for k in keys:
            v = r.get(k)
            cells.append(f"{v:,.2f}" if isinstance(v, float) else f"{v:,}" if v else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(
        description="Write benchmarks/results/scale_tables.md and the scale PNGs from the "
        "threads, pipeline, growth and streaming JSON results."
    ).parse_args(argv)
    out: list[str] = ["# Scale benchmark tables (generated by benchmarks/plot_scale.py)", ""]
    if data := _load("threads.json"):
        out += ["## Threads", "", f"`{data['command']}`", "", *threads_table(data), ""]
    pipes = [_load(p.name) for p in sorted(RESULTS.glob("train_pipeline_*.json"))]
    if pipes := [p for p in pipes if p]:
        out += ["## Training pipeline", ""]
        out += [f"`{p['command']}`" for p in pipes]
        out += ["", *pipeline_table(pipes), ""]
    if data := _load("growth_catalogue.json"):
        out += ["## Catalogue growth", "", f"`{data['command']}`", "", *catalogue_table(data), ""]
    if data := _load("growth_eval_pipeline.json"):
        keys = ["users", "items", "seconds", "peak_rss_growth_mib", "process_peak_rss_mib"]
        keys += ["dense_matrix_mib_avoided", "load1"]
        out += ["## evaluate-pipeline retrieval part", "", f"`{data['command']}`", ""]
        out += [*generic_table(data, keys), ""]
    if data := _load("growth_sid.json"):
        keys = ["items", "max_steps", "fit_seconds", "fit_peak_rss_growth_mib", "encode_seconds"]
        keys += ["report_seconds", "report_peak_rss_growth_mib", "load1"]
        out += ["## SID fit + report", "", f"`{data['command']}`", ""]
        out += [*generic_table(data, keys), ""]
    if data := _load("growth_interactions.json"):
        keys = ["interactions", "build_seconds", "build_peak_rss_growth_mib", "ms_per_step"]
        keys += ["process_peak_rss_mib", "load1"]
        out += ["## Interactions (in-memory path)", "", f"`{data['command']}`", ""]
        out += [*generic_table(data, keys), ""]
        rows = data["rows"]
        if len(rows) > 1:
            xs = [r["interactions"] for r in rows]
            build = _slope(xs, [r["build_seconds"] for r in rows])
            rss = _slope(xs, [r["build_peak_rss_growth_mib"] for r in rows])
            out.append(
                f"Growth exponents: build time ~ N^{build:.2f}, build peak RSS growth ~ N^{rss:.2f}"
            )
            fig, ax = plt.subplots(figsize=(6, 4))
            ax.loglog(xs, [r["build_peak_rss_growth_mib"] for r in rows], marker="o")
            ax.set_xlabel("interactions (in-memory build_dataset)")
            ax.set_ylabel("peak RSS growth of the build (MiB)")
            ax.set_title("In-memory data path: memory ~ interactions")
            fig.tight_layout()
            fig.savefig(RESULTS / "scale_interactions.png", dpi=120)
            plt.close(fig)
            out.append("")
    if data := _load("streaming.json"):
        out += ["## Streaming", "", f"`{data['command']}`", "", *streaming_lines(data), ""]
    atomic_write_text(RESULTS / "scale_tables.md", "\n".join(out) + "\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()

"""Turn the scale benchmarks' JSON into markdown tables and PNG plots (Agg).

Reads the newest of each of these in ``results/`` (``<topic>_<hardware>_<date>.json``, or a
plain ``<topic>.json``): ``threads``, ``train_pipeline_*`` (CPU runs), ``growth_catalogue``,
``growth_eval_pipeline``, ``growth_sid``, ``growth_interactions``, ``streaming``,
``dlrm_scale``, ``growth_tables`` (and the ``_rerun`` of the last two). Writes
``results/scale_tables_<hardware>_<date>.{json,md}`` and the figures beside the result they plot
(``<stem>.scale_catalogue.png``, ``.scale_streaming_rss.png``, ``.scale_interactions.png``,
``.scale_dlrm.png``, ``.scale_num_tables.png``).

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

from torchrec_recsys.observability.provenance import (  # noqa: E402
    latest_result,
    start_run_meta,
    write_result,
)

RESULTS = Path(__file__).resolve().parents[1] / "results"
_STEMS: dict[str, str] = {}
"""topic -> the stem of the dated result its data came from (names the figures)."""
_READ: list[str] = []
"""Stems of every result read (the derived table's sources)."""


def _load(name: str) -> dict[str, Any] | None:
    topic = name.removesuffix(".json")
    path: Path | None = RESULTS / name
    if not path.is_file():
        path = latest_result(RESULTS, topic)
        if path is None:
            return None
        _STEMS[topic] = path.stem
    _READ.append(path.stem)
    return json.loads(path.read_text())


def _figure(topic: str, name: str) -> Path:
    """``<stem>.<name>.png`` beside the result plotted, or ``<name>.png`` for a plain file."""
    stem = _STEMS.get(topic)
    return RESULTS / (f"{stem}.{name}.png" if stem else f"{name}.png")


def _slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y on log x: the growth exponent (time ~ N^slope)."""
    lx, ly = [math.log(x) for x in xs], [math.log(max(y, 1e-9)) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    den = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / den if den else 0.0


def _linear(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares ``(intercept, slope)`` of y = a + b x: a fixed cost plus a cost per unit."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0
    return my - b * mx, b


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
    fig.savefig(_figure("growth_catalogue", "scale_catalogue"), dpi=120)
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
    fig.savefig(_figure("streaming", "scale_streaming_rss"), dpi=120)
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


def _spread(values: list[float]) -> str:
    """``(max - min) / median`` of a row's windows, as a percentage: how noisy it was."""
    ordered = sorted(values)
    mid = ordered[len(ordered) // 2]
    return f"{100 * (ordered[-1] - ordered[0]) / mid:.0f}%" if mid else ""


def dlrm_scale_lines(data: dict[str, Any], again: dict[str, Any] | None = None) -> list[str]:
    """Table, growth exponents and ``scale_dlrm.png`` for ``dlrm_scale_benchmark.py``
    (a rerun, when given, is drawn dashed beside the first run)."""
    rows = data["rows"]
    lines = [
        "| rows per table | total rows | weights MiB | sharding | p50 ms/step | samples/s "
        "| window spread | weights MiB per rank | peak RSS MiB per rank | load1 per window |",
        "|---|---:|---:|---|---:|---:|---:|---|---|---|",
    ]
    for r in rows:
        per = r["per_rank"]
        ms = [1e3 * w["seconds"] / data["settings"]["steps"] for w in r["windows"]]
        weights = " / ".join(f"{x['weights_mib']:,.0f}" for x in per)
        rss = " / ".join(f"{x['peak_rss_mib']:,.0f}" for x in per)
        lines.append(
            f"| {r['rows']} | {r['total_rows']:,} | {r['weights_mib']:,.0f} | {r['sharding_type']} "
            f"| {r['p50_ms_per_step']:.1f} | {r['p50_samples_per_second']:,.0f} | {_spread(ms)} "
            f"| {weights} | {rss} "
            f"| {', '.join(str(w['load1']) for w in r['windows'])} |"
        )
    weights = [max(x["weights_mib"] for x in r["per_rank"]) for r in rows]
    growth = [max(x["peak_rss_growth_mib"] for x in r["per_rank"]) for r in rows]
    a, b = _linear(weights, growth)
    lines += [
        "",
        f"Memory: peak RSS growth of the largest rank ~ {a:.0f} MiB + {b:.2f} x its weights "
        "(least squares over every row).",
        "",
        "Growth exponents (ms/step ~ total rows^k):",
    ]
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, kind in enumerate(dict.fromkeys(r["sharding_type"] for r in rows)):
        sel = [r for r in rows if r["sharding_type"] == kind]
        xs = [r["total_rows"] for r in sel]
        if len(sel) > 1:
            k = _slope(xs, [r["p50_ms_per_step"] for r in sel])
            lines.append(f"- {kind}: k = {k:.2f}")
        color = f"C{i}"
        ys = [r["p50_samples_per_second"] for r in sel]
        ax.loglog(xs, ys, marker="o", color=color, label=kind)
        if again:
            sel2 = [r for r in again["rows"] if r["sharding_type"] == kind]
            ys2 = [r["p50_samples_per_second"] for r in sel2]
            xs2 = [r["total_rows"] for r in sel2]
            ax.loglog(xs2, ys2, marker="x", ls="--", color=color, label=f"{kind} (rerun)")
    s = data["settings"]
    ax.set_xlabel("embedding rows in all 26 tables")
    ax.set_ylabel("samples/s (p50 of windows)")
    ax.set_title(f"DLRM, {s['nproc']} processes x {s['threads']} thread, dim {s['dim']}, gloo")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(_figure("dlrm_scale", "scale_dlrm"), dpi=120)
    plt.close(fig)
    return lines


def rerun_lines(
    first: dict[str, Any], second: dict[str, Any], key: tuple[str, ...], value: str
) -> list[str]:
    """Run-to-run table: ``value`` of the rows of two runs matched on ``key``, and the
    difference ``|a - b| / mean``; ends with the median and largest difference."""
    again = {tuple(r[k] for k in key): r[value] for r in second["rows"]}
    lines = [
        f"| {' | '.join(key)} | {value} run 1 | run 2 | difference |",
        "|" + "---|" * len(key) + "---:|---:|---:|",
    ]
    diffs = []
    for r in first["rows"]:
        k = tuple(r[x] for x in key)
        if k not in again:
            continue
        a, b = r[value], again[k]
        diffs.append(abs(a - b) / ((a + b) / 2))
        lines.append(f"| {' | '.join(map(str, k))} | {a:.1f} | {b:.1f} | {100 * diffs[-1]:.0f}% |")
    if diffs:
        ordered = sorted(diffs)
        lines += [
            "",
            f"Run-to-run difference: median {100 * ordered[len(ordered) // 2]:.0f}%, "
            f"largest {100 * ordered[-1]:.0f}% (`{second['command']}`).",
        ]
    return lines


def num_tables_lines(data: dict[str, Any], again: dict[str, Any] | None = None) -> list[str]:
    """Table, growth exponents and ``scale_num_tables.png`` for ``--case tables`` (a rerun,
    when given, is drawn dashed)."""
    rows = data["rows"]
    lines = [
        "| tables | rows each | weights MiB | build s | p50 ms/step | window spread "
        "| peak RSS growth MiB | process peak RSS MiB | load1 per window |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['tables']} | {r['rows_per_table']:,} | {r['weights_mib']:,.0f} "
            f"| {r['build_seconds']:.1f} | {r['ms_per_step']:.1f} "
            f"| {_spread(r['windows_ms_per_step'])} | {r['peak_rss_growth_mib']:,.0f} "
            f"| {r['process_peak_rss_mib']:,.0f} | {', '.join(map(str, r['window_load1']))} |"
        )
    xs = [r["tables"] for r in rows]
    if len(rows) > 1:
        step = _slope(xs, [r["ms_per_step"] for r in rows])
        rss = _slope(xs, [r["peak_rss_growth_mib"] for r in rows])
        a, b = _linear(xs, [r["ms_per_step"] for r in rows])
        c, d = _linear(xs, [r["process_peak_rss_mib"] for r in rows])
        lines += [
            "",
            f"Growth exponents: ms/step ~ T^{step:.2f}, peak RSS growth ~ T^{rss:.2f}; linear "
            f"fits: ms/step ~ {a:.1f} + {b:.2f} T, process peak RSS ~ {c:.0f} + {d:.1f} T MiB",
        ]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
    left.loglog(xs, [r["ms_per_step"] for r in rows], marker="o")
    left.set_xlabel("tables")
    left.set_ylabel("ms per step (p50)")
    right.loglog(xs, [r["process_peak_rss_mib"] for r in rows], marker="o", color="tab:red")
    if again:
        xs2 = [r["tables"] for r in again["rows"]]
        left.loglog(xs2, [r["ms_per_step"] for r in again["rows"]], "x--", label="rerun")
        left.legend()
        rss2 = [r["process_peak_rss_mib"] for r in again["rows"]]
        right.loglog(xs2, rss2, "x--", color="tab:red")
    right.set_xlabel("tables")
    right.set_ylabel("process peak RSS (MiB)")
    fig.suptitle(f"DLRM vs number of tables ({rows[0]['rows_per_table']:,} rows each, 1 process)")
    fig.tight_layout()
    fig.savefig(_figure("growth_tables", "scale_num_tables"), dpi=120)
    plt.close(fig)
    return lines


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(
        description="Write results/scale_tables_*.md and the scale PNGs from the "
        "threads, pipeline, growth and streaming JSON results."
    ).parse_args(argv)
    meta = start_run_meta()
    _STEMS.clear()  # figures of plain files (tests) keep their plain names
    _READ.clear()
    out: list[str] = ["# Scale benchmark tables (generated by benchmarks/plot_scale.py)", ""]
    if data := _load("threads.json"):
        out += ["## Threads", "", f"`{data['command']}`", "", *threads_table(data), ""]
    pipes = [_load(p.name) for p in sorted(RESULTS.glob("train_pipeline_*.json"))]
    pipes = [p for p in pipes if p and not p.get("machine", {}).get("cuda_available")]
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
            fig.savefig(_figure("growth_interactions", "scale_interactions"), dpi=120)
            plt.close(fig)
            out.append("")
    if data := _load("dlrm_scale.json"):
        out += ["## DLRM throughput vs table size and sharding", "", f"`{data['command']}`", ""]
        again = _load("dlrm_scale_rerun.json")
        out += [*dlrm_scale_lines(data, again), ""]
        if again:
            key = ("rows", "sharding_type")
            out += [*rerun_lines(data, again, key, "p50_ms_per_step"), ""]
    if data := _load("growth_tables.json"):
        out += ["## Growth with the number of tables", "", f"`{data['command']}`", ""]
        again = _load("growth_tables_rerun.json")
        out += [*num_tables_lines(data, again), ""]
        if again:
            out += [*rerun_lines(data, again, ("tables",), "ms_per_step"), ""]
    if data := _load("streaming.json"):
        out += ["## Streaming", "", f"`{data['command']}`", "", *streaming_lines(data), ""]
    derived = {"derived_from": sorted(set(_READ))}
    path = write_result(RESULTS, "scale_tables", derived, meta, markdown="\n".join(out))
    print(f"wrote {path}")
    _STEMS.clear()
    print("\n".join(out))


if __name__ == "__main__":
    main()

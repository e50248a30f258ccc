"""One-off import of the pre-provenance result files into ``results/`` (run once, kept).

The files under ``benchmarks/results/`` and ``reports/`` were written before
:mod:`torchrec_recsys.observability.provenance` existed, each with its own metadata (a ``meta``
block, ``command`` + ``machine`` fields, or nothing). This script rewrites each kept one as
``results/<topic>_<hardware>_<yyyymmdd>.json`` (+ ``.md``) with one ``run_meta`` block filled
only from what the old file records:

* ``commit`` / ``started``: the commit that *added* the old file and its date
  (``git log --diff-filter=A``), unless the file records its own start time; the measured
  checkout itself was not recorded, so ``dirty`` is null;
* ``versions``, ``argv``, ``threads``, ``hardware``, ``load_start`` / ``load_end``: from the
  file's ``meta`` / ``machine`` / ``command`` / ``environment`` / ``config`` fields, null where
  it records nothing;
* ``imported: true`` and ``source`` (the old path(s)); ``last_changed`` (commit and date) when
  a later commit rewrote the old file.

The payload is the old document unchanged (nothing recomputed, no number invented). The
``yyyymmdd`` of the name is the date of the adding commit. Superseded files (listed in
:data:`SUPERSEDED`) are not imported; ``git rm`` them afterwards (history keeps them).

Run from the repository root, before deleting the old folders, or afterwards from the last
commit that had them::

    python scripts/import_results.py
    python scripts/import_results.py --rev bf8d260^
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from torchrec_recsys.files import atomic_write_text  # noqa: E402
from torchrec_recsys.observability.provenance import RUN_META_KEYS  # noqa: E402

OUT = REPO / "results"
REV: str | None = None
"""Read the old files from this git revision instead of the working tree (``--rev``)."""
B = "benchmarks/results/"
G = "benchmarks/results/gpu/"
R = "reports/"


@dataclass
class Item:
    """One imported result: its topic, the old JSON(s), the old Markdown, the old figures."""

    topic: str
    title: str
    json: str | None = None
    md: str | None = None
    figures: dict[str, str] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)
    """Several old run files folded into one result (payload ``runs``: stem -> document)."""
    derived_from: list[str] = field(default_factory=list)


ITEMS = [
    Item(
        "dlrm_scale",
        "DLRM step time vs table rows and sharding type",
        B + "dlrm_scale.json",
        figures={"scale_dlrm": B + "scale_dlrm.png"},
    ),
    Item(
        "dlrm_scale_rerun",
        "DLRM step time vs table rows (rerun, run-to-run spread)",
        B + "dlrm_scale_rerun.json",
    ),
    Item(
        "ebc_headline",
        "EBC headline ratios, run to run",
        md=B + "ebc_headline.md",
        runs=[
            B + f"ebc_headline_{r}.json"
            for r in ("t1_a", "t1_b", "t2_a", "t2_b", "t2_r40_c", "t2_r40_d")
        ],
    ),
    Item(
        "ebc_readme",
        "EmbeddingBagCollection vs nn.EmbeddingBag (README preset)",
        B + "ebc_readme.json",
        B + "ebc_table.md",
        figures={"throughput": B + "ebc_throughput.png", "memory": B + "ebc_memory.png"},
    ),
    Item(
        "ebc_reference",
        "EBC benchmark, reference preset",
        B + "ebc_reference.json",
        B + "ebc_reference_table.md",
        figures={"memory": B + "ebc_reference_memory.png"},
    ),
    Item(
        "faiss_benchmark", "FAISS flat / IVF / HNSW recall and latency", B + "faiss_benchmark.json"
    ),
    Item(
        "generative_latency", "Generative retrieval latency vs beams", B + "generative_latency.json"
    ),
    Item(
        "growth_catalogue",
        "Retrieval cost vs catalogue size",
        B + "growth_catalogue.json",
        figures={"scale_catalogue": B + "scale_catalogue.png"},
    ),
    Item(
        "growth_eval_pipeline", "Evaluation pipeline cost vs size", B + "growth_eval_pipeline.json"
    ),
    Item(
        "growth_interactions",
        "Training cost vs interactions",
        B + "growth_interactions.json",
        figures={"scale_interactions": B + "scale_interactions.png"},
    ),
    Item("growth_sid", "Semantic-ID learning cost vs items", B + "growth_sid.json"),
    Item(
        "growth_tables",
        "DLRM step vs number of tables",
        B + "growth_tables.json",
        figures={"scale_num_tables": B + "scale_num_tables.png"},
    ),
    Item(
        "growth_tables_rerun",
        "DLRM step vs number of tables (rerun)",
        B + "growth_tables_rerun.json",
    ),
    Item(
        "planner_budget",
        "Sharding planner under a memory cap",
        B + "planner_budget.json",
        B + "planner_budget.md",
    ),
    Item(
        "scale_tables",
        "Scaling tables (derived from the growth / scale results)",
        md=B + "scale_tables.md",
        derived_from=[
            "threads",
            "train_pipeline_*",
            "growth_catalogue",
            "growth_eval_pipeline",
            "growth_sid",
            "growth_interactions",
            "streaming",
            "dlrm_scale",
            "growth_tables",
        ],
    ),
    Item(
        "sequence_results",
        "Sequential retrieval: generative vs SASRec vs two-tower",
        B + "sequence_results.json",
    ),
    Item(
        "serve_cpu",
        "Serving latency per bundle, one process",
        B + "serve_cpu.json",
        B + "serve_cpu.md",
    ),
    Item(
        "serve_load",
        "HTTP serving load test and rollout",
        B + "serve_load.json",
        B + "serve_load.md",
    ),
    Item(
        "serve_load_processes1",
        "Serving load test, 1 worker process",
        B + "serve_load_processes1.json",
        B + "serve_load_processes1.md",
    ),
    Item(
        "serve_load_processes2",
        "Serving load test, 2 worker processes",
        B + "serve_load_processes2.json",
        B + "serve_load_processes2.md",
    ),
    Item("serving_drift", "Serving drift window plot", figures={"drift": B + "serving_drift.png"}),
    Item("sid_benchmark", "Semantic-ID learning time and memory", B + "sid_benchmark.json"),
    Item(
        "streaming",
        "Streaming preprocessing and training RSS",
        B + "streaming.json",
        figures={"scale_streaming_rss": B + "scale_streaming_rss.png"},
    ),
    Item("threads", "Intra-op threads vs epoch time", B + "threads.json"),
    Item(
        "threads_quiet", "Intra-op threads vs epoch time (quiet machine)", B + "threads_quiet.json"
    ),
    Item(
        "train_pipeline_1proc_t1",
        "Train pipeline, 1 process, 1 thread",
        B + "train_pipeline_1proc_t1.json",
    ),
    Item(
        "train_pipeline_1proc_t1_rerun",
        "Train pipeline, 1 process, 1 thread (rerun)",
        B + "train_pipeline_1proc_t1_rerun.json",
    ),
    Item(
        "train_pipeline_1proc_t2",
        "Train pipeline, 1 process, 2 threads",
        B + "train_pipeline_1proc_t2.json",
    ),
    Item(
        "train_pipeline_2proc_t1",
        "Train pipeline, 2 processes, 1 thread each",
        B + "train_pipeline_2proc_t1.json",
    ),
    Item("ebc_b65536", "EBC benchmark on GPU, batch 65536", G + "ebc_h100_b65536.json"),
    Item("ebc_b8192", "EBC benchmark on GPU, batch 8192", G + "ebc_h100_b8192.json"),
    Item(
        "generative_ablation",
        "Generative retrieval ablation (GPU)",
        G + "generative_ablation_gpu.json",
        G + "generative_ablation_gpu.md",
    ),
    Item("hbm_probe", "HBM bandwidth probe", G + "hbm_probe_h100.json"),
    Item(
        "sequence_results_gpu",
        "Sequential retrieval at larger scale (GPU)",
        G + "sequence_results_gpu.json",
    ),
    Item(
        "train_dlrm_summary", "DLRM training run summary (GPU)", G + "train_dlrm_h100_summary.json"
    ),
    Item(
        "train_pipeline_b256",
        "Train pipeline on GPU, batch 256",
        G + "train_pipeline_h100_b256.json",
    ),
    Item(
        "train_pipeline_b4096",
        "Train pipeline on GPU, batch 4096",
        G + "train_pipeline_h100_b4096.json",
    ),
    Item(
        "bookx_ranking",
        "Book-Crossing ranking and pipeline, 3 seeds",
        R + "bookx_ranking.json",
        R + "bookx_ranking.md",
    ),
    Item(
        "bookx_sid_ablation",
        "Book-Crossing semantic-ID ablation, 3 seeds",
        R + "bookx_sid_ablation.json",
        R + "bookx_sid_ablation.md",
    ),
    Item(
        "bookx_sid_ablation_no_popularity",
        "Book-Crossing semantic-ID ablation without item popularity, 3 seeds",
        R + "bookx_sid_ablation_no_popularity.json",
        R + "bookx_sid_ablation_no_popularity.md",
    ),
    Item(
        "ml100k_ranking",
        "MovieLens-100K ranking and pipeline, 3 seeds",
        R + "ml100k_ranking.json",
        R + "ml100k_ranking.md",
    ),
    Item(
        "sid_ablation",
        "MovieLens-100K semantic-ID ablation",
        R + "sid_ablation.json",
        R + "sid_ablation.md",
    ),
    Item(
        "sid_ablation_no_popularity",
        "MovieLens-100K semantic-ID ablation without popularity",
        R + "sid_ablation_no_popularity.json",
        R + "sid_ablation_no_popularity.md",
    ),
]

SUPERSEDED = {
    B + "ebc_quick.json": "smoke preset, named nowhere; replaced by ebc_readme / ebc_headline",
    B + "serve_load_quiet.json": "named nowhere; replaced by the later serve_load run",
    B + "serve_load_quiet.md": "named nowhere; replaced by the later serve_load run",
    B + "serve_load_100rps.json": "named nowhere; replaced by serve_load_processes1/2",
    B + "serve_load_100rps.md": "named nowhere; replaced by serve_load_processes1/2",
    B + "serve_load_rollout40.json": "named nowhere; replaced by the later serve_load run",
    B + "serve_load_rollout40.md": "named nowhere; replaced by the later serve_load run",
    **{
        f"{R}bookx_sid_ablation{v}_s{s}.{ext}": "one seed, merged into the 3-seed report"
        for v in ("", "_no_popularity")
        for s in range(3)
        for ext in ("json", "md")
    },
}


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def _read(path: str) -> bytes:
    if REV is None:
        return (REPO / path).read_bytes()
    return subprocess.run(
        ["git", "-C", str(REPO), "show", f"{REV}:{path}"], capture_output=True, check=True
    ).stdout


def _read_json(path: str) -> Any:
    return json.loads(_read(path))


def _old_files() -> set[str]:
    if REV is not None:
        listing = _git("ls-tree", "-r", "--name-only", REV, "--", "benchmarks/results", "reports")
        return set(listing.splitlines())
    return {
        str(p.relative_to(REPO))
        for d in ("benchmarks/results", "reports")
        for p in (REPO / d).rglob("*")
        if p.is_file()
    }


def adding_commit(path: str) -> tuple[str, str]:
    """``(sha, yyyy-mm-dd)`` of the commit that added ``path`` (the oldest if re-added)."""
    lines = _git("log", "--diff-filter=A", "--format=%H %cs", "--", path).splitlines()
    sha, day = lines[-1].split()
    return sha, day


def last_commit(path: str) -> tuple[str, str]:
    """``(sha, yyyy-mm-dd)`` of the last commit (up to ``--rev``) that changed ``path``."""
    rev = [REV] if REV else []
    sha, day = _git("log", "-1", "--format=%H %cs", *rev, "--", path).split()
    return sha, day


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _recorded(doc: dict[str, Any]) -> dict[str, Any]:
    """The metadata dicts an old document may carry, merged (later keys do not override)."""
    found: dict[str, Any] = {}
    for part in (
        doc.get("meta"),
        doc.get("machine"),
        doc.get("environment"),
        (doc.get("config") or {}).get("machine") if isinstance(doc.get("config"), dict) else None,
    ):
        if isinstance(part, dict):
            for k, v in part.items():
                found.setdefault(k, v)
    return found


def run_meta_from(doc: dict[str, Any], path: str, gpu_folder: bool) -> dict[str, Any]:
    """The ``run_meta`` block for an old document (see the module docstring)."""
    rec = _recorded(doc)
    config = doc.get("config") if isinstance(doc.get("config"), dict) else {}
    sha, day = adding_commit(path)

    argv = rec.get("argv")
    command = _first(doc.get("command"), config.get("command"))
    if isinstance(command, str):
        argv = shlex.split(command)
    elif isinstance(command, list):
        argv = command
    elif isinstance(argv, list) and doc.get("meta"):
        argv = ["benchmarks/ebc_benchmark.py", *argv]  # ebc_benchmark's meta.argv omits argv[0]

    versions = {
        name: rec[key]
        for key, name in (
            ("torch", "torch"),
            ("torchrec", "torchrec"),
            ("fbgemm_gpu", "fbgemm-gpu"),
            ("faiss_version", "faiss"),
            ("numpy_version", "numpy"),
        )
        if rec.get(key) is not None
    } or None

    threads = _first(
        rec.get("torch_threads"),
        doc.get("torch_threads"),
        doc.get("threads") if isinstance(doc.get("threads"), int) else None,
        rec.get("omp_threads"),
        config.get("threads"),
    )

    hardware: dict[str, Any] | None = {
        k: v
        for k, v in (
            ("cores", rec.get("cpu_count")),
            ("platform", rec.get("platform")),
            ("python", rec.get("python")),
            ("cuda_available", rec.get("cuda_available")),
            (
                "gpu",
                doc.get("device")
                if isinstance(doc.get("device"), str) and "cuda:" not in doc["device"]
                else None,
            ),
        )
        if v is not None
    } or None
    if gpu_folder and not (hardware or {}).get("gpu"):
        msg = _git("log", "-1", "--format=%s", sha)
        if "H100" in msg or "h100" in path:
            hardware = {
                **(hardware or {}),
                "gpu": "H100",
                "gpu_from": f"file name / message of commit {sha[:12]}",
            }

    started = None
    if rec.get("started_unix") is not None:
        started = datetime.fromtimestamp(rec["started_unix"], UTC).isoformat(timespec="seconds")
    finished = None
    if started and rec.get("elapsed_s") is not None:
        finished = datetime.fromtimestamp(rec["started_unix"] + rec["elapsed_s"], UTC).isoformat(
            timespec="seconds"
        )

    return {
        "commit": sha,
        "commit_is": "the commit that added the file (the measured checkout was not recorded)",
        "dirty": None,
        "versions": versions,
        "argv": argv,
        "threads": threads,
        "hardware": hardware,
        "load_start": _first(
            rec.get("loadavg_start"), doc.get("loadavg_start"), rec.get("loadavg_before")
        ),
        "load_end": _first(
            rec.get("loadavg_end"), doc.get("loadavg_end"), rec.get("loadavg_after")
        ),
        "started": started or day,
        "finished": finished,
        "imported": True,
        "source": path,
        **_changed_after(path, sha),
    }


def _changed_after(path: str, added: str) -> dict[str, Any]:
    """``{"last_changed": {"commit", "date"}}`` when a later commit rewrote the file."""
    sha, day = last_commit(path)
    return {} if sha == added else {"last_changed": {"commit": sha, "date": day}}


def hardware_tag(meta: dict[str, Any]) -> str:
    """``h100`` / ``cpu<n>`` from what was recorded; ``unknown`` when nothing was."""
    hw = meta.get("hardware") or {}
    if "H100" in str(hw.get("gpu", "")):
        return "h100"
    if hw.get("gpu"):
        return "gpu"
    if hw.get("cores"):
        return f"cpu{hw['cores']}"
    return "unknown"


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    text = json.dumps(v) if isinstance(v, (dict, list)) else str(v)
    return text if len(text) <= 60 else text[:57] + "..."


def render_table(doc: Any, limit: int = 40) -> str:
    """A Markdown table of the document: its ``rows`` list if flat, else the leaf values."""
    rows = doc.get("rows") if isinstance(doc, dict) else None
    if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
        keys = [k for k in rows[0] if not isinstance(rows[0][k], (dict, list))][:10]
        if keys:
            lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            lines += ["| " + " | ".join(_cell(r.get(k)) for k in keys) + " |" for r in rows[:limit]]
            return "\n".join(lines)
    leaves: list[tuple[str, Any]] = []

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                if k not in ("meta", "machine", "environment", "config", "command"):
                    walk(f"{prefix}.{k}" if prefix else str(k), x)
        elif isinstance(v, list) and v and all(isinstance(x, (dict, list)) for x in v):
            for i, x in enumerate(v):
                walk(f"{prefix}[{i}]", x)
        else:
            leaves.append((prefix, v))

    walk("", doc)
    lines = ["| field | value |", "|---|---|"]
    lines += [f"| {k} | {_cell(v)} |" for k, v in leaves[:limit]]
    if len(leaves) > limit:
        lines.append(f"| ... | {len(leaves) - limit} more values in the JSON |")
    return "\n".join(lines)


def markdown(item: Item, stem: str, meta: dict[str, Any], doc: dict[str, Any]) -> str:
    """Title, command, the table (the old Markdown if there was one), figures, run_meta."""
    argv = meta.get("argv")
    parts = [
        f"# {item.title}",
        "",
        f"Command: `{' '.join(argv)}`" if argv else "Command: not recorded",
        "",
    ]
    if item.md:
        old = _read(item.md).decode().strip().splitlines()
        if old and old[0].startswith("# "):
            old = old[1:]
        parts += ["\n".join(old).strip(), ""]
    elif doc:
        parts += [render_table(doc), ""]
    for name in item.figures:
        parts += [f"![{name}]({stem}.{name}.png)", ""]
    parts.append(import_footer(meta))
    return "\n".join(parts)


def import_footer(meta: dict[str, Any]) -> str:
    """The run_meta summary of an imported result: what was recorded, what was not."""
    sources = meta["source"] if isinstance(meta["source"], list) else [meta["source"]]
    hw = meta.get("hardware") or {}
    recorded = []
    if hw:
        recorded.append(", ".join(f"{k} {v}" for k, v in hw.items()))
    if meta.get("threads") is not None:
        recorded.append(f"threads {meta['threads']}")
    if meta.get("load_start") or meta.get("load_end"):
        recorded.append(f"load {meta.get('load_start')} -> {meta.get('load_end')}")
    if meta.get("versions"):
        recorded.append(", ".join(f"{k} {v}" for k, v in meta["versions"].items()))
    if meta.get("started") and len(str(meta["started"])) > 10:
        recorded.append(f"measured {meta['started']} - {meta.get('finished') or '?'}")
    missing = [k for k in RUN_META_KEYS if k not in ("commit", "started") and meta.get(k) is None]
    last = meta.get("last_changed")
    changed = f" (last rewritten in `{last['commit'][:12]}` on {last['date']})" if last else ""
    return (
        f"Imported from {', '.join(f'`{s}`' for s in sources)} by `scripts/import_results.py`: "
        f"commit `{meta['commit'][:12]}` is the commit that added the file, on "
        f"{str(meta['started'])[:10]}{changed}. Recorded by the old file: "
        f"{'; '.join(recorded) or 'nothing'}. Not recorded (null in the JSON): "
        f"{', '.join(missing) or 'nothing'}.\n"
    )


def import_item(item: Item) -> str:
    """Write ``results/<stem>.json`` / ``.md`` / figures for one item; return the stem."""
    sources = [p for p in (item.json, *item.runs, item.md, *item.figures.values()) if p]
    main = sources[0] if not item.json else item.json
    doc: dict[str, Any] = _read_json(item.json) if item.json else {}
    if item.runs:
        doc = {"runs": {Path(p).stem: _read_json(p) for p in item.runs}}
        meta = run_meta_from(doc["runs"][Path(item.runs[0]).stem], item.runs[0], False)
        meta["argv"] = ["benchmarks/plot_ebc.py", "--runs", *item.runs]
        meta["started"] = adding_commit(item.md or item.runs[0])[1]
        meta["finished"] = None
        meta["load_start"] = meta["load_end"] = None  # per run: under runs.<name>.meta
    else:
        meta = run_meta_from(doc, main, main.startswith(G))
    if item.derived_from:
        doc = {"derived_from": item.derived_from}
        meta["argv"] = ["benchmarks/plot_scale.py"]
    if not item.json and not item.runs and not item.derived_from:
        doc = {"figures": list(item.figures)}
        meta["argv"] = None
    meta["source"] = sources if len(sources) > 1 else main
    stem = f"{item.topic}_{hardware_tag(meta)}_{adding_commit(main)[1].replace('-', '')}"
    atomic_write_text(OUT / f"{stem}.json", json.dumps({"run_meta": meta, **doc}, indent=1) + "\n")
    text = markdown(item, stem, meta, doc)
    atomic_write_text(OUT / f"{stem}.md", text)
    for name, png in item.figures.items():
        (OUT / f"{stem}.{name}.png").write_bytes(_read(png))
    return stem


def main(argv: list[str] | None = None) -> None:
    global REV
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", help="read the old files from this git revision")
    REV = parser.parse_args(argv).rev
    OUT.mkdir(exist_ok=True)
    covered = set(SUPERSEDED)
    for item in ITEMS:
        stem = import_item(item)
        covered.update(p for p in (item.json, item.md, *item.runs, *item.figures.values()) if p)
        print(f"{stem}  <- {item.json or item.md or list(item.figures.values())}")
    old = _old_files()
    if missing := sorted(old - covered):
        sys.exit(f"not imported and not listed as superseded: {missing}")
    print(f"{len(ITEMS)} results written; {len(SUPERSEDED)} superseded files to git rm")


if __name__ == "__main__":
    main()

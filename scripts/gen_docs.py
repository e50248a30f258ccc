"""Rewrite the generated blocks of the docs from the result files and the config dataclasses.

A generated block is the text between ``<!-- BEGIN GENERATED: <name> -->`` and
``<!-- END GENERATED: <name> -->`` in ``README.md``, ``docs/*.md`` or ``results/README.md``
(files without markers are left alone). The blocks:

* ``headline``: the headline numbers of the stack, each linked to its report in ``results/``;
* ``config``: every config key with its type, default, range and doc, from the same
  :func:`torchrec_recsys.config.config_keys` that ``config show`` prints;
* ``results_index``: claim -> report -> command -> date / commit / hardware for every result
  JSON in ``results/``, from its ``run_meta`` block and :data:`RESULTS_INDEX`.

Run from the repository root::

    python scripts/gen_docs.py            # rewrite the blocks
    python scripts/gen_docs.py --check    # exit 1 naming each stale block
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from torchrec_recsys.observability.provenance import RUN_META_KEYS  # noqa: E402

RESULTS_INDEX: dict[str, str] = {
    "bookx_ranking_unknown_20261123": "Book-Crossing: re-ranking the two-tower candidates "
    "beats retrieval alone; ranker AUCs over 3 seeds",
    "bookx_sid_ablation_no_popularity_unknown_20261123": "Book-Crossing, no popularity "
    "feature: semantic-ID features vs item IDs, all / cold / long-tail items, 3 seeds",
    "bookx_sid_ablation_unknown_20261123": "Book-Crossing: semantic-ID features vs item IDs "
    "for DLRM and two-tower, all / cold / long-tail items, 3 seeds",
    "cli_help_times_cpu2_20261202": "Every `--help` answers in well under 1.5 s (no torch import)",
    "default_run_phases_cpu2_20261202": "A Criteo-shaped DLRM train: 70 % of the run and "
    "34 % of the process in training + evaluating the model; baselines off by default "
    "(on: 86-87 % of the model's fit each)",
    "default_run_phases_ml100k_dlrm_cpu2_20261204": "The default train (MovieLens-100K DLRM): "
    "83 % of the run and 38 % of the process in training + evaluating the model; baselines "
    "off by default (on: logistic regression 32 %, LightGBM 19 % of the model's fit)",
    "dlrm_scale_cpu2_20261123": "DLRM step time vs table rows (1e3 to Criteo-Kaggle sizes) "
    "and sharding type on 2 processes",
    "dlrm_scale_rerun_cpu2_20261123": "Rerun of the DLRM scale sweep: the run-to-run spread "
    "on the shared 2-core box",
    "ebc_b65536_h100_20261123": "EBC benchmark on an H100 at batch 65,536: fused TorchRec "
    "kernels vs nn.EmbeddingBag",
    "ebc_b8192_h100_20261123": "EBC benchmark on an H100 at batch 8,192",
    "ebc_headline_cpu2_20261123": "Fused TorchRec EBC (DMP table_wise) vs nn.EmbeddingBag "
    "dense / sparse gradients, run to run at 1 and 2 threads",
    "ebc_readme_cpu2_20261122": "EBC grid: throughput vs rows per variant and planner memory "
    "estimate vs measured peak",
    "ebc_reference_cpu2_20261122": "EBC at the reference shape (1M x 64, pooling 20, batch "
    "4,096) with the target checks",
    "encoder_cpu2_20261202": "Text encoder batched by token count: 1.57-1.64x faster than "
    "sorting by characters, 71-82 % of the matmul rate; no int8 backend keeps the neighbours; "
    "sid build of 149,842 Book-Crossing items in 526 s on 2 cores",
    "faiss_benchmark_cpu2_20261122": "FAISS flat / IVF / HNSW build time, recall@100 and QPS "
    "up to 1M vectors",
    "generative_ablation_ml100k_cpu2_20261205": "MovieLens-100K generative ablation, 3 seeds: "
    "token-per-position vs summed input, RQ-VAE vs residual k-means, 3 x 256 codebooks alone "
    "and with the summed input; validation and test recall with code utilisation and collision "
    "rate",
    "generative_ablation_h100_20261123": "Generative retrieval ablation (SID shape, codebook, "
    "user token, random codes), 3 seeds on an H100",
    "generative_latency_cpu2_20261202": "KV-cached beam search: 1.5-1.7x the batched "
    "throughput of the uncached search; two-tower + FAISS flat 6x faster per user",
    "generative_recipe_ml100k_cpu2_20261203": "Generative retriever on MovieLens-100K: "
    "dense learning rate x dropout chosen on validation (3e-3, 0.0) at 8 epochs x 200 steps",
    "generative_recipe_wd_ml100k_cpu2_20261203": "Generative retriever on MovieLens-100K, "
    "dropout 0: dense learning rate x weight decay chosen on validation (3e-3, 0.01)",
    "generative_step_time_cpu2_20261202": "Generative training step time: summed vs "
    "per-token SID inputs",
    "busy_box_threads_cpu2_20261202": "Passive OpenMP waiting: 2-thread eval 1.73x and training "
    "1.54x faster beside a just-started CPU-bound process, 8-12 % slower on an idle box",
    "growth_catalogue_cpu2_20261122": "Retrieval top-k time and memory vs catalogue size "
    "(before the cache-sized score tiles)",
    "growth_catalogue_t1_cpu2_20261202": "Target ranks and top-k at 0.45-0.73x the time of a "
    "FAISS flat search, 10k to 1M items, 1 thread (interleaved)",
    "growth_catalogue_t2_cpu2_20261202": "Target ranks and top-k at 0.62-0.97x the time of a "
    "FAISS flat search, 10k to 1M items, 2 threads (interleaved)",
    "growth_eval_pipeline_cpu2_20261122": "evaluate-pipeline retrieval part: time and memory "
    "at 20k users x 150k items",
    "growth_interactions_cpu2_20261122": "In-memory data path: build time and memory grow "
    "linearly with interactions",
    "growth_sid_cpu2_20261122": "Semantic-ID fit + report time and memory vs items",
    "growth_tables_cpu2_20261123": "DLRM step time and memory vs number of tables",
    "growth_tables_rerun_cpu2_20261123": "Rerun of the tables sweep: the run-to-run spread",
    "hbm_probe_h100_20261123": "H100 HBM bandwidth probe: copy and gather / scatter-add GB/s",
    "ml100k_ranking_unknown_20261123": "MovieLens-100K: LightGBM re-ranking beats retrieval "
    "alone; ranker AUCs, with and without context features, 3 seeds",
    "planner_budget_unknown_20261122": "The sharding planner under a per-rank memory cap "
    "picks a plan that fits and trains",
    "scale_tables_unknown_20261122": "The scaling tables derived from the growth / scale "
    "results (plot_scale.py)",
    "peer_sasrec_cpu2_20261203": "Our SASRec vs RecBole's SASRec on our exact MovieLens-100K "
    "split (same test targets, checked): RecBole 0.1676 after early stopping (epoch 21 of 27, "
    "1 seed) vs ours 0.1926 ± 0.0034",
    "retriever_comparison_bookx_active_cpu2_20261203": "Book-Crossing, users with >= 20 "
    "ratings: generative (learned SIDs and random codes) vs SASRec vs two-tower vs popularity "
    "on all, cold and long-tail targets, 3 seeds, 3 epochs of at most 300 steps, generative "
    "recipe before the validation search",
    "retriever_comparison_bookx_active_cpu2_20261204": "Book-Crossing, users with >= 20 "
    "ratings: generative (learned SIDs and random codes, the recipe chosen on MovieLens-100K) "
    "vs SASRec vs two-tower vs popularity on all, cold and long-tail targets, 3 seeds, 5 "
    "epochs of at most 300 steps for both sequence models",
    "retriever_comparison_ml100k_cpu2_20261202": "MovieLens-100K: generative vs SASRec vs "
    "two-tower vs popularity on all, cold and long-tail targets, 3 seeds, 3-epoch CPU budget, "
    "generative recipe before the validation search",
    "retriever_comparison_ml100k_cpu2_20261203": "MovieLens-100K: generative (recipe chosen "
    "on validation) vs SASRec vs two-tower vs popularity on all, cold and long-tail targets, "
    "3 seeds, 12 epochs of at most 200 steps for both sequence models",
    "sasrec_recipe_cpu2_20261202": "SASRec on MovieLens-100K: dropout x weight decay chosen "
    "on validation (0.2, 0.01); test Recall@10 0.1926 ± 0.0034 over 3 seeds",
    "sequence_results_gpu_h100_20261123": "Sequential retrieval at larger scale on an H100: "
    "generative vs SASRec vs two-tower",
    "sequence_results_unknown_20261122": "MovieLens-100K sequential retrieval: generative vs "
    "SASRec vs two-tower vs popularity, 3 seeds",
    "serve_cpu_cpu2_20261122": "In-process serving latency per bundle and path, 1 thread",
    "serve_load_cpu2_20261122": "HTTP load test at 25-100 req/s and a promote + rollback "
    "under load without failed requests",
    "serve_load_processes1_cpu2_20261123": "HTTP load test at 100 req/s, 1 server process",
    "serve_load_processes2_cpu2_20261123": "HTTP load test at 100 req/s, 2 server processes",
    "serving_drift_unknown_20261122": "The drift window plot of the serving walk-through",
    "sid_ablation_no_popularity_unknown_20261122": "MovieLens-100K, no popularity feature: "
    "semantic-ID features vs item IDs, one split",
    "sid_ablation_unknown_20261122": "MovieLens-100K: semantic-ID features vs item IDs for "
    "DLRM and two-tower, all / cold / long-tail items, one split",
    "sid_benchmark_cpu2_20261122": "Text encoding + semantic-ID learning time and peak RSS "
    "on MovieLens-100K titles",
    "step_breakdown_cpu2_20261202": "Data path 3-8 % of a step (ML-100K DLRM / two-tower, "
    "Criteo-shaped DLRM); our DLRM step 0.995x [0.97-1.02] TorchRec's reference DLRM (level)",
    "streaming_cpu2_20261122": "Streaming preprocess + training of 10M rows in bounded RSS",
    "threads_cpu2_20261122": "Intra-op threads vs epoch throughput (default, 1 thread, torchrun)",
    "threads_quiet_cpu2_20261123": "Intra-op threads vs epoch throughput on a quiet machine",
    "train_dlrm_summary_h100_20261123": "DLRM training run on an H100: test AUC / NE and baselines",
    "train_pipeline_1proc_t1_cpu2_20261122": "Train pipeline engines (none / base / "
    "sparse_dist), 1 process x 1 thread",
    "train_pipeline_1proc_t1_rerun_cpu2_20261122": "Rerun of the 1-process 1-thread pipeline "
    "benchmark",
    "train_pipeline_1proc_t2_cpu2_20261122": "Train pipeline engines, 1 process x 2 threads",
    "train_pipeline_2proc_t1_cpu2_20261122": "Train pipeline engines, 2 processes x 1 thread",
    "train_pipeline_b256_h100_20261123": "Train pipeline engines on an H100, batch 256",
    "train_pipeline_b4096_h100_20261123": "Train pipeline engines on an H100, batch 4,096",
}
"""Result stem -> the one-line claim it supports (hand-written; the rest comes from run_meta)."""

REQUIRED_META = RUN_META_KEYS[:-1]
"""Keys every ``run_meta`` block has (null where an imported file did not record them; an
imported file may lack ``finished``)."""

STEM_RE = re.compile(r"^(?P<topic>.+)_(?P<hw>[a-z0-9]+)_(?P<day>\d{8})$")
BLOCK_RE = re.compile(
    r"(?P<begin><!-- BEGIN GENERATED: (?P<name>[\w-]+) -->\n)(?P<body>.*?)"
    r"(?P<end><!-- END GENERATED: (?P=name) -->)",
    re.S,
)


# --------------------------------------------------------------------------- results


def result_stems(root: Path) -> list[str]:
    """Stems of the result JSON files in ``<root>/results``."""
    return sorted(p.stem for p in (root / "results").glob("*.json"))


def load(root: Path, stem: str) -> dict[str, Any]:
    return json.loads((root / "results" / f"{stem}.json").read_text())


def latest(root: Path, topic: str) -> tuple[str, dict[str, Any]] | None:
    """The newest result of ``topic`` (by the date in its name): ``(stem, document)``."""
    found = [
        (m["day"], stem)
        for stem in result_stems(root)
        if (m := STEM_RE.match(stem)) and m["topic"] == topic
    ]
    if not found:
        return None
    stem = max(found)[1]
    return stem, load(root, stem)


def results_prefix(root: Path, here: Path) -> str:
    """The link prefix from the file ``here`` to ``<root>/results/`` (empty when inside it)."""
    rel = os.path.relpath(root / "results", here.parent)
    return "" if rel == "." else rel + "/"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _command(argv: list[str] | None, limit: int = 90) -> str:
    if not argv:
        return "not recorded"
    text = shlex.join(argv)
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"`{_cell(text)}`"


def render_results_index(root: Path, here: Path) -> str:
    """The ``results_index`` block: one row per result JSON."""
    rel = results_prefix(root, here)
    lines = [
        "| claim | report | command | date | commit | hardware |",
        "|---|---|---|---|---|---|",
    ]
    for stem in result_stems(root):
        meta = load(root, stem).get("run_meta") or {}
        m = STEM_RE.match(stem)
        claim = RESULTS_INDEX.get(stem, "**not indexed: add a claim to RESULTS_INDEX**")
        commit = f"`{str(meta.get('commit') or '?')[:12]}`"
        if meta.get("imported"):
            commit += " (adding commit)"
            if last := meta.get("last_changed"):
                commit += f"; rewritten in `{last['commit'][:12]}` on {last['date']}"
        elif meta.get("dirty"):
            commit += " (dirty)"
        hw = m["hw"] if m else "?"
        cores = (meta.get("hardware") or {}).get("cores")
        if cores and not hw.startswith("cpu"):
            hw += f", {cores} cores"
        lines.append(
            f"| {_cell(claim)} | [{stem}]({rel}{stem}.md) | {_command(meta.get('argv'))} | "
            f"{str(meta.get('started') or '?')[:10]} | {commit} | {hw} |"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- headline


def _spread(values: list[float], digits: int = 4) -> str:
    from torchrec_recsys.metrics.spread import mean_spread

    return mean_spread(values, digits)


def _ebc_headline(doc: dict[str, Any]) -> str:
    dense, sparse = [], []
    for run in doc["runs"].values():
        rows = {r["label"]: r for r in run["rows"] if r["config"]["optimizer"] == "sgd"}
        head = rows["DMP/table_wise/fused/w1"]
        if head["config"].get("threads", run["meta"]["torch_threads"]) != 1:
            continue
        dense.append(head["samples_per_s"] / rows["nn.EmbeddingBag/dense"]["samples_per_s"])
        sparse.append(head["samples_per_s"] / rows["nn.EmbeddingBag/sparse"]["samples_per_s"])
    d = ", ".join(f"{x:.1f}x" for x in dense)
    s = ", ".join(f"{x:.1f}x" for x in sparse)
    return f"{d} (dense grad); {s} (sparse grad); {len(dense)} runs at 1 thread"


def _pipeline_engines(doc: dict[str, Any]) -> str:
    rate = {
        r["engine"]: r["p50_samples_per_second"]
        for r in doc["rows"]
        if r.get("batches") == "prebuilt"
    }
    return (
        f"{rate['sparse_dist'] / rate['none']:.2f}x the plain loop "
        f"({rate['sparse_dist']:,.0f} vs {rate['none']:,.0f} samples/s)"
    )


def _rerank(doc: dict[str, Any]) -> str:
    rerank = [p["LightGBM (pipeline)"]["recall@10"] for p in doc["pipeline"]]
    alone = [p["retrieval"]["recall@10"] for p in doc["pipeline"]]
    return f"{_spread(rerank)} vs {_spread(alone)} ({len(alone)} seeds)"


def _comparison(doc: dict[str, Any]) -> str:
    """Test Recall@10 of each retriever of a ``compare-retrievers`` result, then popularity."""
    runs = doc["results"]
    cells = [
        f"{label} {_spread([r['test']['recall@10'] for r in seeds])}"
        for label, seeds in runs.items()
    ]
    popularity = next(iter(runs.values()))[0]["popularity"]["recall@10"]
    seeds = sorted({len(r) for r in runs.values()})
    return ", ".join(cells) + f", popularity {popularity:.4f} ({' / '.join(map(str, seeds))} seeds)"


def _sid(doc: dict[str, Any]) -> str:
    def auc(variant: str) -> str:
        cell = doc[variant]["dlrm"]["cold"]
        std = cell.get("auc_std")
        return f"{cell['auc']:.4f}" + (f" ± {std:.4f}" if std is not None else "")

    seeds = doc["ID only"]["dlrm"]["cold"].get("seeds", 1)
    return f"{auc('ID + SID')} vs {auc('ID only')} ({seeds} seed{'s' * (seeds > 1)})"


def _sid_time(doc: dict[str, Any]) -> str:
    return f"{doc['encoder_plus_sid_learning_s']:.1f} s, peak RSS {doc['peak_rss_mib']:,.0f} MiB"


def _serve(doc: dict[str, Any]) -> str:
    worst = max(doc["results"], key=lambda r: r["p95_ms"])
    errors = sum(r["errors"] for r in doc["results"])
    return (
        f"p95 <= {worst['p95_ms']:.1f} ms over {len(doc['results'])} cases "
        f"(worst: {worst['bundle']}, {worst['concurrency']} connections); {errors} errors"
    )


def _faiss(doc: dict[str, Any]) -> str:
    rows = [r for r in doc["results"] if r["kind"] == "hnsw"]
    best = max(rows, key=lambda r: (r["size"], r["recall_at_100"]))
    return (
        f"recall@100 {best['recall_at_100']:.3f} at {best['qps']:,.0f} QPS "
        f"({best['size']:,} vectors, {best['params']})"
    )


def _step(doc: dict[str, Any]) -> str:
    ref = doc["vs_reference"]
    cases = ("ml100k_dlrm", "ml100k_two_tower", "criteo_dlrm")
    shares = [r["data_share_of_real_step"] for r in doc["rows"] if r["case"] in cases]
    return (
        f"{ref['ratio_samples_per_second']:.3f}x its samples/s [{ref['min']:.3f}-{ref['max']:.3f}]"
        f" over {len(ref['per_round'])} rounds; data path {min(shares):.0%}-{max(shares):.0%}"
        " of a step"
    )


def _encoder(doc: dict[str, Any]) -> str:
    rows = {(r["threads"], r["batching"]): r for r in doc["batching"]}
    one = rows[(1, "tokens")]
    text = (
        f"{one['texts_per_s']:,.0f} texts/s at 1 thread, {one['speedup_vs_chars']:.2f}x faster "
        f"than sorting by characters, {one['share_of_matmul_rate']:.0%} of the matmul rate"
    )
    build = doc.get("sid_build")
    if build:
        text += f"; `sid build` of {build['items']:,} items: {build['process_wall_s']:.0f} s"
    return text


def _help(doc: dict[str, Any]) -> str:
    slowest = doc["times"][doc["slowest"]]["median_s"]
    torch_s = doc["times"].get("python -c 'import torch'", {}).get("median_s")
    tail = f" (`import torch` alone: {torch_s:.2f} s)" if torch_s else ""
    return f"slowest median {slowest:.2f} s: `{doc['slowest']}`{tail}"


HEADLINE: list[tuple[str, str, Callable[[dict[str, Any]], str]]] = [
    ("ebc_headline", "Fused TorchRec EBC step vs nn.EmbeddingBag (1M x 64)", _ebc_headline),
    (
        "train_pipeline_1proc_t1",
        "DLRM step: TorchRec TrainPipelineSparseDist vs plain loop (1 proc x 1 thread)",
        _pipeline_engines,
    ),
    (
        "step_breakdown",
        "Criteo-shaped DLRM step vs TorchRec's reference DLRM (1 thread, interleaved)",
        _step,
    ),
    ("ml100k_ranking", "MovieLens-100K Recall@10: LightGBM re-rank vs retrieval alone", _rerank),
    ("bookx_ranking", "Book-Crossing Recall@10: LightGBM re-rank vs retrieval alone", _rerank),
    (
        "retriever_comparison_ml100k",
        "MovieLens-100K Recall@10 of each retriever, one split and one training budget",
        _comparison,
    ),
    ("sid_ablation", "MovieLens-100K cold-item DLRM AUC: ID + SID vs ID only", _sid),
    ("bookx_sid_ablation", "Book-Crossing cold-item DLRM AUC: ID + SID vs ID only", _sid),
    ("sid_benchmark", "Semantic IDs for 1,682 titles: encode + learn", _sid_time),
    ("encoder", "Text encoder on 5,000 Book-Crossing titles, batched by token count", _encoder),
    ("serve_load_processes2", "HTTP serving at 100 req/s, 2 processes, 5 bundles", _serve),
    ("faiss_benchmark", "FAISS HNSW", _faiss),
    ("cli_help_times", "CLI `--help` wall time", _help),
]
"""(result topic, claim, the number from its newest JSON) per headline row."""


def render_headline(root: Path, here: Path) -> str:
    """The ``headline`` block: one row per :data:`HEADLINE` entry whose result exists."""
    rel = results_prefix(root, here)
    lines = ["| claim | measured | report |", "|---|---|---|"]
    for topic, claim, number in HEADLINE:
        found = latest(root, topic)
        if found is None:
            continue
        stem, doc = found
        hw = STEM_RE.match(stem)["hw"]  # type: ignore[index]
        lines.append(
            f"| {_cell(claim)} | {_cell(number(doc))} | [{hw}, "
            f"{stem[-8:-4]}-{stem[-4:-2]}-{stem[-2:]}]({rel}{stem}.md) |"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- config


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is None:
        return getattr(hint, "__name__", str(hint))
    args = ", ".join(_type_name(a) for a in typing.get_args(hint))
    name = {list: "list", dict: "dict", tuple: "tuple"}.get(origin, str(origin))
    return f"{name}[{args}]" if args else name


def _hint(cfg: Any, dotted: str) -> Any:
    *sections, name = dotted.split(".")
    obj = cfg
    for part in sections:
        obj = getattr(obj, part)
    return typing.get_type_hints(type(obj))[name]


def render_config(root: Path, here: Path) -> str:
    """The ``config`` block: every key of :class:`ExperimentConfig` as ``config show`` has it."""
    from torchrec_recsys.app.config_command import toml_value
    from torchrec_recsys.config import ExperimentConfig, config_keys

    cfg = ExperimentConfig()
    lines = ["| key | type | default | range | doc |", "|---|---|---|---|---|"]
    for entry in config_keys(cfg):
        doc = " ".join(entry.doc.split())
        lines.append(
            f"| `{entry.key}` | {_cell(_type_name(_hint(cfg, entry.key)))} | "
            f"`{_cell(toml_value(entry.value))}` | {_cell(entry.allowed or '')} | {_cell(doc)} |"
        )
    return "\n".join(lines) + "\n"


RETRIEVER_COMPARISONS: list[tuple[str, str]] = [
    ("retriever_comparison_ml100k", "MovieLens-100K"),
    ("retriever_comparison_bookx_active", "Book-Crossing, users with >= 20 ratings"),
]
"""(result topic, dataset) of each ``compare-retrievers`` table shown in the docs."""

GENERATIVE_ABLATIONS: list[tuple[str, str]] = [
    ("generative_ablation_ml100k", "MovieLens-100K"),
]
"""(result topic, dataset) of each ``generative-ablation`` table shown in the docs."""


def _result_tables(root: Path, here: Path, entries: list[tuple[str, str]]) -> str:
    """The newest result of each (topic, dataset) in ``entries``: its table as its driver
    rendered it from its JSON, linked to its report, with the commit and threads."""
    rel = results_prefix(root, here)
    parts = []
    for topic, dataset in entries:
        found = latest(root, topic)
        if found is None:
            continue
        stem, doc = found
        rendered = (root / "results" / f"{stem}.md").read_text().splitlines()
        table = [line for line in rendered if line.startswith("|")]
        meta = doc["run_meta"]
        parts.append(
            f"{dataset} ([`results/{stem}`]({rel}{stem}.md), commit "
            f"`{str(meta.get('commit') or '?')[:12]}`, threads {meta.get('threads')}):\n\n"
            + "\n".join(table)
            + "\n"
        )
    return "\n".join(parts)


def render_retriever_comparison(root: Path, here: Path) -> str:
    """The ``retriever_comparison`` block: the :data:`RETRIEVER_COMPARISONS` tables."""
    return _result_tables(root, here, RETRIEVER_COMPARISONS)


def render_generative_ablation(root: Path, here: Path) -> str:
    """The ``generative_ablation`` block: the :data:`GENERATIVE_ABLATIONS` tables."""
    return _result_tables(root, here, GENERATIVE_ABLATIONS)


RENDERERS: dict[str, Callable[[Path, Path], str]] = {
    "headline": render_headline,
    "config": render_config,
    "results_index": render_results_index,
    "retriever_comparison": render_retriever_comparison,
    "generative_ablation": render_generative_ablation,
}


# --------------------------------------------------------------------------- blocks


def doc_files(root: Path) -> list[Path]:
    """The files that may hold generated blocks (those that exist)."""
    files = [root / "README.md", *sorted((root / "docs").glob("*.md")), root / "results/README.md"]
    return [f for f in files if f.is_file()]


def rewrite(text: str, root: Path, here: Path) -> tuple[str, list[str]]:
    """``text`` with every generated block re-rendered, and the names of the blocks changed."""
    changed: list[str] = []

    def repl(m: re.Match[str]) -> str:
        name = m["name"]
        if name not in RENDERERS:
            raise SystemExit(f"{here}: unknown generated block {name!r}; known: {list(RENDERERS)}")
        body = RENDERERS[name](root, here)
        if body != m["body"]:
            changed.append(name)
        return m["begin"] + body + m["end"]

    return BLOCK_RE.sub(repl, text), changed


def run(root: Path, check: bool) -> list[str]:
    """Rewrite (or with ``check`` only compare) every block; return ``file: block`` stale."""
    stale = []
    for path in doc_files(root):
        text = path.read_text()
        new, changed = rewrite(text, root, path)
        stale += [f"{path.relative_to(root)}: {name}" for name in changed]
        if changed and not check:
            path.write_text(new)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a block is stale")
    parser.add_argument("--root", type=Path, default=REPO, help="repository root")
    args = parser.parse_args(argv)
    stale = run(args.root, args.check)
    for item in stale:
        print(f"{'stale' if args.check else 'rewrote'} generated block {item}")
    if args.check and stale:
        print("run: python scripts/gen_docs.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

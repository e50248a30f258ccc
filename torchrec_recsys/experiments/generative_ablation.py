"""Generative-retrieval ablation: what in the semantic IDs makes TIGER-style retrieval work?

Trains the generative retriever (configs/ml100k_generative.toml by default) once per variant
and seed, on one split, and tabulates the test metrics as mean +/- standard deviation over
seeds (so a difference can be told from noise), beside the selected epoch's validation
Recall@10 (what a variant is chosen on)::

    SID (base) | random codes of the same shape | levels 2 / 3 / 4 | codebook 32 / 64 / 128 / 256
    | residual k-means instead of RQ-VAE | without the user token
    | summed encoder input (one position per item) instead of TIGER's token per position
    | 3 x 256 codebooks with the summed input

Writes a markdown table and the per-run JSON (``--out``, ``.json`` next to it). Variants can
run as separate jobs (one ``--variants`` each, e.g. in parallel on one GPU) and be tabulated
together with ``--merge A.json B.json ...`` (no training; each run records the commit it
trained on). Variants that change how the SID table is learned (levels, codebook size,
method) learn their own table at start-up (cached under ``semantic_ids.cache_dir``). Beside
the metrics, each row gives the utilisation per level and the collision rate of the codes
the generator decoded. ``--results TOPIC`` (also with ``--merge``) writes
``results/TOPIC_<hardware>_<date>.json`` (+ ``.md``) with the provenance block.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torchrec_recsys import api
from torchrec_recsys.errors import UserError
from torchrec_recsys.experiments import parsers
from torchrec_recsys.experiments.outputs import read_reports, write_report
from torchrec_recsys.experiments.parsers import VARIANTS
from torchrec_recsys.metrics.spread import mean_spread
from torchrec_recsys.observability.provenance import start_run_meta, write_result

METRICS = ("recall@10", "ndcg@10", "mrr", "coverage@10", "cold_recall@10", "invalid_rate")


def _code_cells(runs: list[dict[str, Any]]) -> list[str]:
    """Utilisation per level and collision rate of the decoded codes (means over the seeds;
    the table is one per seed only for random codes); "-" for runs that did not record them."""
    usage = [r["sid_codes"] for r in runs if r.get("sid_codes")]
    if not usage:
        return ["-", "-"]
    levels = zip(*(u["utilisation"] for u in usage), strict=True)
    per_level = "/".join(f"{sum(level) / len(usage):.2f}" for level in levels)
    return [per_level, f"{sum(u['collision_rate'] for u in usage) / len(usage):.3f}"]


def _selected_cell(runs: list[dict[str, Any]]) -> str:
    """Mean +/- std of the selected epoch's validation metric (what a variant is chosen on);
    "-" when a run did not record it."""
    selected = [r.get("selected") for r in runs]
    if not all(selected):
        return "-"
    return mean_spread([s["value"] for s in selected])


def markdown_table(results: dict[str, list[dict[str, Any]]]) -> str:
    """Rows = variants; cells = mean +/- std over the seeds of the selected epoch's validation
    Recall@10 and of each test metric, with the utilisation per level and the collision rate
    of the codes the generator decoded."""
    header = ["variant", "seeds", "val recall@10", *METRICS, "utilisation", "collision"]
    header.append("train s")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant, runs in results.items():
        cells = [variant, str(len(runs)), _selected_cell(runs)]
        cells += [mean_spread([r["test"].get(m, float("nan")) for r in runs]) for m in METRICS]
        cells += _code_cells(runs)
        cells.append(mean_spread([r["wall_time_seconds"] for r in runs], digits=0))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _with_selection(run: dict[str, Any]) -> dict[str, Any]:
    """``run`` with its selected epoch (epoch, metric, validation value) read from the run's
    ``summary.json`` when the record predates keeping it and the run folder is still there."""
    if "selected" in run or "run_dir" not in run or not Path(run["run_dir"]).is_dir():
        return run
    finished = api.load_run(run["run_dir"]).result
    return run if finished is None else {**run, "selected": finished.summary.get("selected_epoch")}


def _merged(paths: list[str]) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    """Table + results of several result JSONs, variants in ``VARIANTS`` order."""
    merged: dict[str, list[dict[str, Any]]] = {}
    for path, part in zip(paths, read_reports(paths), strict=True):
        if not isinstance(part, dict):
            raise UserError(f"--merge {path!r} is not a variant -> runs mapping")
        for variant, runs in part.items():
            if variant in merged:
                raise UserError(f"--merge: variant {variant!r} appears in more than one file")
            merged[variant] = [_with_selection(run) for run in runs]
    order = {v: i for i, v in enumerate(VARIANTS)}
    merged = dict(sorted(merged.items(), key=lambda kv: order.get(kv[0], len(order))))
    return markdown_table(merged), merged


def main(argv: list[str]) -> None:
    parser = parsers.generative_ablation_parser()
    args, overrides = parser.parse_known_args(argv)
    meta = start_run_meta()
    if args.merge:
        table, results = _merged(args.merge)
        write_report(args.out, table, results)
        if args.results:
            payload = {"config": args.config, "merged": args.merge, "results": results}
            print(f"wrote {write_result('results', args.results, payload, meta, markdown=table)}")
        return
    results: dict[str, list[dict[str, Any]]] = {}
    for variant in args.variants or list(VARIANTS):
        results[variant] = []
        slug = "".join(c if c.isalnum() else "_" for c in variant.lower()).strip("_")
        for seed in args.seeds:
            cfg = api.load_config(
                args.config,
                [
                    f"--train.output_dir={args.runs_dir}",
                    "--train.progress_bar=false",
                    f"--train.seed={seed}",
                    f"--name=gen_ablation_{slug}_s{seed}",
                    *VARIANTS[variant],
                    *overrides,
                ],
            )
            result = api.train(cfg)
            keep = {
                "run_dir": str(result.run_dir),
                "test": result.metrics,
                "wall_time_seconds": result.wall_time_seconds,
                "sid_codes": result.summary.get("sid_codes"),
                "selected": result.summary.get("selected_epoch"),
                "commit": meta["commit"],
                "dirty": meta["dirty"],
            }
            results[variant].append({"seed": seed, **keep})
            print(f"{variant} seed {seed}: {json.dumps(result.metrics)}", flush=True)
    table = markdown_table(results)
    write_report(args.out, table, results)
    if args.results:
        payload = {"config": args.config, "overrides": overrides, "results": results}
        print(f"wrote {write_result('results', args.results, payload, meta, markdown=table)}")

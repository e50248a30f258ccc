"""Semantic-ID ablation: do SID features help items with little or no training data?

On one split (with a share of items held out of training entirely) and one or more seeds
(``--seeds``: ``train.seed``, i.e. weights and shuffling; the split stays fixed), train the
DLRM and the two-tower (or one of them: ``--models``) with four item representations and
score the test split per bucket:

    variants: ID only | SID only | ID + SID | ID + random codes (same shape as the SIDs)
    buckets:  all test items | cold (held out of training) | long tail (1..N training rows)

and write a markdown table (plus JSON) with DLRM AUC and two-tower Recall@K per cell: the
mean over seeds, and with several seeds "± sample std"; each bucket's size n is in the header.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import torch

from torchrec_recsys import api
from torchrec_recsys.errors import UserError
from torchrec_recsys.experiments import parsers
from torchrec_recsys.experiments.outputs import read_reports, write_report
from torchrec_recsys.metrics.ranking import auc
from torchrec_recsys.metrics.retrieval import (
    LONG_TAIL_MAX_TRAIN_COUNT,
    long_tail_mask,
    recall_ndcg,
    target_ranks,
)
from torchrec_recsys.observability.provenance import start_run_meta, write_result
from torchrec_recsys.retrieval.predict import predict

VARIANTS: dict[str, list[str]] = {
    "ID only": ["--semantic_ids.enabled=false"],
    "SID only": ["--semantic_ids.enabled=true", "--features.use_item_id=false"],
    "ID + SID": ["--semantic_ids.enabled=true"],
    "ID + random codes": ["--semantic_ids.enabled=true", "--semantic_ids.random_codes=true"],
}


def test_buckets(
    run_dir: Path, long_tail_max: int
) -> tuple[dict[str, torch.Tensor], api.TrainedModel]:
    """Masks over the test split: all, cold, long tail; plus the loaded trained model."""
    trained = api.load_run(run_dir).load_model()
    if trained is None:
        raise UserError("the ablation scores runs in one process; run it without a launcher")
    data = trained.data
    test = data.splits["test"]
    counts = data.items.train_counts[test.item_rows]
    cold = data.items.cold[test.item_rows]
    buckets = {
        "all": torch.ones(len(test), dtype=torch.bool),
        "cold": cold,
        "long tail": long_tail_mask(counts, cold, long_tail_max),
    }
    return buckets, trained


def score_run(
    run_dir: Path, model: str, long_tail_max: int, ks: tuple[int, ...]
) -> dict[str, dict[str, float]]:
    """Per bucket: {"n": examples, metric: value} for a trained DLRM or two-tower run."""
    buckets, trained = test_buckets(run_dir, long_tail_max)
    data, test = trained.data, trained.data.splits["test"]
    out = {}
    if model == "dlrm":
        probabilities = predict(trained.task, test, data, "ranking")  # [N]
        for name, mask in buckets.items():
            labels = test.labels[mask]
            ok = bool(mask.sum()) and 0 < float(labels.sum()) < len(labels)
            out[name] = {
                "n": int(mask.sum()),
                "auc": auc(probabilities[mask], labels) if ok else float("nan"),
            }
    else:
        queries = predict(trained.task, test, data, "query")  # [N, D]
        items = predict(trained.task, data.catalogue_table(), data, "item")  # [I, D]
        ranks = target_ranks(queries, items, test.item_rows, data.users.train_items, test.user_rows)
        for name, mask in buckets.items():
            nan = {f"recall@{k}": float("nan") for k in ks}
            metrics = recall_ndcg(ranks[mask], ks) if mask.any() else nan
            out[name] = {
                "n": int(mask.sum()),
                **{f"recall@{k}": metrics[f"recall@{k}"] for k in ks},
            }
    return out


def mean_over_seeds(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per bucket: n, the mean of each metric over seeds, ``<metric>_std`` and ``seeds``."""
    out: dict[str, dict[str, float]] = {}
    for bucket, first in runs[0].items():
        cell: dict[str, float] = {"n": first["n"], "seeds": len(runs)}
        for metric in first:
            if metric == "n":
                continue
            values = [r[bucket][metric] for r in runs]
            cell[metric] = statistics.fmean(values)
            cell[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out[bucket] = cell
    return out


def _fmt(cell: dict[str, float], metric: str) -> str:
    text = f"{cell[metric]:.4f}"
    return text + (f" ± {cell[f'{metric}_std']:.4f}" if cell.get("seeds", 1) > 1 else "")


def markdown_table(
    results: dict[str, dict[str, dict[str, dict[str, float]]]], ks: tuple[int, ...]
) -> str:
    """Rows = variants; columns = (model metric, bucket) for the models that were run."""
    buckets = ("all", "cold", "long tail")
    first = next(iter(results.values()))
    columns: list[tuple[str, str, str]] = []  # (model, bucket, metric)
    header = ["variant"]
    if "dlrm" in first:
        columns += [("dlrm", b, "auc") for b in buckets]
        header += [f"DLRM AUC ({b}, n={first['dlrm'][b]['n']})" for b in buckets]
    if "two_tower" in first:
        columns += [("two_tower", b, f"recall@{k}") for b in buckets for k in ks]
        header += [
            f"two-tower R@{k} ({b}, n={first['two_tower'][b]['n']})" for b in buckets for k in ks
        ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant, per_model in results.items():
        cells = [_fmt(per_model[model][b], metric) for model, b, metric in columns]
        lines.append("| " + " | ".join([variant, *cells]) + " |")
    return "\n".join(lines)


def merge_single_seed_runs(parts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Combine the result JSONs of one-seed ablation jobs (e.g. one process per seed) into
    mean +/- std over their seeds, variant by variant and model by model."""
    merged: dict[str, dict[str, Any]] = {}
    for variant, per_model in parts[0].items():
        merged[variant] = {}
        for model in per_model:
            runs = []
            for part in parts:
                cells = part.get(variant, {}).get(model)
                if cells is None or any(c.get("seeds") != 1 for c in cells.values()):
                    raise UserError(
                        f"--merge: every file needs one seed of {variant!r} / {model!r} "
                        "(run one --seeds value per job)"
                    )
                runs.append(
                    {
                        bucket: {
                            k: v for k, v in cell.items() if k != "seeds" and not k.endswith("_std")
                        }
                        for bucket, cell in cells.items()
                    }
                )
            merged[variant][model] = mean_over_seeds(runs)
    return merged


def main(argv: list[str]) -> None:
    parser = parsers.sid_ablation_parser()
    args, overrides = parser.parse_known_args(argv)
    if args.long_tail_max is None:
        args.long_tail_max = LONG_TAIL_MAX_TRAIN_COUNT
    meta = start_run_meta()
    if args.merge:
        merged = merge_single_seed_runs(read_reports(args.merge))
        table = markdown_table(merged, tuple(args.ks))
        write_report(args.out, table, merged)
        if args.results:
            print(f"wrote {write_result('results', args.results, merged, meta, markdown=table)}")
        return
    base = [
        f"--data.cold_item_fraction={args.cold_item_fraction}",
        f"--train.output_dir={args.runs_dir}",
        "--train.progress_bar=false",
        *overrides,
    ]
    results: dict[str, dict[str, Any]] = {}
    for variant, flags in VARIANTS.items():
        results[variant] = {}
        for model in dict.fromkeys(args.models):
            slug = variant.lower().replace(" + ", "_").replace(" ", "_")
            per_seed = []
            for seed in args.seeds:
                suffix = f"_s{seed}" if len(args.seeds) > 1 else ""
                cfg = api.load_config(
                    args.config,
                    [
                        *base,
                        *flags,
                        f"--model.name={model}",
                        f"--train.seed={seed}",
                        f"--name=sid_ablation_{slug}_{model}{suffix}",
                    ],
                )
                result = api.train(cfg)
                per_seed.append(
                    score_run(result.run_dir, model, args.long_tail_max, tuple(args.ks))
                )
            results[variant][model] = mean_over_seeds(per_seed)
            print(f"{variant} / {model}: {json.dumps(results[variant][model])}", flush=True)
    table = markdown_table(results, tuple(args.ks))
    write_report(args.out, table, results)
    if args.results:
        print(f"wrote {write_result('results', args.results, results, meta, markdown=table)}")

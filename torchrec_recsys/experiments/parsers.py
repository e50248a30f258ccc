"""The argument parsers of the experiment drivers, apart from the drivers.

Building one imports only ``argparse``, so ``<driver> --help`` answers without importing torch;
each driver's ``main(argv)`` parses with the same parser.
"""

from __future__ import annotations

import argparse

MODELS = ("dlrm", "two_tower")
"""The models the semantic-ID ablation trains and tabulates."""
VARIANTS: dict[str, list[str]] = {
    "SID (RQ-VAE, 3 x 64, user token)": [],
    "random codes, same shape": ["--semantic_ids.random_codes=true"],
    "levels 2": ["--semantic_ids.levels=2"],
    "levels 4": ["--semantic_ids.levels=4"],
    "codebook 32": ["--semantic_ids.codebook_size=32"],
    "codebook 128": ["--semantic_ids.codebook_size=128"],
    "codebook 256": ["--semantic_ids.codebook_size=256"],
    "residual k-means": ["--semantic_ids.method=rq_kmeans"],
    "no user token": ["--sequence.user_token=false"],
    "summed input (one position per item)": ["--sequence.generative_input=summed"],
    "codebook 256, summed input": [
        "--semantic_ids.codebook_size=256",
        "--sequence.generative_input=summed",
    ],
}
"""The generative ablation's variants: name -> the overrides that make it."""


def sid_ablation_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchrec_recsys ablation",
        description="Train DLRM and two-tower with ID / SID / ID+SID / random-code features and "
        "tabulate test metrics on all, cold and long-tail items. Extra --section.key=value "
        "flags go to every training run.",
    )
    parser.add_argument("--config", help="base experiment TOML (default: built-in defaults)")
    parser.add_argument(
        "--out", default="runs/reports/sid_ablation.md", help="markdown table path (+ .json)"
    )
    parser.add_argument(
        "--results", metavar="TOPIC", help="also write results/TOPIC_* with provenance"
    )
    parser.add_argument("--runs-dir", default="runs/ablation", help="where the runs are written")
    parser.add_argument(
        "--cold-item-fraction", type=float, default=0.1, help="share of items held out of training"
    )
    parser.add_argument(
        "--long-tail-max",
        type=int,
        default=None,
        help="most training interactions of a long-tail item (default: the evaluation's, 10)",
    )
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 100], help="Recall@k cut-offs")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="train.seed values (mean ± std)"
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=MODELS,
        default=list(MODELS),
        help="which models to train and tabulate (default: both)",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="no training: mean +/- std over one-seed result JSONs (one job per seed)",
    )
    return parser


def generative_ablation_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchrec_recsys generative-ablation",
        description="Train the generative retriever per variant and seed; tabulate mean +/- "
        "std of the test metrics. Extra --section.key=value flags go to every run.",
    )
    parser.add_argument("--config", default="configs/ml100k_generative.toml")
    parser.add_argument("--out", default="runs/reports/generative_ablation.md")
    parser.add_argument("--runs-dir", default="runs/generative_ablation")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), help="a subset (default: all)"
    )
    parser.add_argument(
        "--results", metavar="TOPIC", help="also write results/TOPIC_* with provenance"
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="no training: tabulate the result JSONs of earlier runs (e.g. one per variant)",
    )
    return parser


def ranking_report_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchrec_recsys ranking-report",
        description="Train retriever, DLRM, DCN-v2 and the pipeline DLRM per seed, evaluate the "
        "pipeline, and write the ranking and pipeline tables (mean ± std over seeds). Extra "
        "--section.key=value flags go to every training run.",
    )
    parser.add_argument("--retriever-config", required=True, help="two-tower TOML")
    parser.add_argument("--ranker-config", required=True, help="DLRM TOML (rating label)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="train.seed values")
    parser.add_argument("--runs-dir", default="runs/ranking_report", help="where runs are written")
    parser.add_argument(
        "--out", default="runs/reports/ranking_report.md", help="markdown tables (+ .json)"
    )
    parser.add_argument(
        "--results", metavar="TOPIC", help="also write results/TOPIC_* with provenance"
    )
    parser.add_argument("--candidates", type=int, default=100, help="retrieved per query")
    parser.add_argument(
        "--pipeline-flag",
        action="append",
        default=[],
        help="extra --section.key=value for the pipeline DLRM only (repeatable)",
    )
    parser.add_argument(
        "--ablate-context",
        action="store_true",
        help="also train the pipeline DLRM without context features (model.context_features "
        "= false) and add its rows (it and the tabular second stages on its pairs)",
    )
    return parser


def recipe_search_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchrec_recsys recipe-search",
        description="Train one config over a grid of settings, choose the cell with the best "
        "validation value, then train the chosen cell at --seeds. Extra --section.key=value "
        "flags go to every run.",
    )
    parser.add_argument(
        "--config", default="configs/ml100k_sasrec.toml", help="experiment TOML ('': defaults)"
    )
    parser.add_argument(
        "--grid",
        action="append",
        required=True,
        metavar="KEY=V1,V2",
        help="a setting and its candidate values (repeat for a product of several)",
    )
    parser.add_argument("--search-seed", type=int, default=0, help="train.seed of the grid runs")
    parser.add_argument(
        "--seeds", type=int, nargs="*", default=[], help="retrain the chosen cell at these seeds"
    )
    parser.add_argument("--out", default="runs/reports/recipe_search.md")
    parser.add_argument("--runs-dir", default="runs/recipe_search")
    parser.add_argument(
        "--results", metavar="TOPIC", help="also write results/TOPIC_* with provenance"
    )
    return parser


def retriever_comparison_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchrec_recsys compare-retrievers",
        description="Train several retrievers on one split at several seeds and tabulate "
        "their test Recall/NDCG on all, cold and long-tail targets beside popularity. Extra "
        "--section.key=value flags go to every run.",
    )
    parser.add_argument(
        "--run",
        action="append",
        required=True,
        metavar="'LABEL=CONFIG [--section.key=value ...]'",
        help="a retriever: its label, its config and flags of its own (repeat per retriever)",
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="train.seed values (mean ± std)"
    )
    parser.add_argument("--out", default="runs/reports/retriever_comparison.md")
    parser.add_argument(
        "--runs-dir",
        default="runs/retriever_comparison",
        help="run folders, one per label and seed (a finished one is read, not retrained)",
    )
    parser.add_argument(
        "--results", metavar="TOPIC", help="also write results/TOPIC_* with provenance"
    )
    return parser

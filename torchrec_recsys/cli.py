"""``python -m torchrec_recsys <subcommand>`` and the ``torchrec-recsys`` console script.

The outermost layer: it dispatches to the command entry points of ``app/`` and to the
drivers in ``experiments/``; nothing imports it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from collections.abc import Callable

from torchrec_recsys.data.synthetic import write_synthetic_dataset
from torchrec_recsys.errors import UserError


def _synth(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="torchrec_recsys synth",
        description="Write a synthetic dataset in the bring-your-own format.",
    )
    parser.add_argument("--out", default="data/synthetic", help="folder to write into")
    parser.add_argument("--users", type=int, default=200, help="number of users")
    parser.add_argument("--items", type=int, default=300, help="number of items")
    parser.add_argument("--per-user", type=int, default=30, help="interactions per user")
    parser.add_argument("--format", choices=("csv", "parquet"), default="csv", help="file format")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args(argv)
    paths = write_synthetic_dataset(
        args.out, args.users, args.items, args.per_user, seed=args.seed, file_format=args.format
    )
    print(f"wrote {paths.interactions}, {paths.items}, {paths.users}")


SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": (
        "torchrec_recsys.app.train:main",
        "train the configured model (DLRM by default) with sharded embeddings",
    ),
    "synth": (
        "torchrec_recsys.cli:_synth",
        "write a synthetic dataset in the bring-your-own file format",
    ),
    "sid": (
        "torchrec_recsys.app.sid:main",
        "sid build | sid report: learn semantic IDs from item text, report quality",
    ),
    "ablation": (
        "torchrec_recsys.experiments.sid_ablation:main",
        "semantic-ID ablation table: ID / SID / ID+SID / random codes",
    ),
    "ranking-report": (
        "torchrec_recsys.experiments.ranking_report:main",
        "ranking + pipeline tables over seeds: baselines, DLRM, DCN-v2, pipeline ranker",
    ),
    "export": (
        "torchrec_recsys.app.retrieval_commands:export_main",
        "embed every item with a trained two-tower and save a FAISS index",
    ),
    "recommend": (
        "torchrec_recsys.app.retrieval_commands:recommend_main",
        "retrieve with two-tower + FAISS, re-rank with the DLRM, print",
    ),
    "evaluate-pipeline": (
        "torchrec_recsys.app.retrieval_commands:evaluate_pipeline_main",
        "Recall/NDCG/MRR/coverage of retrieval vs retrieve-then-rank per ranker",
    ),
}
"""Subcommand -> ("module:function" taking argv, help). A subcommand's module is imported
only when it runs, so ``--help`` and ``synth`` do not pay for importing torchrec."""


def entry_point(name: str) -> Callable[[list[str]], object]:
    """The function behind subcommand ``name``."""
    module, function = SUBCOMMANDS[name][0].split(":")
    return getattr(importlib.import_module(module), function)


def usage() -> str:
    lines = ["usage: python -m torchrec_recsys <subcommand> [options]", "", "subcommands:"]
    lines += [f"  {name:<18} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "Run '<subcommand> --help' for its options."]
    return "\n".join(lines)


def quiet_library_noise() -> None:
    """Hide the libraries' deprecation chatter and planner warnings from users' terminals."""
    for module in ("fbgemm_gpu", "torchrec", "torch.distributed", "torch.fx"):
        warnings.filterwarnings("ignore", module=module)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in ("torchrec", "torch.fx", "torch.distributed"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand; a :class:`UserError` prints one line and exits with 2."""
    argv = sys.argv[1:] if argv is None else argv
    quiet_library_noise()
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(
            f"error: unknown subcommand {name!r}; expected one of {', '.join(SUBCOMMANDS)}",
            file=sys.stderr,
        )
        return 2
    try:
        entry_point(name)(rest)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0

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
from pathlib import Path

from torchrec_recsys.distributed.threads import THREADS_ENV, configure_threads, resolve_threads
from torchrec_recsys.errors import ConfigError, DataWarning, UserError

HELP_FLAGS = ("-h", "--help")


def _synth_parser() -> argparse.ArgumentParser:
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
    return parser


def _synth(argv: list[str]) -> None:
    from torchrec_recsys.data.synthetic import write_synthetic_dataset  # (numpy/pandas)

    args = _synth_parser().parse_args(argv)
    for flag, value in [
        ("--users", args.users),
        ("--items", args.items),
        ("--per-user", args.per_user),
    ]:
        if value < 1:
            raise UserError(f"{flag} {value} is invalid; expected at least 1")
    if args.seed < 0:
        raise UserError(f"--seed {args.seed} is invalid; expected 0 or more")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"--out {args.out!r} exists and is not a folder")
    paths = write_synthetic_dataset(
        args.out, args.users, args.items, args.per_user, seed=args.seed, file_format=args.format
    )
    print(f"wrote {paths.interactions}, {paths.items}, {paths.users}")


def _synth_criteo_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchrec_recsys synth-criteo",
        description="Write a synthetic click log in the Criteo TSV format (label, I1-I13, C1-C26).",
    )
    parser.add_argument("--out", default="data/criteo/synthetic.tsv", help="file to write")
    parser.add_argument("--rows", type=int, default=200_000, help="number of examples")
    parser.add_argument(
        "--cardinality", type=int, default=100_000, help="distinct values per categorical column"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    return parser


def _synth_criteo(argv: list[str]) -> None:
    from torchrec_recsys.data.criteo import write_synthetic_criteo  # (numpy/pandas only)

    args = _synth_criteo_parser().parse_args(argv)
    if args.rows <= 0 or args.cardinality <= 0:
        raise UserError(f"--rows ({args.rows}) and --cardinality must be positive")
    path = write_synthetic_criteo(args.out, args.rows, args.seed, args.cardinality)
    print(f"wrote {args.rows} Criteo-format lines to {path}")


SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": (
        "torchrec_recsys.app.train:main",
        "train the configured model (DLRM by default) with sharded embeddings",
    ),
    "synth": (
        "torchrec_recsys.cli:_synth",
        "write a synthetic dataset in the bring-your-own file format",
    ),
    "synth-criteo": (
        "torchrec_recsys.cli:_synth_criteo",
        "write a synthetic click log in the Criteo TSV format",
    ),
    "preprocess": (
        "torchrec_recsys.app.preprocess:main",
        "turn Criteo-format, MovieLens or files-source data into Parquet shards for streaming",
    ),
    "sid": (
        "torchrec_recsys.app.sid:main",
        "sid build | sid report: learn semantic IDs from item text, report quality",
    ),
    "ablation": (
        "torchrec_recsys.experiments.sid_ablation:main",
        "semantic-ID ablation table: ID / SID / ID+SID / random codes",
    ),
    "generative-ablation": (
        "torchrec_recsys.experiments.generative_ablation:main",
        "generative retriever ablation: SID vs random codes, levels, codebooks, method, user token",
    ),
    "ranking-report": (
        "torchrec_recsys.experiments.ranking_report:main",
        "ranking + pipeline tables over seeds: baselines, DLRM, DCN-v2, pipeline ranker",
    ),
    "compare-retrievers": (
        "torchrec_recsys.experiments.retriever_comparison:main",
        "retrievers side by side on one split: all, cold and long-tail targets, seeds",
    ),
    "recipe-search": (
        "torchrec_recsys.experiments.recipe_search:main",
        "train one config over a grid of settings, choose on validation, retrain at seeds",
    ),
    "export": (
        "torchrec_recsys.app.retrieval_commands:export_main",
        "embed every item with a trained two-tower and save a FAISS index",
    ),
    "recommend": (
        "torchrec_recsys.app.retrieval_commands:recommend_main",
        "retrieve with two-tower + FAISS, re-rank with the DLRM (or generate), print",
    ),
    "evaluate-pipeline": (
        "torchrec_recsys.app.retrieval_commands:evaluate_pipeline_main",
        "Recall/NDCG/MRR/coverage of retrieval vs retrieve-then-rank per ranker",
    ),
    "export-bundle": (
        "torchrec_recsys.app.serving_commands:export_bundle_main",
        "write a self-contained serving bundle (models, index, features, stats)",
    ),
    "registry": (
        "torchrec_recsys.app.serving_commands:registry_main",
        "registry add | promote | rollback | list | canary | shadow: serving versions",
    ),
    "serve": (
        "torchrec_recsys.app.serving_commands:serve_main",
        "serve the registry's live version over HTTP (loopback by default)",
    ),
    "drift": (
        "torchrec_recsys.app.serving_commands:drift_main",
        "compare live request features with the training statistics (PSI), plot",
    ),
    "data": (
        "torchrec_recsys.app.data_command:main",
        "data inspect: columns, separators, cardinalities, split sizes, warnings; no training",
    ),
    "config": (
        "torchrec_recsys.app.config_command:main",
        "config show: the resolved config, every key with its meaning and range",
    ),
}
"""Subcommand -> ("module:function" taking argv, help). A subcommand's module is imported
only when it runs, so ``--help`` and ``synth`` do not pay for importing torchrec."""

_APP = "torchrec_recsys.app.parsers"
_EXPERIMENTS = "torchrec_recsys.experiments.parsers"
PARSERS: dict[str, str] = {
    "train": f"{_APP}:train_parser",
    "synth": "torchrec_recsys.cli:_synth_parser",
    "synth-criteo": "torchrec_recsys.cli:_synth_criteo_parser",
    "preprocess": f"{_APP}:preprocess_parser",
    "sid": f"{_APP}:sid_parser",
    "ablation": f"{_EXPERIMENTS}:sid_ablation_parser",
    "generative-ablation": f"{_EXPERIMENTS}:generative_ablation_parser",
    "ranking-report": f"{_EXPERIMENTS}:ranking_report_parser",
    "recipe-search": f"{_EXPERIMENTS}:recipe_search_parser",
    "compare-retrievers": f"{_EXPERIMENTS}:retriever_comparison_parser",
    "export": f"{_APP}:export_parser",
    "recommend": f"{_APP}:recommend_parser",
    "evaluate-pipeline": f"{_APP}:evaluate_pipeline_parser",
    "export-bundle": f"{_APP}:export_bundle_parser",
    "registry": f"{_APP}:registry_parser",
    "serve": f"{_APP}:serve_parser",
    "drift": f"{_APP}:drift_parser",
    "data": f"{_APP}:data_parser",
    "config": f"{_APP}:config_parser",
}
"""Subcommand -> "module:function" building its argparse parser (the one its entry point parses
with) from a module that imports no torch: ``<subcommand> --help`` is answered from it."""


def entry_point(name: str) -> Callable[[list[str]], object]:
    """The function behind subcommand ``name``."""
    module, function = SUBCOMMANDS[name][0].split(":")
    return getattr(importlib.import_module(module), function)


def parser_for(name: str) -> argparse.ArgumentParser:
    """The argparse parser of subcommand ``name``, built without importing its entry point."""
    module, function = PARSERS[name].split(":")
    return getattr(importlib.import_module(module), function)()


def wants_help(argv: list[str]) -> bool:
    """Whether ``argv`` asks for help (``-h`` / ``--help`` before any ``--``)."""
    head = argv[: argv.index("--")] if "--" in argv else argv
    return any(arg in HELP_FLAGS for arg in head)


def print_help(name: str, argv: list[str]) -> int:
    """Let the subcommand's own parser answer ``argv`` (which asks for help); its exit code."""
    try:
        parser_for(name).parse_known_args(argv)
    except SystemExit as e:  # argparse exits after printing the help (0) or a usage error (2)
        return e.code if isinstance(e.code, int) else 0
    return 0


def usage() -> str:
    lines = [
        "usage: python -m torchrec_recsys [--threads N] <subcommand> [options]",
        "",
        "subcommands:",
    ]
    lines += [f"  {name:<20} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += [
        "",
        "Run '<subcommand> --help' for its options.",
        f"--threads N (or ${THREADS_ENV}, or $OMP_NUM_THREADS): CPU threads per process;",
        "default: the cores available divided by the processes on this host.",
    ]
    return "\n".join(lines)


def pop_threads_option(argv: list[str]) -> tuple[str | None, list[str]]:
    """``(value of --threads N / --threads=N, argv without it)``; it may appear anywhere.

    Raises:
        ConfigError: ``--threads`` without a value.
    """
    rest, value, i = [], None, 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--threads":
            if i + 1 >= len(argv):
                raise ConfigError("--threads needs a number of threads, e.g. --threads 1")
            value, i = argv[i + 1], i + 2
            continue
        if arg.startswith("--threads="):
            value = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return value, rest


def quiet_library_noise() -> None:
    """Hide the libraries' deprecation chatter and planner warnings from users' terminals."""
    for module in ("fbgemm_gpu", "torchrec", "torch.distributed", "torch.fx"):
        warnings.filterwarnings("ignore", module=module)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in ("torchrec", "torch.fx", "torch.distributed"):
        logging.getLogger(name).setLevel(logging.ERROR)


def show_data_warnings() -> None:
    """Print each :class:`DataWarning` as one ``warning: <message>`` line on stderr."""
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        if issubclass(category, DataWarning):
            print(f"warning: {message}", file=sys.stderr, flush=True)
        else:
            default(message, category, filename, lineno, file, line)

    if getattr(warnings.showwarning, "__name__", "") != "show":
        warnings.showwarning = show
    warnings.simplefilter("always", DataWarning)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand; a :class:`UserError` prints one line and exits with 2."""
    argv = sys.argv[1:] if argv is None else argv
    quiet_library_noise()
    show_data_warnings()
    if not argv or argv[0] in HELP_FLAGS:
        print(usage())
        return 0
    try:
        threads, argv = pop_threads_option(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not argv:
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
        resolve_threads(threads)  # (a bad --threads is refused before help, without torch)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if name in PARSERS and wants_help(rest):
        return print_help(name, rest)
    try:
        configure_threads(threads)
        entry_point(name)(rest)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0

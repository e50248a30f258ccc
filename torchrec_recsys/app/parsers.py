"""The argument parsers of every subcommand, apart from the commands themselves.

Building a parser imports nothing but ``argparse`` and the config's names, so
``python -m torchrec_recsys <subcommand> --help`` answers without importing torch, torchrec,
pandas or FAISS; each command's ``main(argv)`` parses with the same parser.
"""

from __future__ import annotations

import argparse
import os

from torchrec_recsys.config import MODELS

RUN_ID_ENV = "TORCHREC_RECSYS_RUN_ID"
"""Default of ``--run-id`` (the torchx component sets it to the job's app id)."""
RESUME_IF_ANY_ENV = "TORCHREC_RECSYS_RESUME_IF_ANY"
"""``1`` turns ``--resume-if-any`` on (the torchx component sets it when retries are on)."""
CONFIG_EPILOG = """\
Config keys: any key of the experiment config is a flag, --section.key=value or
--section.key value (the value is read as TOML: 3, 1e-3, true, [64, 32], or a plain string).
Every key with its value, meaning and allowed range:
  python -m torchrec_recsys config show [--config FILE] [--section.key=value ...]"""


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchrec_recsys train",
        description="Train the configured model; --section.key=value (or --section.key value) "
        "flags override any config key.",
        epilog=CONFIG_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        help="TOML experiment file (default: built-in defaults = configs/ml100k_dlrm.toml)",
    )
    parser.add_argument("--model", choices=MODELS, help="shorthand for --model.name=...")
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument(
        "--resume",
        action="store_true",
        help="continue the newest run of this experiment from its newest checkpoint",
    )
    resume.add_argument(
        "--resume-if-any",
        action="store_true",
        default=os.environ.get(RESUME_IF_ANY_ENV) == "1",
        help="continue from the run directory's newest checkpoint if it has one, else start "
        "afresh (without --run-dir/--run-id: the newest run with a checkpoint, else a new run); "
        f"what retried jobs use (default: on when ${RESUME_IF_ANY_ENV}=1)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--run-dir",
        help="use this run directory (default: <train.output_dir>/<name>/<UTC timestamp>)",
    )
    where.add_argument(
        "--run-id",
        default=os.environ.get(RUN_ID_ENV) or None,
        help="use the run directory <train.output_dir>/<name>/<RUN_ID>, e.g. a scheduler job id "
        f"that stays the same across retries (default: ${RUN_ID_ENV})",
    )
    parser.add_argument(
        "--profile", action="store_true", help="record torch.profiler traces into <run dir>/profile"
    )
    return parser


def two_stage_parser(
    prog: str, description: str, ranker_required: bool = True
) -> argparse.ArgumentParser:
    """A parser with the --retriever and --ranker run directories both commands take."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--retriever", required=True, help="two-tower (or, alone, generative) run directory"
    )
    parser.add_argument(
        "--ranker", required=ranker_required, help="DLRM run directory (not with a generative)"
    )
    return parser


def _sid_build_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--config", help="experiment TOML whose [data] names the items")
    parser.add_argument("--out", required=True, help="folder for the SID table")
    parser.add_argument("--method", choices=("rqvae", "rq_kmeans"), help="quantizer")
    parser.add_argument("--levels", type=int, help="code levels")
    parser.add_argument("--codebook-size", type=int, help="codes per level")
    parser.add_argument("--epochs", type=int, help="RQ-VAE epochs")
    parser.add_argument("--max-steps", type=int, help="RQ-VAE: stop after this many steps")
    parser.add_argument("--max-seconds", type=float, help="RQ-VAE: stop after this many seconds")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing table in --out"
    )
    return parser


def _sid_report_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--table", required=True, help="folder written by 'sid build'")
    return parser


SID_BUILD = "Encode item text, learn semantic IDs, save the table and its quality report."
SID_REPORT = "Print the quality report of a SID table."
CONFIG_EPILOG_SHORT = " Other --section.key=value flags override the config."


def sid_parser() -> argparse.ArgumentParser:
    """``sid build ...`` | ``sid report ...``."""
    parser = argparse.ArgumentParser(
        prog="torchrec_recsys sid",
        description="Learn semantic IDs from item text (build) or print a table's report.",
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="{build,report}")
    _sid_build_arguments(
        sub.add_parser("build", help=SID_BUILD, description=SID_BUILD + CONFIG_EPILOG_SHORT)
    )
    _sid_report_arguments(sub.add_parser("report", help=SID_REPORT, description=SID_REPORT))
    return parser


def config_parser() -> argparse.ArgumentParser:
    """``config show [--config FILE] [--section.key=value ...]``."""
    parser = argparse.ArgumentParser(
        prog="torchrec_recsys config",
        description="Inspect the experiment config.",
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="{show}")
    show = sub.add_parser(
        "show",
        help="print the resolved config: every key with its value, meaning and range",
        description="Print the resolved config (defaults < --config file < --section.key=value "
        "overrides): every key with its value, its meaning and its allowed range.",
    )
    show.add_argument("--config", help="TOML experiment file (default: built-in defaults)")
    return parser


def data_parser() -> argparse.ArgumentParser:
    """``data inspect [--config FILE] [--json] [--section.key=value ...]``."""
    parser = argparse.ArgumentParser(
        prog="torchrec_recsys data",
        description="Look at the configured data without training.",
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="{inspect}")
    inspect = sub.add_parser(
        "inspect",
        help="columns, separators, feature cardinalities, split sizes and warnings",
        description="Read and encode the configured data as a run would and print its columns, "
        "the separators found in categorical columns, the feature cardinalities, the split "
        "sizes and any warnings; trains nothing." + CONFIG_EPILOG_SHORT,
    )
    inspect.add_argument("--config", help="TOML experiment file (default: built-in defaults)")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def preprocess_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchrec_recsys preprocess",
        description="Turn the configured data (a Criteo-format TSV, MovieLens, the files "
        "source) into Parquet shards of encoded examples + manifest.",
    )
    parser.add_argument(
        "--config",
        help="experiment TOML; data.source = 'criteo', 'movielens-100k', 'book-crossing' or "
        "'files'",
    )
    parser.add_argument("--out", required=True, help="folder for the shards and manifest.json")
    parser.add_argument("--rows-per-shard", type=int, default=1_000_000, help="rows per shard")
    parser.add_argument(
        "--synthetic-rows", type=int, default=0, help="write this many synthetic rows instead"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic rows")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing, non-empty --out folder"
    )
    return parser


def export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchrec_recsys export",
        description="Embed every catalogue item with a trained two-tower and save a FAISS index.",
    )
    parser.add_argument("--run-dir", required=True, help="two-tower run directory")
    parser.add_argument("--out", help="index folder (default: <run dir>/index_<kind>)")
    parser.add_argument(
        "--kind", choices=("flat", "ivf", "hnsw"), default="flat", help="index type"
    )
    parser.add_argument("--nlist", type=int, default=64, help="IVF lists")
    parser.add_argument("--nprobe", type=int, default=16, help="IVF lists probed per query")
    parser.add_argument("--hnsw-m", type=int, default=32, help="HNSW neighbours per node")
    parser.add_argument("--ef-search", type=int, default=128, help="HNSW search breadth")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing index folder")
    return parser


def recommend_parser() -> argparse.ArgumentParser:
    parser = two_stage_parser(
        "torchrec_recsys recommend",
        "Retrieve candidates with the two-tower + FAISS index, re-rank with the DLRM; or, "
        "with a generative --retriever alone, generate items by constrained beam search.",
        ranker_required=False,
    )
    parser.add_argument("--index", help="index folder (default: <retriever>/index_flat)")
    parser.add_argument(
        "--user", required=True, help="raw user id (unknown ids get a cold-start query)"
    )
    parser.add_argument(
        "--history", default="", help="comma-separated raw item ids to use as history"
    )
    parser.add_argument("-k", type=int, default=10, help="items to print")
    parser.add_argument(
        "--candidates", type=int, default=100, help="items retrieved before re-ranking"
    )
    parser.add_argument("--beam", type=int, help="generative: beam width (default: the run's)")
    return parser


def evaluate_pipeline_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchrec_recsys evaluate-pipeline",
        description="Recall/NDCG/HR/MAP@k, MRR and coverage of retrieval alone vs. retrieval "
        "re-ranked by each --ranker (and by logistic regression and LightGBM fitted on the "
        "first pipeline-objective ranker's training pairs).",
    )
    parser.add_argument("--retriever", required=True, help="two-tower run directory")
    parser.add_argument(
        "--ranker",
        action="append",
        required=True,
        help="DLRM run directory (repeat for several; rating or pipeline objective)",
    )
    parser.add_argument("--split", choices=("val", "test"), default="test", help="split to score")
    parser.add_argument("--candidates", type=int, default=100, help="items retrieved per query")
    parser.add_argument("-k", type=int, default=10, help="cut-off of the final list")
    parser.add_argument(
        "--no-tabular",
        action="store_true",
        help="skip the logistic-regression and LightGBM second stages",
    )
    parser.add_argument("--out", help="write the metrics as JSON here too")
    return parser


def export_bundle_parser() -> argparse.ArgumentParser:
    parser = two_stage_parser(
        "torchrec_recsys export-bundle",
        "Write a self-contained serving bundle from a two-tower run and a DLRM run.",
    )
    parser.add_argument("--out", required=True, help="bundle folder to create")
    parser.add_argument(
        "--quantize", choices=("fp32", "int8"), default="fp32", help="embedding table precision"
    )
    parser.add_argument(
        "--kind", choices=("flat", "ivf", "hnsw"), default="flat", help="FAISS index type"
    )
    parser.add_argument("--nlist", type=int, default=256, help="IVF lists")
    parser.add_argument("--nprobe", type=int, default=16, help="IVF lists probed per query")
    parser.add_argument("--hnsw-m", type=int, default=32, help="HNSW neighbours per node")
    parser.add_argument("--ef-search", type=int, default=128, help="HNSW search breadth")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    return parser


def registry_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchrec_recsys registry",
        description="Manage serving versions: add a bundle, promote, roll back, canary, shadow.",
    )
    parser.add_argument("--root", required=True, help="registry folder")
    sub = parser.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="verify a bundle and add it as a new version")
    add.add_argument("bundle", help="bundle folder (export-bundle --out)")
    add.add_argument("--name", help="version name (default v<N+1>)")
    promote = sub.add_parser("promote", help="make a version live")
    promote.add_argument("version")
    sub.add_parser("rollback", help="make the previously live version live again")
    sub.add_parser("list", help="versions and their roles")
    canary = sub.add_parser("canary", help="send a share of users to a version")
    canary.add_argument("version", nargs="?", help="version (omit with --off)")
    canary.add_argument("--share", type=float, default=0.1, help="share of users, (0, 1]")
    canary.add_argument("--off", action="store_true", help="stop the canary")
    shadow = sub.add_parser("shadow", help="mirror every request to a version")
    shadow.add_argument("version", nargs="?", help="version (omit with --off)")
    shadow.add_argument("--off", action="store_true", help="stop shadowing")
    return parser


def serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchrec_recsys serve",
        description="Serve the registry's live version over HTTP: POST /recommend, "
        "GET /healthz, GET /metrics, GET /drift.",
    )
    parser.add_argument("--registry", required=True, help="registry folder")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (loopback default)")
    parser.add_argument("--port", type=int, default=8080, help="TCP port")
    parser.add_argument(
        "--allow-remote", action="store_true", help="allow binding a non-loopback address"
    )
    parser.add_argument("--max-k", type=int, default=100, help="largest k a request may ask")
    parser.add_argument("--candidates", type=int, default=100, help="items retrieved to rank")
    parser.add_argument(
        "--max-concurrency", type=int, default=8, help="requests in flight before 503"
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="requests computed at once (about the cores)"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="server processes on one port, each with the live version (GIL: one process "
        "computes about one request at a time)",
    )
    parser.add_argument("--poll-seconds", type=float, default=0.5, help="registry poll period")
    parser.add_argument("--log-dir", help="impression/shadow logs (default <registry>/logs)")
    parser.add_argument(
        "--drift-window-seconds", type=float, default=300.0, help="drift statistics window"
    )
    parser.add_argument("--psi-threshold", type=float, default=0.2, help="PSI drift flag")
    parser.add_argument(
        "--drift-min-requests", type=int, default=50, help="requests before drift is flagged"
    )
    parser.add_argument("--torch-threads", type=int, default=1, help="intra-op threads")
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=None,
        help="largest request body; larger ones get 413 before they are read "
        "(default: serving.http_guard.DEFAULT_MAX_BODY_BYTES, 64 KiB)",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        help="another Host name POST requests may carry (besides loopback and --host); repeatable",
    )
    return parser


def drift_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchrec_recsys drift",
        description="Drift of live request features vs. the live bundle's training statistics.",
    )
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="service base URL")
    parser.add_argument("--plot", help="write a PNG of the worst features here")
    parser.add_argument("--json", help="write the report as JSON here")
    return parser

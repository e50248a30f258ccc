"""``python -m torchrec_recsys sid build|report``: learn, save and inspect a SID table."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from torchrec_recsys.app import parsers
from torchrec_recsys.app.builders import build_raw_data
from torchrec_recsys.app.results import SemanticIdBuild
from torchrec_recsys.config import ExperimentConfig, load_config
from torchrec_recsys.data.dataset import item_texts
from torchrec_recsys.errors import UserError
from torchrec_recsys.files import check_output_folder
from torchrec_recsys.semantic_ids.features import learn_sid_table
from torchrec_recsys.semantic_ids.report import write_report
from torchrec_recsys.semantic_ids.store import load_sid_table, save_sid_table


def build(args: argparse.Namespace, overrides: list[str]) -> None:
    """``sid build``: learn a SID table from the configured items' text and report on it."""
    flags = {
        "method": args.method,
        "levels": args.levels,
        "codebook_size": args.codebook_size,
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "max_seconds": args.max_seconds,
    }  # given flags become overrides, so validate_config checks them like any setting
    overrides += [f"--semantic_ids.{k}={v}" for k, v in flags.items() if v is not None]
    cfg = load_config(args.config, overrides)
    build = build_semantic_ids(cfg, args.out, overwrite=args.overwrite)
    print(f"semantic IDs for {build.num_items} items in {build.seconds:.1f} s -> {args.out}")
    print(_format(build.report))
    print(f"report: {build.report_json}, plot: {build.report_plot}")


def build_semantic_ids(
    cfg: ExperimentConfig, out: str | Path, overwrite: bool = False
) -> SemanticIdBuild:
    """Encode the items' text of ``cfg``'s data, learn their semantic IDs with
    ``cfg.semantic_ids`` and save the table and its quality report (JSON + plot) in ``out``.

    Raises:
        UserError: the data cannot be read, or ``out`` is a non-empty folder and
            ``overwrite`` is False (checked before any work).
    """
    check_output_folder(out, overwrite)
    raw = build_raw_data(cfg)
    texts = item_texts(raw.items, cfg.data.item_text_columns)
    genres = list(raw.items["genres"]) if "genres" in raw.items.columns else None
    start = time.perf_counter()
    result = learn_sid_table(list(raw.items["item_id"]), texts, genres, cfg.semantic_ids)
    seconds = time.perf_counter() - start
    save_sid_table(out, result.table)
    paths = write_report(result.report, out)
    return SemanticIdBuild(
        table_dir=Path(out),
        num_items=len(texts),
        seconds=seconds,
        report=result.report.to_dict(),
        report_json=paths["json"],
        report_plot=paths["png"],
    )


def report(args: argparse.Namespace) -> None:
    """``sid report``: print the quality report saved beside a SID table."""
    load_sid_table(args.table)  # validates the folder
    path = Path(args.table) / "sid_report.json"
    if not path.is_file():
        raise UserError(f"SID table {args.table!r} has no sid_report.json")
    print(_format(json.loads(path.read_text())))


def _format(report: dict) -> str:  # type: ignore[type-arg]
    lines = [
        f"method {report['method']}, {report['num_items']} items, "
        f"codebooks {report['codebook_sizes']}",
        f"reconstruction cosine {report['reconstruction_cosine']:.3f}",
        "utilisation per level " + ", ".join(f"{u:.2f}" for u in report["utilisation"]),
        "perplexity per level " + ", ".join(f"{p:.1f}" for p in report["perplexity"]),
        f"collision rate before the extra level {report['collision_rate']:.3f}",
        f"items with missing text (encoded as 'item <id>'): {report['fallback_texts']}",
    ]
    if report.get("coherence"):
        lines.append("coherence: " + json.dumps(report["coherence"]))
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    """``sid build ...`` or ``sid report ...``."""
    parser = parsers.sid_parser()
    args, overrides = parser.parse_known_args(argv)
    if args.action == "report":
        if overrides:
            parser.error(f"unrecognized arguments: {' '.join(overrides)}")
        report(args)
    else:
        build(args, overrides)

"""Retriever comparison: several retrievers, one split, several seeds, all / cold / long-tail.

Each ``--run "LABEL=CONFIG [--section.key=value ...]"`` names a model (e.g. the generative
retriever, SASRec, the two-tower) and the flags it alone gets; the extra flags after the
driver's own go to every run (e.g. ``--data.cold_item_fraction=0.1``). Every run must score
the same test interactions (same data source, subset and split, checked before training).
Each label is trained at every ``--seeds`` value and its test metrics are tabulated as
mean +/- sample std over the seeds::

    test targets:  all | cold (no training interactions) | long tail (1..10 training rows)
    metrics:       Recall@10, NDCG@10 (all) and Recall@10 on the cold and long-tail targets

with the popularity baseline (deterministic: no spread) in the same metrics, and
``train s`` per run. A run folder that already holds a finished run (``summary.json``) is
read, not retrained, so an interrupted comparison continues where it stopped; the JSON and
table are rewritten after every run::

    python -m torchrec_recsys compare-retrievers \\
        --run "generative=configs/ml100k_generative.toml" \\
        --run "SASRec=configs/ml100k_sasrec.toml" \\
        --run "two-tower=configs/ml100k_two_tower.toml" \\
        --seeds 0 1 2 --data.cold_item_fraction=0.1 --results retriever_comparison_ml100k
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path
from typing import Any

from torchrec_recsys import api
from torchrec_recsys.config import DATA_SELECTION_FIELDS, DATA_SPLIT_FIELDS, DataConfig
from torchrec_recsys.errors import UserError
from torchrec_recsys.experiments import parsers
from torchrec_recsys.experiments.outputs import write_report
from torchrec_recsys.metrics.spread import mean_spread
from torchrec_recsys.observability.provenance import start_run_meta, write_result

SPLIT_FIELDS = DATA_SELECTION_FIELDS + DATA_SPLIT_FIELDS
"""The ``[data]`` settings that decide which interactions a run is scored on."""
COLUMNS = (  # (metric key, column title, count key of its targets)
    ("recall@10", "R@10 all", "examples"),
    ("ndcg@10", "NDCG@10 all", "examples"),
    ("cold_recall@10", "R@10 cold", "cold_targets"),
    ("tail_recall@10", "R@10 long tail", "tail_targets"),
)
POPULARITY = "popularity"


def parse_run(flag: str) -> tuple[str, str, list[str]]:
    """``"SASRec=configs/x.toml --a.b=1"`` -> ``("SASRec", "configs/x.toml", ["--a.b=1"])``.

    Raises:
        UserError: no ``=``, an empty label or config, or a flag not of the ``--key=value`` form.
    """
    label, sep, rest = flag.partition("=")
    words = shlex.split(rest)
    if not sep or not label.strip() or not words:
        raise UserError(f"--run {flag!r} is invalid; expected 'LABEL=CONFIG [--section.key=value]'")
    bad = first_non_flag(words[1:])
    if bad is not None:
        raise UserError(f"--run {flag!r}: {bad!r} is not a --section.key=value flag")
    return label.strip(), words[0], words[1:]


def first_non_flag(words: list[str]) -> str | None:
    """The first of ``words`` not of the ``--section.key=value`` form, or None."""
    return next((w for w in words if not (w.startswith("--") and "=" in w)), None)


def split_of(data: DataConfig) -> dict[str, Any]:
    """The settings of ``data`` that decide the scored interactions (:data:`SPLIT_FIELDS`)."""
    return {name: getattr(data, name) for name in SPLIT_FIELDS}


def check_same_split(configs: dict[str, api.ExperimentConfig]) -> None:
    """Fail unless every run scores the same test interactions.

    Raises:
        UserError: naming the first two labels whose data settings differ, and the setting.
    """
    (first, base), *rest = configs.items()
    for label, cfg in rest:
        for name, value in split_of(cfg.data).items():
            if value != getattr(base.data, name):
                raise UserError(
                    f"--run {label!r} has data.{name} = {value!r} but {first!r} has "
                    f"{getattr(base.data, name)!r}: the runs compared must share one split"
                )


def slug(label: str) -> str:
    """A folder-safe form of a label (``"two-tower, random"`` -> ``"two_tower_random"``)."""
    return "_".join("".join(c if c.isalnum() else " " for c in label.lower()).split())


def run_record(result: api.RunResult, seed: int) -> dict[str, Any]:
    """What the table reads of one run: its test metrics, sizes, selection and time."""
    summary = result.summary
    return {
        "seed": seed,
        "run_dir": str(result.run_dir),
        "test": result.metrics,
        "examples": summary.get("dataset", {}).get("test"),
        "selected_epoch": (result.selected_epoch or {}).get("epoch"),
        "epochs_run": len(result.epochs),
        "global_step": result.global_step,
        "wall_time_seconds": result.wall_time_seconds,
        "popularity": result.baselines.get(POPULARITY),
    }


def train_or_read(cfg: api.ExperimentConfig, run_dir: Path) -> api.RunResult:
    """The finished run in ``run_dir`` if there is one, else a fresh run trained there."""
    summary = run_dir / "summary.json"
    if summary.is_file():
        print(f"reading the finished run {run_dir}", flush=True)
        return api.RunResult.from_summary(json.loads(summary.read_text()), where=str(summary))
    return api.train(cfg, run_dir=run_dir)


def popularity_row(results: dict[str, list[dict[str, Any]]]) -> dict[str, float] | None:
    """The popularity baseline of the first run that reports it in the ranked-list metrics
    (the sequence models' summaries; it does not depend on the seed)."""
    for runs in results.values():
        for run in runs:
            popularity = run.get("popularity") or {}
            if "tail_recall@10" in popularity:
                return popularity
    return None


def markdown_table(results: dict[str, list[dict[str, Any]]]) -> str:
    """Rows = labels (+ popularity); cells = mean +/- std over seeds of each test metric,
    with each target group's size in its header."""
    first = next(run for runs in results.values() for run in runs)
    sizes = {
        "examples": first["examples"],
        **{k: first["test"].get(k) for k in ("cold_targets", "tail_targets")},
    }
    header = ["retriever", "seeds"]
    for _, title, count in COLUMNS:
        n = sizes.get(count)
        header.append(f"{title} (n={int(n)})" if n is not None else title)
    header += ["steps", "train s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, runs in results.items():
        cells = [label, str(len(runs))]
        cells += [
            mean_spread([r["test"].get(m, float("nan")) for r in runs]) for m, _, _ in COLUMNS
        ]
        cells.append(mean_spread([float(r["global_step"]) for r in runs], digits=0))
        cells.append(mean_spread([r["wall_time_seconds"] for r in runs], digits=0))
        lines.append("| " + " | ".join(cells) + " |")
    popularity = popularity_row(results)
    if popularity is not None:
        cells = [
            POPULARITY,
            "-",
            *[f"{popularity.get(m, float('nan')):.4f}" for m, _, _ in COLUMNS],
        ]
        lines.append("| " + " | ".join([*cells, "-", "-"]) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = parsers.retriever_comparison_parser()
    args, overrides = parser.parse_known_args(argv)
    bad = first_non_flag(overrides)
    if bad is not None:
        raise UserError(f"{bad!r} is not a --section.key=value override")
    runs = [parse_run(flag) for flag in args.run]
    labels = [label for label, _, _ in runs]
    if len(set(labels)) != len(labels):
        raise UserError(f"--run labels must differ; got {labels}")
    meta = start_run_meta()
    configs = {  # checked (the whole config, and the shared split) before any training
        label: api.load_config(
            path or None,  # '': the built-in defaults
            [*overrides, *flags, "--train.progress_bar=false", f"--name=compare_{slug(label)}"],
        )
        for label, path, flags in runs
    }
    check_same_split(configs)
    results: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    record = {
        "runs": {label: [path, *flags] for label, path, flags in runs},
        "overrides": overrides,
    }
    for label, cfg in configs.items():
        for seed in args.seeds:
            seeded = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))
            run_dir = Path(args.runs_dir) / f"{slug(label)}_s{seed}"
            results[label].append(run_record(train_or_read(seeded, run_dir), seed))
            table = markdown_table(results)
            write_report(args.out, table, {**record, "results": results})
    if args.results:
        path = write_result(
            "results", args.results, {**record, "results": results}, meta, markdown=table
        )
        print(f"wrote {path}")

"""Recipe search: train one config over a grid of settings, choose on validation only.

Every cell of the grid (the product of ``--grid key=v1,v2,...`` flags, e.g. dropout x weight
decay) is trained once at ``--search-seed`` with the config's best-epoch selection and
patience; the cell with the best validation value of the run's selection metric (the
selected epoch's, from ``best/selection.json``) is chosen. Test metrics are recorded for
every cell but never read for the choice. With ``--seeds``, the chosen cell is then trained
at those seeds (its search run stands for the search seed) and reported as mean +/- sample
std of its test metrics::

    python -m torchrec_recsys recipe-search --config configs/ml100k_sasrec.toml \\
        --grid sequence.dropout=0.2,0.5 --grid optimizer.weight_decay=0.0,0.1 \\
        --seeds 0 1 2 --results sasrec_recipe

Writes a markdown table (``--out``, the JSON beside it) and, with ``--results TOPIC``,
``results/TOPIC_<hardware>_<date>.{json,md}`` with the provenance block.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from torchrec_recsys import api
from torchrec_recsys.errors import UserError
from torchrec_recsys.experiments import parsers
from torchrec_recsys.experiments.outputs import write_report
from torchrec_recsys.metrics.spread import mean_spread
from torchrec_recsys.observability.provenance import start_run_meta, write_result

REPORTED = ("recall@10", "ndcg@10", "mrr", "coverage@10", "cold_recall@10")


def parse_grid(flags: list[str]) -> dict[str, list[str]]:
    """``["a.b=1,2", "c.d=x"]`` -> ``{"a.b": ["1", "2"], "c.d": ["x"]}``.

    Raises:
        UserError: a flag without ``=``, an empty value list, or a key given twice.
    """
    grid: dict[str, list[str]] = {}
    for flag in flags:
        key, sep, values = flag.partition("=")
        items = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key.strip() or not items:
            raise UserError(f"--grid {flag!r} is invalid; expected section.key=value1,value2")
        if key in grid:
            raise UserError(f"--grid key {key!r} is given twice; expected each key once")
        grid[key.strip()] = items
    return grid


def cells(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every combination of the grid's values, in the order the flags gave them."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


def cell_name(cell: dict[str, str]) -> str:
    """``{"sequence.dropout": "0.2"}`` -> ``"sequence.dropout=0.2"`` (keys joined by ", ")."""
    return ", ".join(f"{k}={v}" for k, v in cell.items())


def choose(results: list[dict[str, Any]], lower_is_better: bool) -> int:
    """Index of the cell with the best validation value (the first on ties)."""
    values = [r["validation"] for r in results]
    best = min(values) if lower_is_better else max(values)
    return values.index(best)


def _train(args: Any, overrides: list[str], cell: dict[str, str], seed: int, tag: str) -> dict:
    cfg = api.load_config(
        args.config or None,  # empty: the built-in defaults
        [  # the driver's own settings last: they win over the extra flags
            *overrides,
            f"--train.output_dir={args.runs_dir}",
            "--train.progress_bar=false",
            f"--train.seed={seed}",
            f"--name=recipe_{tag}_s{seed}",
            *[f"--{k}={v}" for k, v in cell.items()],
        ],
    )
    result = api.train(cfg)
    summary = json.loads((Path(result.run_dir) / "summary.json").read_text())
    selection = summary.get("selected_epoch")
    if not selection:
        raise UserError(
            f"run {str(result.run_dir)!r} selected no epoch on validation; the recipe search "
            "needs a validation split and train.select_metric"
        )
    return {
        "seed": seed,
        "run_dir": str(result.run_dir),
        "metric": selection["metric"],
        "validation": selection["value"],
        "selected_epoch": selection["epoch"],
        "epochs_run": len(summary["epochs"]),
        "test": result.metrics,
        "wall_time_seconds": result.wall_time_seconds,
    }


def markdown_table(search: list[dict[str, Any]], chosen: int, final: list[dict]) -> str:
    """The grid (validation value, selected epoch, test metrics) and the chosen cell's seeds."""
    metric = search[0]["metric"]
    header = ["cell", f"val {metric}", "epoch (of run)", *[f"test {m}" for m in REPORTED]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, r in enumerate(search):
        mark = " (chosen)" if i == chosen else ""
        row = [r["cell"] + mark, f"{r['validation']:.4f}"]
        row.append(f"{r['selected_epoch'] + 1} of {r['epochs_run']}")
        row += [f"{r['test'].get(m, float('nan')):.4f}" for m in REPORTED]
        lines.append("| " + " | ".join(row) + " |")
    if final:
        seeds = ",".join(str(r["seed"]) for r in final)
        lines += ["", f"Chosen cell, seeds {seeds}: mean ± sample std of the test metrics", ""]
        lines += ["| " + " | ".join(REPORTED) + " |", "|" + "---|" * len(REPORTED)]
        cells_ = [mean_spread([r["test"].get(m, float("nan")) for r in final]) for m in REPORTED]
        lines.append("| " + " | ".join(cells_) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = parsers.recipe_search_parser()
    args, overrides = parser.parse_known_args(argv)
    grid = parse_grid(args.grid)
    bad = [o for o in overrides if not o.startswith("--")]
    if bad:
        raise UserError(f"{bad[0]!r} is not a --section.key=value override")
    meta = start_run_meta()
    grid_cells = cells(grid)
    search = []
    for i, cell in enumerate(grid_cells):
        run = _train(args, overrides, cell, args.search_seed, f"cell{i}")
        search.append({"cell": cell_name(cell), "settings": cell, **run})
        print(f"{cell_name(cell)}: val {run['metric']} {run['validation']:.4f}", flush=True)
    lower = search[0]["metric"] in ("loss", "ne")
    chosen = choose(search, lower)
    final = [  # the search run is one of the seeds when its seed is asked for
        search[chosen]
        if seed == args.search_seed
        else _train(args, overrides, grid_cells[chosen], seed, f"chosen{chosen}")
        for seed in args.seeds
    ]
    table = markdown_table(search, chosen, final)
    results = {
        "config": args.config,
        "overrides": overrides,
        "grid": grid,
        "search_seed": args.search_seed,
        "chosen": search[chosen]["cell"],
        "search": search,
        "final": final,
    }
    write_report(args.out, table, results)
    if args.results:
        print(f"wrote {write_result('results', args.results, results, meta, markdown=table)}")

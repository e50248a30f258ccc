"""``python -m torchrec_recsys data inspect``: the configured data as a run would see it.

Reads and encodes the data exactly as training does (the same readers, column defaults,
split and vocabularies; semantic-ID features are not learned) and reports what it found,
so a bring-your-own dataset's problems show up before any training.
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import pandas as pd

from torchrec_recsys.app import builders, parsers
from torchrec_recsys.app.results import DataReport
from torchrec_recsys.config import ExperimentConfig, load_config
from torchrec_recsys.data.dataset import SEPARATOR_CANDIDATES, ItemTokens, build_dataset
from torchrec_recsys.data.shards import ShardSource
from torchrec_recsys.errors import DataWarning, UserError

INSPECT_SEPARATORS = (*SEPARATOR_CANDIDATES, " ")
"""Separators looked for in categorical cells (the space too: genres like "Action Comedy")."""


def separator_report(values: pd.Series, configured: str) -> dict[str, object]:
    """How ``configured`` splits the column's non-empty cells, and which separators appear in
    most of them."""
    cells = [str(v) for v in values.fillna("") if str(v)]
    if not cells:
        return {"configured": configured, "found": [], "multi_valued_cells": 0.0}
    found = [s for s in INSPECT_SEPARATORS if sum(s in c for c in cells) * 2 > len(cells)]
    split = sum(len([t for t in c.split(configured) if t]) > 1 for c in cells) / len(cells)
    return {"configured": configured, "found": found, "multi_valued_cells": split}


def inspect_data(cfg: ExperimentConfig) -> DataReport:
    """Read, encode and split ``cfg``'s data as a run would; the report of what was found.

    Raises:
        UserError: the data cannot be read or encoded (a missing file or column, bad rows).
    """
    problems: list[str] = []
    columns: dict[str, list[str]] = {}
    separators: dict[str, dict[str, object]] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        stream = None
        if cfg.data.source == "shards":  # streamed: the manifest holds the split sizes
            stream = ShardSource(cfg.data.shards_dir, cfg.features.embedding_dim)
            data = stream.dataset()
            item_columns: list[str] = []
            splits = {name: stream.rows(name) for name in ("train", "val", "test")}
            counts = {"examples": sum(splits.values())}
        elif cfg.data.source == "criteo":
            data = builders.build_data(cfg)
            item_columns = []
            counts = {"examples": sum(len(t) for t in data.splits.values())}
        else:
            raw = builders.build_raw_data(cfg)
            d = builders.resolve_data_config(cfg, raw)
            data = build_dataset(raw, d, cfg.features, ItemTokens(history=False))
            item_columns = list(d.item_categorical_columns)
            columns = {
                "interactions": [str(c) for c in raw.interactions.columns],
                "items": [str(c) for c in raw.items.columns],
                "users": [str(c) for c in raw.users.columns],
            }
            sep = d.multi_value_separator
            for col in item_columns:
                separators[f"items.{col}"] = separator_report(raw.items[col], sep)
            for col in d.user_categorical_columns:
                if col in raw.users.columns:
                    separators[f"users.{col}"] = separator_report(raw.users[col], sep)
            counts = {
                "interactions": len(raw.interactions),
                "users": int(raw.interactions["user_id"].nunique()),
                "items": len(raw.items),
                **raw.report,
            }
            if cfg.semantic_ids.enabled:
                problems.append(
                    "semantic_ids.enabled: the SID features are learned at training start-up; "
                    "inspect leaves them out"
                )
        try:
            builders.check_data(cfg, data, world_size=1, stream=stream)
        except UserError as e:
            problems.append(f"error: {e}")
    said = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    return DataReport(
        source=cfg.data.source,
        name=data.name,
        columns=columns,
        item_categorical_columns=item_columns,
        separators=separators,
        cardinalities={f.name: f.num_embeddings for f in data.spec.sparse_features()},
        dense_features=list(data.spec.dense_names()),
        splits=splits if stream is not None else {n: len(t) for n, t in data.splits.items()},
        counts=counts,
        warnings=[*said, *problems],
    )


def main(argv: list[str]) -> None:
    """``data inspect [--config FILE] [--json] [--section.key=value ...]``."""
    args, overrides = parsers.data_parser().parse_known_args(argv)
    report = inspect_data(load_config(args.config, overrides))
    if args.json:
        print(json.dumps(dataclasses.asdict(report), indent=2))
    else:
        print(report.render())

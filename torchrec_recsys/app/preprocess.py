"""``python -m torchrec_recsys preprocess``: raw data -> Parquet shards of encoded examples, once.

    python -m torchrec_recsys preprocess --config configs/criteo_synthetic_dlrm.toml \\
        --out data/criteo/shards [--rows-per-shard 1000000]
    python -m torchrec_recsys preprocess --synthetic-rows 10000000 --out data/criteo/synth10m
    python -m torchrec_recsys preprocess --config configs/ml100k_dlrm.toml --out data/ml100k/shards

The first form streams a Criteo-format TSV (memory ~ one chunk); the second writes synthetic
Criteo examples straight into shards, without a TSV in between, for scale tests. Either way
the last rows become the validation and test shards (``data.criteo.val_fraction`` /
``test_fraction``). The third form (``data.source`` = ``movielens-100k``, ``book-crossing``
or ``files``) encodes the dataset in memory as ``train`` would (``build_data``: vocabularies,
splits, the FeatureSpec), then writes its splits with list columns for the jagged features
(``data.shards.preprocess_examples``; the training examples in the in-memory path's
first-epoch order for ``train.seed``). ``train`` streams any of them with
``data.source = "shards"`` and ``data.shards_dir`` (``data.shards``, bounded memory).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from torchrec_recsys.app import parsers
from torchrec_recsys.app.builders import build_data
from torchrec_recsys.config import ExperimentConfig, load_config
from torchrec_recsys.data.criteo import (
    criteo_spec,
    encode_dense,
    hash_rows,
    hashing_table_rows,
    split_sizes,
    synthetic_criteo_blocks,
)
from torchrec_recsys.data.shards import (
    HASHING_SCHEME,
    criteo_table,
    preprocess_criteo,
    preprocess_examples,
    vocab_hash,
    write_shards,
)
from torchrec_recsys.errors import UserError
from torchrec_recsys.files import atomic_directory, check_output_folder
from torchrec_recsys.observability.progress import Progress


def main(argv: list[str]) -> None:
    parser = parsers.preprocess_parser()
    args, overrides = parser.parse_known_args(argv)
    if args.rows_per_shard <= 0 or args.synthetic_rows < 0:
        raise UserError("--rows-per-shard must be positive and --synthetic-rows >= 0")
    check_output_folder(args.out, args.overwrite)
    cfg = load_config(args.config, overrides)
    start = time.perf_counter()
    if cfg.data.source == "shards" and not args.synthetic_rows:
        raise UserError(
            "the config reads shards already (data.source = 'shards'); preprocess needs the "
            "raw data's config (data.source = 'criteo', 'movielens-100k', 'book-crossing' or "
            "'files')"
        )
    # staged next to --out and renamed into place when complete: a failed run leaves the old
    # folder (or none), never a mix of old and new shards
    with atomic_directory(args.out) as staging:
        manifest = _write(args, cfg, staging)
    counts = ", ".join(
        f"{split} {entry['rows']} in {len(entry['shards'])} shard(s)"
        for split, entry in manifest["splits"].items()
    )
    print(
        f"wrote {manifest['total_rows']} examples ({counts}) to {args.out} in "
        f"{time.perf_counter() - start:.1f} s (vocab hash {manifest['vocab_hash']})"
    )


def _write(args: argparse.Namespace, cfg: ExperimentConfig, out: Path) -> dict[str, Any]:
    """Write the shards of ``args``/``cfg`` into the folder ``out``; returns the manifest."""
    settings = cfg.data.criteo
    if args.synthetic_rows:
        table_rows = hashing_table_rows(settings)
        bar = Progress(total=args.synthetic_rows, desc="preprocess (synthetic)", units="rows")

        def tables():  # noqa: ANN202
            for labels, ints, raw in synthetic_criteo_blocks(args.synthetic_rows, args.seed):
                bar.update(len(labels))
                yield criteo_table(labels, encode_dense(ints), hash_rows(raw, table_rows))

        manifest = write_shards(
            tables(),
            out,
            criteo_spec(table_rows, embedding_dim=1),  # the dimension is not stored
            vocab_hash(table_rows, HASHING_SCHEME),
            args.rows_per_shard,
            split_sizes(args.synthetic_rows, settings),
        )
        bar.close()
    elif cfg.data.source == "criteo":
        manifest = preprocess_criteo(settings, out, args.rows_per_shard)
    else:  # in-memory sources: encoded as `train` encodes them, then written once
        manifest = preprocess_examples(
            build_data(cfg), out, args.rows_per_shard, seed=cfg.train.seed
        )
    return manifest

"""``python -m torchrec_recsys preprocess``: Criteo-format TSV -> Parquet shards, once.

    python -m torchrec_recsys preprocess --config configs/criteo_synthetic_dlrm.toml \\
        --out data/criteo/shards [--rows-per-shard 1000000]
    python -m torchrec_recsys preprocess --synthetic-rows 10000000 --out data/criteo/synth10m

The second form writes synthetic examples (the generator of ``synth-criteo``) straight into
shards, without a TSV in between, for scale tests. Either way the last rows become the
validation and test shards (``data.criteo.val_fraction`` / ``test_fraction``). ``train``
streams them with ``data.source = "shards"`` and ``data.shards_dir`` (``data.shards``,
bounded memory).
"""

from __future__ import annotations

import argparse
import time

from tqdm import tqdm

from torchrec_recsys.config import load_config
from torchrec_recsys.data.criteo import (
    NUM_SPARSE,
    encode_dense,
    hash_rows,
    split_sizes,
    synthetic_criteo_blocks,
)
from torchrec_recsys.data.shards import preprocess_criteo, vocab_hash, write_shards
from torchrec_recsys.errors import UserError


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="torchrec_recsys preprocess",
        description="Turn a Criteo-format TSV (data.criteo.*) into Parquet shards + manifest.",
    )
    parser.add_argument("--config", help="experiment TOML with data.source = 'criteo'")
    parser.add_argument("--out", required=True, help="folder for the shards and manifest.json")
    parser.add_argument("--rows-per-shard", type=int, default=1_000_000, help="rows per shard")
    parser.add_argument(
        "--synthetic-rows", type=int, default=0, help="write this many synthetic rows instead"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic rows")
    args, overrides = parser.parse_known_args(argv)
    if args.rows_per_shard <= 0 or args.synthetic_rows < 0:
        raise UserError("--rows-per-shard must be positive and --synthetic-rows >= 0")
    cfg = load_config(args.config, overrides)
    settings = cfg.data.criteo
    start = time.perf_counter()
    if args.synthetic_rows:
        table_rows = list(settings.table_rows) or [settings.hash_rows] * NUM_SPARSE
        bar = tqdm(total=args.synthetic_rows, unit="row", desc="preprocess (synthetic)")

        def chunks():  # noqa: ANN202
            for labels, ints, raw in synthetic_criteo_blocks(args.synthetic_rows, args.seed):
                bar.update(len(labels))
                yield labels, encode_dense(ints), hash_rows(raw, table_rows)

        manifest = write_shards(
            chunks(),
            args.out,
            table_rows,
            vocab_hash(table_rows, {"scheme": "hashing"}),
            args.rows_per_shard,
            split_sizes(args.synthetic_rows, settings),
        )
        bar.close()
    else:
        if cfg.data.source != "criteo":
            raise UserError(
                f"preprocess reads Criteo-format data; the config has data.source = "
                f"{cfg.data.source!r} (set data.source = 'criteo' and data.criteo.path)"
            )
        manifest = preprocess_criteo(settings, args.out, args.rows_per_shard)
    counts = ", ".join(
        f"{split} {entry['rows']} in {len(entry['shards'])} shard(s)"
        for split, entry in manifest["splits"].items()
    )
    print(
        f"wrote {manifest['total_rows']} examples ({counts}) to {args.out} in "
        f"{time.perf_counter() - start:.1f} s (vocab hash {manifest['vocab_hash']})"
    )

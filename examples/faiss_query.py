"""Export a two-tower's item embeddings to a FAISS index and query it.

    python -m torchrec_recsys synth --out data/synthetic        # tiny data, once
    python examples/faiss_query.py --config configs/tiny_synthetic.toml --item i3 -k 5

Trains a two-tower (or reuses ``--run-dir``), exports the index, then prints the items
nearest to ``--item`` (cosine similarity of the item-tower embeddings).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import torchrec_recsys as trs
from torchrec_recsys.retrieval.faiss_index import load_index, lookup, search


def main(argv: list[str] | None = None) -> list[tuple[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/tiny_synthetic.toml", help="TOML file")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--output-dir", default="runs/examples", help="where runs are written")
    parser.add_argument("--run-dir", help="an already trained two-tower run (skips training)")
    parser.add_argument("--item", help="item id to query with (default: the first indexed)")
    parser.add_argument("-k", type=int, default=5, help="neighbours to print")
    args = parser.parse_args(argv)

    if args.run_dir:
        run_dir = args.run_dir
    else:
        overrides = [f"train.output_dir={args.output_dir}", "model.name=two_tower", *args.set]
        run_dir = trs.train(trs.load_config(args.config, overrides)).run_dir
    export = trs.export_index(run_dir, overwrite=True)  # <run>/index_flat
    print(f"indexed {export.num_items} items ({export.dim}-d, {export.kind}) in {export.index_dir}")

    index = load_index(export.index_dir)
    item = args.item or index.item_ids[0]
    query = index.index.reconstruct(lookup(index, item))[None, :]  # [1, D], the item's vector
    scores, ids = search(index, np.asarray(query), args.k)
    print(f"items nearest to {item}:")
    for rank, (other, score) in enumerate(zip(ids[0], scores[0], strict=False), 1):
        print(f"{rank:3d}. {other:>8}  cosine {score:.4f}")
    return list(zip(ids[0], scores[0].tolist(), strict=False))


if __name__ == "__main__":
    try:
        main()
    except trs.UserError as e:
        sys.exit(f"error: {e}")

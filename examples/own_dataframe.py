"""Train on your own pandas DataFrames.

    python examples/own_dataframe.py --folder data/my_tables

The tables need (column names fixed, other columns ignored):

    interactions: user_id, item_id, rating, timestamp
    items:        item_id, title (item text), genres ("Action|Comedy": several values)

``make_tables`` below stands in for your data: replace it with your own DataFrames.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

import torchrec_recsys as trs

GENRES = ["action", "comedy", "drama", "horror", "romance"]


def make_tables(users: int, items: int, per_user: int, seed: int) -> tuple[pd.DataFrame, ...]:
    """Stand-in data: each user prefers one genre and rates its items higher."""
    rng = np.random.default_rng(seed)
    item_genre = rng.integers(len(GENRES), size=items)
    items_df = pd.DataFrame(
        {
            "item_id": [f"item{i}" for i in range(items)],
            "title": [f"{GENRES[g]} film {i}" for i, g in enumerate(item_genre)],
            "genres": [GENRES[g] for g in item_genre],
        }
    )
    rows = []
    for u in range(users):
        liked = rng.integers(len(GENRES))
        for i in rng.choice(items, size=per_user, replace=False):
            rating = 4.0 + rng.integers(2) if item_genre[i] == liked else 1.0 + rng.integers(3)
            rows.append((f"user{u}", f"item{i}", float(rating), 1_600_000_000 + len(rows)))
    columns = ["user_id", "item_id", "rating", "timestamp"]
    return pd.DataFrame(rows, columns=columns), items_df


def main(argv: list[str] | None = None) -> trs.RunResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default="data/my_tables", help="where the tables are saved")
    parser.add_argument("--output-dir", default="runs/examples", help="where runs are written")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--per-user", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--overwrite", action="store_true", help="replace saved tables")
    args = parser.parse_args(argv)

    interactions, items = make_tables(args.users, args.items, args.per_user, seed=0)
    cfg = trs.load_config(
        overrides={
            "name": "my_tables",
            "data.item_categorical_columns": ["genres"],
            "data.user_categorical_columns": [],  # no users table here
            "train.epochs": args.epochs,
            "train.output_dir": args.output_dir,
            "train.progress_bar": False,
        }
    )
    # saves the tables as Parquet (the run reads them again when it is loaded later)
    cfg = trs.use_dataframes(cfg, args.folder, interactions, items, overwrite=args.overwrite)
    result = trs.train(cfg)
    print(f"trained on {len(interactions)} interactions of {len(items)} items")
    print(f"test AUC {result.metrics['auc']:.4f}, NE {result.metrics['ne']:.4f}")
    print(f"run: {result.run_dir}")
    return result


if __name__ == "__main__":
    try:
        main()
    except trs.UserError as e:
        sys.exit(f"error: {e}")

"""Synthetic interaction data with power-law item popularity, in the bring-your-own file format.

Ratings follow a hidden low-rank taste model (user and item factors plus genre affinity), so
a model that learns from the IDs and attributes beats chance: tests use it to check that
training works, benchmarks to scale item counts far beyond MovieLens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "SciFi", "Thriller", "Western")
DECADES = ("1960s", "1970s", "1980s", "1990s", "2000s")


@dataclass(frozen=True)
class SyntheticPaths:
    interactions: Path
    items: Path
    users: Path


def write_synthetic_dataset(
    folder: str | Path,
    num_users: int = 200,
    num_items: int = 300,
    interactions_per_user: int = 30,
    zipf_exponent: float = 1.1,
    seed: int = 0,
    file_format: str = "csv",
) -> SyntheticPaths:
    """Write ``interactions``, ``items`` and ``users`` files (CSV or Parquet) into ``folder``."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    factors = 4
    user_vec = rng.normal(size=(num_users, factors))  # [U, k]
    item_vec = rng.normal(size=(num_items, factors))  # [I, k]
    item_genre = rng.integers(0, len(GENRES), size=(num_items, 2))  # [I, 2], two genres each
    genre_taste = rng.normal(size=(num_users, len(GENRES)))  # [U, G]

    popularity = 1.0 / np.arange(1, num_items + 1) ** zipf_exponent
    popularity = popularity[rng.permutation(num_items)]
    popularity /= popularity.sum()  # [I]

    rows = []
    for user in range(num_users):
        count = min(interactions_per_user, num_items)
        items = rng.choice(num_items, size=count, replace=False, p=popularity)
        affinity = item_vec[items] @ user_vec[user] + genre_taste[user, item_genre[items]].sum(1)
        rating = np.clip(np.round(3 + affinity / 1.5 + rng.normal(scale=0.5, size=count)), 1, 5)
        times = np.sort(rng.integers(1_600_000_000, 1_700_000_000, size=count))
        rows.append(
            pd.DataFrame(
                {
                    "user_id": f"u{user}",
                    "item_id": [f"i{i}" for i in items],
                    "rating": rating,
                    "timestamp": times,
                }
            )
        )
    interactions = pd.concat(rows, ignore_index=True)
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(num_items)],
            "title": [
                f"{GENRES[g[0]]} {GENRES[g[1]]} story number {i}" for i, g in enumerate(item_genre)
            ],
            "genres": ["|".join(sorted({GENRES[a], GENRES[b]})) for a, b in item_genre],
            "decade": rng.choice(DECADES, size=num_items),
        }
    )
    users = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in range(num_users)],
            "age_group": rng.choice(["10s", "20s", "30s", "40s", "50s"], size=num_users),
            "gender": rng.choice(["F", "M"], size=num_users),
            "occupation": rng.choice(["artist", "engineer", "student", "other"], size=num_users),
        }
    )
    suffix = ".parquet" if file_format == "parquet" else ".csv"
    paths = SyntheticPaths(
        interactions=folder / f"interactions{suffix}",
        items=folder / f"items{suffix}",
        users=folder / f"users{suffix}",
    )
    for frame, path in [
        (interactions, paths.interactions),
        (items, paths.items),
        (users, paths.users),
    ]:
        if suffix == ".parquet":
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
    return paths

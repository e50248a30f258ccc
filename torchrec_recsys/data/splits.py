"""Temporal per-user leave-last-out split.

For each user, interactions are ordered by (timestamp, item_id). The last ``test_per_user``
go to test, the ``val_per_user`` before them to validation, the rest to train. A user with
no more than ``val_per_user + test_per_user`` interactions keeps them all in train (so every
evaluated user has training history). This is the standard sequential-recommendation protocol
(e.g. SASRec, BERT4Rec); it never lets a model train on a user's future.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TRAIN, VAL, TEST = 0, 1, 2
DROPPED = -1  # held out of every split (training interactions of cold items)
SPLIT_METHODS = ("temporal", "random")
SPLIT_NAMES = {TRAIN: "train", VAL: "val", TEST: "test"}


def random_split(num_rows: int, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """Split label per row drawn at random (TensorFlow Recommenders' protocol: 80/20). int8 [N].

    Unlike the temporal split, a model may train on a user's later interactions and be tested
    on earlier ones; use it only to compare with results published under this protocol.
    """
    draw = np.random.default_rng(seed).random(num_rows)
    split = np.full(num_rows, TRAIN, dtype=np.int8)
    split[draw < test_fraction] = TEST
    split[(draw >= test_fraction) & (draw < test_fraction + val_fraction)] = VAL
    return split


def temporal_order(interactions: pd.DataFrame) -> pd.DataFrame:
    """Interactions sorted by user, then time, then item (deterministic tie-break)."""
    return interactions.sort_values(["user_id", "timestamp", "item_id"], kind="stable").reset_index(
        drop=True
    )


def leave_last_out(ordered: pd.DataFrame, val_per_user: int, test_per_user: int) -> np.ndarray:
    """Split label per row of a :func:`temporal_order`-ed frame: TRAIN, VAL or TEST. int8 [N]."""
    per_user = ordered.groupby("user_id", sort=False)["user_id"].transform("size").to_numpy()
    # rank from the end within each user: 0 = latest
    from_end = ordered.groupby("user_id", sort=False).cumcount(ascending=False).to_numpy()
    split = np.full(len(ordered), TRAIN, dtype=np.int8)
    eligible = per_user > val_per_user + test_per_user
    split[eligible & (from_end < test_per_user)] = TEST
    split[eligible & (from_end >= test_per_user) & (from_end < test_per_user + val_per_user)] = VAL
    return split

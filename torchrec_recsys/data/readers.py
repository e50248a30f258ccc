"""Raw tables from disk: CSV or Parquet, checked for missing files, columns and bad rows.

Every reader returns a :class:`RawData` in one schema, whatever the source:

* ``interactions``: user_id (str), item_id (str), rating (float), timestamp (float)
* ``items``: item_id (str), the configured text and categorical columns (str)
* ``users``: user_id (str) and categorical columns (str), possibly empty

IDs stay strings here; ``data/vocab.py`` maps them to contiguous indices.
Nothing is dropped silently: a malformed row is an error naming how many and the first one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import pyarrow as pa

from torchrec_recsys.errors import DataError, warn_user

INTERACTION_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
NUMERIC_INTERACTION_COLUMNS = ("rating", "timestamp")


@dataclass
class RawData:
    """Interactions plus item and user attribute tables, all with string IDs."""

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    name: str
    report: dict[str, int] = field(default_factory=dict)
    """What a reader skipped or filtered, by reason (row counts); empty when nothing was."""

    def copy(self) -> RawData:
        """A deep copy: changing it leaves this one as it is."""
        return replace(
            self,
            interactions=self.interactions.copy(),
            items=self.items.copy(),
            users=self.users.copy(),
            report=dict(self.report),
        )


def keep_active_users(raw: RawData, min_interactions: int) -> RawData:
    """``raw`` restricted to users with at least ``min_interactions`` interactions, and its
    catalogue to the items those users interacted with (a documented subset of a large
    dataset, e.g. users with >= 20 ratings). ``report`` counts what was dropped.

    Raises:
        DataError: no user has that many interactions.
    """
    if min_interactions <= 1:
        return raw
    inter = raw.interactions
    counts = inter["user_id"].value_counts()
    active = counts.index[counts >= min_interactions]
    if not len(active):
        raise DataError(
            f"data.min_user_interactions = {min_interactions} keeps no user: the most active "
            f"user of {raw.name} has {int(counts.max()) if len(counts) else 0} interactions"
        )
    kept = inter[inter["user_id"].isin(active)].reset_index(drop=True)
    items = raw.items[raw.items["item_id"].isin(kept["item_id"])].reset_index(drop=True)
    users = raw.users
    if len(users):
        users = users[users["user_id"].isin(active)].reset_index(drop=True)
    report = {
        **raw.report,
        "interactions_of_less_active_users": len(inter) - len(kept),
        "users_below_min_interactions": int(len(counts) - len(active)),
        "items_only_rated_by_less_active_users": len(raw.items) - len(items),
    }
    return replace(raw, interactions=kept, items=items, users=users, report=report)


def read_table(path: str | Path, required: tuple[str, ...] | list[str], what: str) -> pd.DataFrame:
    """Read a CSV (``.csv``, ``.tsv``) or Parquet (``.parquet``) file as strings.

    Args:
        path: file to read.
        required: columns that must be present.
        what: what the file holds (``"interactions"``), used in error messages.

    Raises:
        DataError: the file is missing, empty or header-only, unreadable (not UTF-8 text, a
            truncated or corrupt Parquet file, a malformed row), or lacks a required column.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(path).astype("string")
        elif suffix in (".csv", ".tsv", ".txt"):
            sep = "\t" if suffix == ".tsv" else ","
            frame = pd.read_csv(
                path, sep=sep, dtype="string", keep_default_na=False, encoding="utf-8-sig"
            )  # (utf-8-sig: a byte-order mark is not part of the first column name)
        else:
            raise DataError(
                f"{what} file {str(path)!r} has suffix {suffix!r}; expected .csv, .tsv or .parquet"
            )
    except pd.errors.ParserError as e:
        raise DataError(f"{what} file {str(path)!r} has a malformed row: {e}".strip()) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{what} file {str(path)!r} is empty; expected a header and rows") from None
    except UnicodeDecodeError as e:
        raise DataError(
            f"{what} file {str(path)!r} is not UTF-8 text (byte {e.start}: {e.reason})"
        ) from None
    except (pa.ArrowException, OSError) as e:
        raise DataError(
            f"{what} file {str(path)!r} is not a readable {suffix[1:]} file "
            f"(truncated or corrupt?): {e}"
        ) from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(
            f"{what} file {str(path)!r} lacks column(s) {', '.join(missing)}; "
            f"found {', '.join(map(str, frame.columns))}"
        )
    if not len(frame):
        raise DataError(f"{what} file {str(path)!r} has a header but no rows")
    return frame


def _strip_ids(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    """``frame`` with its ID column stripped of surrounding whitespace (as in interactions)."""
    frame = frame.copy()
    frame[key] = frame[key].astype("string").str.strip()
    return frame


def check_interactions(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Convert interaction columns to their types, failing on any malformed row.

    Returns a frame with user_id/item_id as str and rating/timestamp as float64.

    Raises:
        DataError: with the count of bad rows and the first one's line number (header = line 1).
    """
    out = pd.DataFrame(
        {
            "user_id": frame["user_id"].astype("string").str.strip(),
            "item_id": frame["item_id"].astype("string").str.strip(),
        }
    )
    bad = (
        out["user_id"].isna()
        | (out["user_id"] == "")
        | out["item_id"].isna()
        | (out["item_id"] == "")
    )
    for column in NUMERIC_INTERACTION_COLUMNS:
        values = pd.to_numeric(frame[column], errors="coerce").astype("float64")
        bad |= values.isna() | ~values.abs().lt(float("inf"))
        out[column] = values
    if bad.any():
        first = int(bad.to_numpy().nonzero()[0][0])
        row = frame.iloc[first].to_dict()
        raise DataError(
            f"{source}: {int(bad.sum())} malformed row(s) (empty ID or non-numeric/infinite "
            f"rating or timestamp); first at line {first + 2}: {row}"
        )
    dup = out.duplicated()
    if dup.any():
        first = int(dup.to_numpy().nonzero()[0][0])
        warn_user(
            f"{source}: {int(dup.sum())} duplicate row(s) (same user, item, rating and "
            f"timestamp), first at line {first + 2}: {frame.iloc[first].to_dict()}; "
            f"they are kept and count as separate interactions"
        )
    return out


def check_configured_columns(
    frame: pd.DataFrame, columns: list[str], keys: Mapping[str, str], what: str
) -> None:
    """Fail when ``frame`` lacks a configured column, naming the config key that asks for it
    (``keys``: column -> key) and the columns the table has.

    Raises:
        DataError: one line: the missing column(s), the key to change, the columns there are.
    """
    missing = [c for c in columns if c not in frame.columns]
    if not missing:
        return
    asked = sorted({keys.get(c, "the config") for c in missing})
    raise DataError(
        f"{what} lacks column(s) {', '.join(map(repr, missing))} named by {' / '.join(asked)}; "
        f"its columns are {', '.join(map(str, frame.columns))}: set {' / '.join(asked)} to "
        f"columns it has (or [])"
    )


def read_files(
    interactions_path: str,
    items_path: str,
    users_path: str,
    item_columns: list[str],
    user_columns: list[str],
    optional_item_columns: list[str] | tuple[str, ...] = (),
    column_keys: Mapping[str, str] | None = None,
) -> RawData:
    """Read a bring-your-own dataset (see docs/data.md, "Bring your own files").

    ``item_columns`` must be in the items file; ``optional_item_columns`` are read when it
    has them (a default list that may not fit the file). ``column_keys`` (column -> config
    key) names the key to change when a column is missing.
    """
    keys = dict(column_keys or {})
    interactions = check_interactions(
        read_table(interactions_path, INTERACTION_COLUMNS, "interactions"), interactions_path
    )
    items = read_table(items_path, ["item_id"], "items")
    check_configured_columns(items, item_columns, keys, f"items file {items_path!r}")
    item_columns = [
        *item_columns,
        *(c for c in optional_item_columns if c in items.columns and c not in item_columns),
    ]
    items = _strip_ids(items[["item_id", *item_columns]].fillna(""), "item_id")
    if users_path:
        users = read_table(users_path, ["user_id"], "users")
        user_keys = {c: keys.get(c, "data.user_categorical_columns") for c in user_columns}
        check_configured_columns(users, user_columns, user_keys, f"users file {users_path!r}")
        users = _strip_ids(users[["user_id", *user_columns]].fillna(""), "user_id")
    else:
        users = pd.DataFrame({"user_id": pd.Series([], dtype="string")})
    for frame, what, path in [(items, "items", items_path), (users, "users", users_path)]:
        key = frame.columns[0]
        empty = frame[key].isna() | (frame[key] == "")
        if empty.any():
            first = int(empty.to_numpy().nonzero()[0][0])
            raise DataError(
                f"{what} file {path!r}: {int(empty.sum())} row(s) with an empty {key}; "
                f"first at line {first + 2}"
            )
        dup = frame[key].duplicated()
        if dup.any():
            raise DataError(
                f"{what} file {path!r} repeats {key} {frame[key][dup].iloc[0]!r} "
                f"({int(dup.sum())} duplicate row(s)); each {key} must appear once"
            )
    return RawData(
        interactions=interactions, items=items, users=users, name=Path(interactions_path).stem
    )

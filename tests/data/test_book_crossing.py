"""Book-Crossing reader: malformed lines and filtered rows are counted, never silently dropped."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchrec_recsys.data.book_crossing import load_book_crossing
from torchrec_recsys.errors import DataError

BOOKS = (
    '"ISBN";"Book-Title";"Book-Author";"Year-Of-Publication";"Publisher";"Image-URL-S"\n'
    '"b1";"A Tale";"Ann Author";"1999";"Pub A";"u"\n'
    '"b2";"Say \\"Hi\\"; Again";"Bob";"0";"Pub B";"u"\n'  # escaped quotes and a ; inside
    '"b3";"Broken";"Cy";"2001";"Pub C";"u";"extra";"fields"\n'  # malformed: 8 fields, not 6
    '"b4";"Unrated";"Di";"2002";"Pub D";"u"\n'
)
RATINGS = (
    '"User-ID";"ISBN";"Book-Rating"\n'
    '"1";"b1";"9"\n'
    '"1";"b2";"0"\n'  # implicit
    '"2";"b2";"7"\n'
    '"2";"b9";"5"\n'  # book not in the catalogue
    '"3";"b1";"eleven"\n'  # bad rating
    '"3";"b1";"4";"x"\n'  # malformed: 4 fields
    '"3";"b2";"10"\n'
    '"3";"b2";"8"\n'  # repeated (user, book)
)
USERS = '"User-ID";"Location";"Age"\n"1";"nyc, new york, usa";NULL\n"2";"porto, portugal";"27"\n'


def _write(folder: Path) -> Path:
    (folder / "BX-Books.csv").write_text(BOOKS, encoding="latin-1")
    (folder / "BX-Book-Ratings.csv").write_text(RATINGS, encoding="latin-1")
    (folder / "BX-Users.csv").write_text(USERS, encoding="latin-1")
    return folder


def test_malformed_and_filtered_rows_are_counted(tmp_path: Path) -> None:
    raw = load_book_crossing(_write(tmp_path))
    assert raw.report["malformed_lines_books"] == 1
    assert raw.report["malformed_lines_ratings"] == 1
    assert raw.report["bad_rating_rows"] == 1
    assert raw.report["implicit_ratings"] == 1
    assert raw.report["ratings_of_unknown_books"] == 1
    assert raw.report["duplicate_ratings"] == 1
    assert raw.report["books_without_kept_ratings"] == 1  # b4
    assert raw.report["rating_rows_read"] == 7
    inter = raw.interactions
    assert raw.report["ratings_kept"] == len(inter) == 3
    assert list(zip(inter["user_id"], inter["item_id"], inter["rating"], strict=True)) == [
        ("1", "b1", 9.0),
        ("2", "b2", 7.0),
        ("3", "b2", 10.0),
    ]
    assert inter["timestamp"].is_monotonic_increasing  # file order stands in for time
    items = raw.items.set_index("item_id")
    assert list(items.index) == ["b1", "b2"]
    assert items.loc["b2", "title"] == 'Say "Hi"; Again'
    assert items.loc["b1", "decade"] == "1990s" and items.loc["b2", "decade"] == ""
    users = raw.users.set_index("user_id")
    assert users.loc["2", "age_group"] == "20s" and users.loc["1", "age_group"] == ""
    assert users.loc["2", "country"] == "portugal"


def test_implicit_ratings_can_be_kept(tmp_path: Path) -> None:
    raw = load_book_crossing(_write(tmp_path), min_rating=0)
    assert raw.report["implicit_ratings"] == 0
    pairs = zip(raw.interactions["user_id"], raw.interactions["item_id"], strict=True)
    assert ("1", "b2") in set(pairs)


def test_missing_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="BX-Book-Ratings.csv"):
        load_book_crossing(tmp_path)

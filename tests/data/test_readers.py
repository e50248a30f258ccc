"""Readers: MovieLens in place, bring-your-own CSV/Parquet, and clear errors for bad files."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from torchrec_recsys.data.movielens import load_movielens_100k
from torchrec_recsys.data.readers import RawData, keep_active_users, read_files
from torchrec_recsys.data.synthetic import write_synthetic_dataset
from torchrec_recsys.errors import DataError

ITEM_COLUMNS = ["title", "genres", "decade"]
USER_COLUMNS = ["age_group", "gender", "occupation"]


def test_movielens_100k_is_read_in_place() -> None:
    raw = load_movielens_100k()
    assert len(raw.interactions) == 100_000
    assert raw.interactions["user_id"].nunique() == 943
    assert len(raw.items) == 1682 and len(raw.users) == 943
    toy_story = raw.items.set_index("item_id").loc["1"]
    assert toy_story["title"] == "Toy Story"
    assert toy_story["genres"].split("|") == ["Animation", "Children's", "Comedy"]
    assert toy_story["decade"] == "1990s"
    assert set(raw.users["gender"]) == {"M", "F"}


@pytest.mark.parametrize("file_format", ["csv", "parquet"])
def test_bring_your_own_files(tmp_path: Path, file_format: str) -> None:
    paths = write_synthetic_dataset(
        tmp_path, num_users=5, num_items=10, interactions_per_user=4, file_format=file_format
    )
    raw = read_files(
        str(paths.interactions), str(paths.items), str(paths.users), ITEM_COLUMNS, USER_COLUMNS
    )
    assert len(raw.interactions) == 20
    assert raw.interactions["rating"].dtype == "float64"
    assert list(raw.items.columns) == ["item_id", *ITEM_COLUMNS]


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"interactions file '.*nope\.csv' does not exist"):
        read_files(str(tmp_path / "nope.csv"), "x.csv", "", [], [])


def test_missing_columns_are_named(tmp_path: Path) -> None:
    inter = _write(tmp_path / "i.csv", "user_id,item,rating,timestamp\n1,2,3,4\n")
    with pytest.raises(DataError, match="lacks column\\(s\\) item_id"):
        read_files(inter, "x.csv", "", [], [])


def test_malformed_rows_are_counted_with_first_line(tmp_path: Path) -> None:
    inter = _write(
        tmp_path / "i.csv",
        "user_id,item_id,rating,timestamp\n1,2,3,4\n1,3,five,5\n2,3,4,6\n2,,4,7\n",
    )
    items = _write(tmp_path / "items.csv", "item_id,title\n2,a\n3,b\n")
    with pytest.raises(DataError, match="2 malformed row\\(s\\).*first at line 3"):
        read_files(inter, items, "", ["title"], [])


def test_wrong_field_count_is_reported(tmp_path: Path) -> None:
    inter = _write(tmp_path / "i.csv", "user_id,item_id,rating,timestamp\n1,2,3,4\n1,2,3,4,5,6\n")
    with pytest.raises(DataError, match="malformed row"):
        read_files(inter, "x.csv", "", [], [])


def test_unsupported_suffix_and_duplicate_items(tmp_path: Path) -> None:
    inter = _write(tmp_path / "i.json", "{}")
    with pytest.raises(DataError, match="expected .csv, .tsv or .parquet"):
        read_files(inter, "x.csv", "", [], [])
    good = _write(tmp_path / "i.csv", "user_id,item_id,rating,timestamp\n1,2,3,4\n")
    items = tmp_path / "items.csv"
    pd.DataFrame({"item_id": ["2", "2"], "title": ["a", "b"]}).to_csv(items, index=False)
    with pytest.raises(DataError, match="repeats item_id '2'"):
        read_files(good, str(items), "", ["title"], [])


def _raw(pairs: list[tuple[str, str]]) -> RawData:
    inter = pd.DataFrame(pairs, columns=["user_id", "item_id"])
    items = pd.DataFrame({"item_id": sorted({i for _, i in pairs} | {"unrated"})})
    users = pd.DataFrame({"user_id": sorted({u for u, _ in pairs})})
    return RawData(inter, items, users, "toy", report={"bad_rows": 1})


def test_keep_active_users_drops_light_users_and_the_items_only_they_rated() -> None:
    raw = _raw([("a", "1"), ("a", "2"), ("a", "3"), ("b", "3"), ("b", "4"), ("c", "5")])
    kept = keep_active_users(raw, 2)
    assert sorted(kept.interactions["user_id"].unique()) == ["a", "b"]
    assert sorted(kept.items["item_id"]) == ["1", "2", "3", "4"]
    assert sorted(kept.users["user_id"]) == ["a", "b"]
    assert kept.report == {
        "bad_rows": 1,
        "interactions_of_less_active_users": 1,
        "users_below_min_interactions": 1,
        "items_only_rated_by_less_active_users": 2,
    }
    assert keep_active_users(raw, 1) is raw and keep_active_users(raw, 0) is raw


def test_keep_active_users_that_keeps_nobody_names_the_most_active_user() -> None:
    raw = _raw([("a", "1"), ("a", "2"), ("b", "3")])
    with pytest.raises(DataError, match="min_user_interactions = 5 keeps no user.* has 2"):
        keep_active_users(raw, 5)

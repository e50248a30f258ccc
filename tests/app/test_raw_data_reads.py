"""How often a run reads its raw data: a packaged dataset once per process (handed out as
copies), and not at all for a SID table read from ``semantic_ids.table_path``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from torchrec_recsys.api import load_config
from torchrec_recsys.app import builders
from torchrec_recsys.data.readers import RawData
from torchrec_recsys.semantic_ids.store import SIDTable, save_sid_table


def _tiny_raw() -> RawData:
    return RawData(
        interactions=pd.DataFrame(
            {"user_id": ["u0", "u0", "u1"], "item_id": ["a", "b", "a"], "rating": [5, 4, 3]}
        ),
        items=pd.DataFrame({"item_id": ["a", "b"], "title": ["A", "B"]}),
        users=pd.DataFrame({"user_id": ["u0", "u1"]}),
        name="tiny",
        report={"dropped": 1},
    )


@pytest.fixture
def counted_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The packaged MovieLens reader replaced by a tiny one that counts its calls."""
    calls: list[int] = []

    def fake() -> RawData:
        calls.append(1)
        return _tiny_raw()

    builders._packaged_raw_data.cache_clear()
    monkeypatch.setattr(builders, "load_movielens_100k", fake)
    yield calls
    builders._packaged_raw_data.cache_clear()  # no fake left behind for other tests


def test_packaged_dataset_is_read_once_and_each_caller_gets_its_own_copy(
    counted_reads: list[int],
) -> None:
    cfg = load_config(overrides={"data.source": "movielens-100k"})
    first = builders.build_raw_data(cfg)
    first.interactions.loc[0, "item_id"] = "changed"
    first.items.loc[0, "title"] = "changed"
    first.report["dropped"] = 99
    second = builders.build_raw_data(cfg)
    assert len(counted_reads) == 1
    pd.testing.assert_frame_equal(second.interactions, _tiny_raw().interactions)
    pd.testing.assert_frame_equal(second.items, _tiny_raw().items)
    assert second.report == {"dropped": 1}


def test_a_sid_table_read_from_its_path_reads_no_raw_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    codes = np.array([[0, 0], [1, 0], [2, 0]])  # [I, 2]: 1 quantizer level + collision
    path = save_sid_table(
        tmp_path / "sid", SIDTable(["a", "b", "c"], codes, [4, 1], np.zeros((1, 4, 2), np.float32))
    )
    cfg = load_config(
        overrides={
            "semantic_ids.table_path": str(path),
            "semantic_ids.levels": 1,
            "semantic_ids.codebook_size": 4,
        }
    )

    def no_read(_: object) -> RawData:
        raise AssertionError("the raw data was read for a table that has a path")

    monkeypatch.setattr(builders, "build_raw_data", no_read)
    data = SimpleNamespace(items=SimpleNamespace(item_ids=["c", "a", "b"]))  # catalogue order
    tokenizer = builders.build_sequence_tokenizer(cfg, data)  # type: ignore[arg-type]
    assert np.array_equal(tokenizer.codes, codes[[2, 0, 1]])  # the table, in catalogue order

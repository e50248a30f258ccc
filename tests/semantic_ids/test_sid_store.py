"""SID store: atomic save/load round trip for both quantizers; no pickle from disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sid_testdata import clustered_embeddings, one_torch_thread  # noqa: F401 (autouse)

from torchrec_recsys.errors import DataError
from torchrec_recsys.semantic_ids.learn import learn_semantic_ids, quantizer_from_table
from torchrec_recsys.semantic_ids.rq_kmeans import RQKMeans, RQKMeansConfig
from torchrec_recsys.semantic_ids.rqvae import RQVAE, RQVAEConfig
from torchrec_recsys.semantic_ids.store import SIDTable, load_sid_table, save_sid_table


class NotATensor:
    """Stands in for an arbitrary object someone pickled into model.pt."""


def _quantizers() -> list[RQVAE | RQKMeans]:
    return [
        RQVAE(RQVAEConfig(levels=2, codebook_size=8, latent_dim=8, hidden_dims=(16,), epochs=3)),
        RQKMeans(RQKMeansConfig(levels=2, codebook_size=8)),
    ]


@pytest.mark.parametrize("quantizer", _quantizers(), ids=["rqvae", "rq_kmeans"])
def test_round_trip_restores_table_and_quantizer(
    quantizer: RQVAE | RQKMeans, tmp_path: Path
) -> None:
    x, _ = clustered_embeddings(n=120)
    ids = [f"item{i}" for i in range(len(x))]
    table = learn_semantic_ids(ids, x, quantizer).table
    folder = save_sid_table(tmp_path / "sids", table)
    loaded = load_sid_table(folder)
    assert loaded.item_ids == ids
    np.testing.assert_array_equal(loaded.codes, table.codes)
    np.testing.assert_array_equal(loaded.codebooks, table.codebooks)
    assert loaded.codebook_sizes == table.codebook_sizes
    assert loaded.meta["method"] == table.meta["method"]
    assert loaded.model_state.keys() == table.model_state.keys()
    for key, value in table.model_state.items():
        assert torch.equal(loaded.model_state[key], value)
    restored = quantizer_from_table(loaded)
    np.testing.assert_array_equal(restored.encode(x), quantizer.encode(x))
    np.testing.assert_array_equal(loaded.rows(["item3", "nope"]), [3, -1])


def test_overwrite_replaces_the_folder_and_leaves_no_temp(tmp_path: Path) -> None:
    def table(codes: list[list[int]]) -> SIDTable:
        return SIDTable(["a", "b"], np.array(codes), [4, 4], np.zeros((2, 4, 3), np.float32))

    save_sid_table(tmp_path / "sids", table([[0, 1], [2, 3]]))
    save_sid_table(tmp_path / "sids", table([[3, 3], [1, 0]]))
    np.testing.assert_array_equal(load_sid_table(tmp_path / "sids").codes, [[3, 3], [1, 0]])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sids"]
    assert not (tmp_path / "sids" / "model.pt").exists()


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    table = SIDTable(["a"], np.array([[1]]), [2], np.zeros((1, 2, 3), np.float32))
    table.model_state = {"w": torch.ones(2)}
    folder = save_sid_table(tmp_path / "sids", table)
    torch.save({"w": NotATensor()}, folder / "model.pt")
    with pytest.raises(DataError, match="refused to unpickle"):
        load_sid_table(folder)


def test_missing_and_invalid_tables_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=str(tmp_path / "absent")):
        load_sid_table(tmp_path / "absent")
    (tmp_path / "partial").mkdir()
    with pytest.raises(DataError, match="lacks meta.json"):
        load_sid_table(tmp_path / "partial")
    with pytest.raises(DataError, match="'a' appears 2 times"):
        SIDTable(["a", "a"], np.array([[0], [1]]), [2], np.zeros((1, 2, 1), np.float32))
    with pytest.raises(DataError, match="3 item ids but 2 code rows"):
        SIDTable(["a", "b", "c"], np.array([[0], [1]]), [2], np.zeros((1, 2, 1), np.float32))

"""Pipeline: embeddings -> unique SIDs -> token features for any item vocabulary."""

from __future__ import annotations

import numpy as np
import pytest
from sid_testdata import clustered_embeddings, one_torch_thread  # noqa: F401 (autouse)

from torchrec_recsys.errors import ConfigError, DataError
from torchrec_recsys.semantic_ids.learn import (
    item_token_features,
    learn_semantic_ids,
    make_quantizer,
)
from torchrec_recsys.semantic_ids.rq_kmeans import RQKMeansConfig
from torchrec_recsys.semantic_ids.rqvae import RQVAEConfig


def test_learn_semantic_ids_gives_unique_sids_and_tokens() -> None:
    x, label = clustered_embeddings(n=200, clusters=4, noise=0.1)
    ids = [str(i) for i in range(len(x))]
    genres = [f"g{c}" for c in label]
    quantizer = make_quantizer("rq_kmeans", RQKMeansConfig(levels=2, codebook_size=4))
    result = learn_semantic_ids(ids, x, quantizer, genres=genres, fallback_texts=0)
    table = result.table
    assert table.codes.shape == (200, 3)
    assert len(np.unique(table.codes, axis=0)) == 200
    assert table.codebook_sizes[:2] == [4, 4]
    assert table.codebook_sizes[2] == result.collisions.max_group_size
    assert result.report.collision_rate == pytest.approx(result.collisions.collision_rate)
    coh = result.report.coherence
    assert coh is not None and coh.level1_share > coh.random_share + 0.3  # clusters = genres
    features = item_token_features(table, ["5", "unknown-item", "7"])
    assert list(features) == ["sid_l1", "sid_l2", "sid_l3", "sid_p2", "sid_p3"]
    for feature in features.values():
        assert feature.ids[1] == 0 and feature.ids[0] > 0 and feature.ids[2] > 0


def test_bad_method_and_lengths_are_errors() -> None:
    with pytest.raises(ConfigError, match="'vq'"):
        make_quantizer("vq")
    with pytest.raises(ConfigError, match="RQVAEConfig"):
        make_quantizer("rq_kmeans", RQVAEConfig())
    x, _ = clustered_embeddings(n=20)
    with pytest.raises(DataError, match="3 item ids for 20 embeddings"):
        learn_semantic_ids(["a", "b", "c"], x, make_quantizer("rq_kmeans"))

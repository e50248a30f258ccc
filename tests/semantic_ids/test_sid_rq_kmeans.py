"""Residual k-means: each level lowers reconstruction error; codes valid; errors clear."""

from __future__ import annotations

import numpy as np
import pytest
from sid_testdata import clustered_embeddings, one_torch_thread  # noqa: F401 (autouse)

from torchrec_recsys.errors import DataError
from torchrec_recsys.semantic_ids.base import SIDQuantizer
from torchrec_recsys.semantic_ids.rq_kmeans import RQKMeans, RQKMeansConfig


def test_each_added_level_lowers_reconstruction_error() -> None:
    x, _ = clustered_embeddings(n=400, dim=16, noise=0.5)
    model = RQKMeans(RQKMeansConfig(levels=4, codebook_size=8, seed=0)).fit(x)
    codes = model.encode(x)
    mse = [float(((x - model.decode(codes[:, :level])) ** 2).mean()) for level in range(0, 5)]
    assert mse[0] == pytest.approx(float((x**2).mean()))  # no level: reconstruction is zero
    for before, after in zip(mse[:-1], mse[1:], strict=True):
        assert after < before
    np.testing.assert_allclose(model.reconstruct(x), model.decode(codes), rtol=1e-6)


def test_codes_valid_and_same_seed_reproducible() -> None:
    x, _ = clustered_embeddings()
    cfg = RQKMeansConfig(levels=3, codebook_size=8, seed=3)
    a = RQKMeans(cfg).fit(x)
    codes = a.encode(x)
    assert isinstance(a, SIDQuantizer)
    assert codes.shape == (x.shape[0], 3) and codes.dtype == np.int64
    assert codes.min() >= 0 and codes.max() < 8
    np.testing.assert_array_equal(codes, RQKMeans(cfg).fit(x).encode(x))
    assert a.codebooks().shape == (3, 8, x.shape[1])


def test_codebook_larger_than_catalogue_names_both_numbers() -> None:
    x, _ = clustered_embeddings(n=30)
    with pytest.raises(DataError, match=r"codebook size 32 .* number of items 30"):
        RQKMeans(RQKMeansConfig(codebook_size=32)).fit(x)


def test_encode_checks_width_and_fit_state() -> None:
    x, _ = clustered_embeddings()
    with pytest.raises(DataError, match="not been fitted"):
        RQKMeans().encode(x)
    model = RQKMeans(RQKMeansConfig(levels=1, codebook_size=4)).fit(x)
    with pytest.raises(DataError, match="width 8"):
        model.encode(x[:, :8])
    with pytest.raises(DataError, match=r"expected values in \[0, 4\)"):
        model.decode(np.array([[4]]))

"""SID tokens: cardinalities, reserved id 0, prefix tokens equal exactly for equal prefixes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from torchrec_recsys.errors import ConfigError, DataError
from torchrec_recsys.semantic_ids.tokens import UNKNOWN_TOKEN, sid_token_features

SIZES = [4, 3, 5]


@pytest.fixture
def codes() -> np.ndarray:
    rng = np.random.default_rng(1)
    return np.stack([rng.integers(0, k, size=200) for k in SIZES], axis=1)  # [200, 3]


def test_names_and_cardinalities(codes: np.ndarray) -> None:
    features = sid_token_features(codes, SIZES)
    assert list(features) == ["sid_l1", "sid_l2", "sid_l3", "sid_p2", "sid_p3"]
    for level, k in enumerate(SIZES, start=1):
        assert features[f"sid_l{level}"].cardinality == k + 1
    for length in (2, 3):
        assert features[f"sid_p{length}"].cardinality == math.prod(SIZES[:length]) + 1
    for feature in features.values():
        assert feature.ids.dtype == np.int64 and feature.ids.shape == (200,)
        assert feature.ids.min() > UNKNOWN_TOKEN and feature.ids.max() < feature.cardinality


def test_unigrams_are_shifted_codes(codes: np.ndarray) -> None:
    features = sid_token_features(codes, SIZES, prefixes=False)
    assert set(features) == {"sid_l1", "sid_l2", "sid_l3"}
    for level in range(3):
        np.testing.assert_array_equal(features[f"sid_l{level + 1}"].ids, codes[:, level] + 1)


def test_prefix_tokens_equal_exactly_when_prefixes_equal(codes: np.ndarray) -> None:
    features = sid_token_features(codes, SIZES, unigrams=False)
    for length in (2, 3):
        ids = features[f"sid_p{length}"].ids
        same_prefix = (codes[:, None, :length] == codes[None, :, :length]).all(-1)  # [N, N]
        same_token = ids[:, None] == ids[None, :]  # [N, N]
        np.testing.assert_array_equal(same_prefix, same_token)
        assert same_prefix.sum() > len(codes)  # some distinct items do share the prefix


def test_bucketed_prefixes_stay_below_the_cap(codes: np.ndarray) -> None:
    exact = sid_token_features(codes, SIZES, unigrams=False)
    bucketed = sid_token_features(codes, SIZES, unigrams=False, max_cardinality=7)
    for name in ("sid_p2", "sid_p3"):
        assert bucketed[name].cardinality == 8
        np.testing.assert_array_equal(bucketed[name].ids, (exact[name].ids - 1) % 7 + 1)
    roomy = sid_token_features(codes, SIZES, unigrams=False, max_cardinality=10_000)
    np.testing.assert_array_equal(roomy["sid_p3"].ids, exact["sid_p3"].ids)
    assert roomy["sid_p2"].cardinality == 4 * 3 + 1


def test_bad_codes_and_sizes_are_errors(codes: np.ndarray) -> None:
    with pytest.raises(
        DataError, match=r"level 2 codes span \[0, 2\]; expected values in \[0, 2\)"
    ):
        sid_token_features(codes, [4, 2, 5])
    with pytest.raises(DataError, match="one column per codebook size"):
        sid_token_features(codes, [4, 3])
    with pytest.raises(ConfigError, match="max_cardinality = 0"):
        sid_token_features(codes, SIZES, max_cardinality=0)
    with pytest.raises(ConfigError, match="too many for int64"):
        sid_token_features(np.zeros((1, 8), np.int64), [256] * 8)

"""Collision level: SIDs become unique, numbering follows item order, output is deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from torchrec_recsys.errors import DataError
from torchrec_recsys.semantic_ids.collisions import add_collision_level, collision_rate


def test_numbers_items_of_each_group_in_item_order() -> None:
    codes = np.array([[3, 1], [5, 2], [3, 1], [3, 1], [5, 2], [0, 0]])
    result = add_collision_level(codes)
    np.testing.assert_array_equal(result.codes[:, :2], codes)
    np.testing.assert_array_equal(result.codes[:, 2], [0, 0, 1, 2, 1, 0])
    assert result.max_group_size == 3 and result.last_level_size == 3
    assert result.collision_rate == pytest.approx(1 - 3 / 6)


def test_random_codes_become_unique_and_deterministic() -> None:
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 3, size=(500, 2))  # 9 tuples for 500 items: heavy collisions
    first = add_collision_level(codes)
    second = add_collision_level(codes.copy())
    np.testing.assert_array_equal(first.codes, second.codes)
    assert len({tuple(row) for row in first.codes}) == 500
    distinct = len({tuple(row) for row in codes})
    assert first.collision_rate == pytest.approx(1 - distinct / 500)
    assert collision_rate(codes) == pytest.approx(first.collision_rate)
    assert first.codes[:, -1].max() + 1 == first.last_level_size
    for group in {tuple(row) for row in codes}:  # inside a group: 0..n-1 by item order
        members = np.flatnonzero((codes == group).all(axis=1))
        np.testing.assert_array_equal(first.codes[members, -1], np.arange(len(members)))


def test_unique_codes_need_no_extra_code() -> None:
    codes = np.arange(12).reshape(6, 2)
    result = add_collision_level(codes)
    assert result.collision_rate == 0.0
    assert (result.codes[:, -1] == 0).all()


def test_fixed_collision_level_too_small_is_an_error() -> None:
    codes = np.zeros((5, 2), dtype=np.int64)
    with pytest.raises(DataError, match="5 items share one code tuple .* only 4 codes"):
        add_collision_level(codes, level_size=4)
    assert add_collision_level(codes, level_size=8).last_level_size == 8
    with pytest.raises(DataError, match="expected integers"):
        add_collision_level(np.zeros((3, 2), dtype=np.float32))

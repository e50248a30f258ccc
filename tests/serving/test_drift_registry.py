"""Drift arithmetic and registry rules that need no server (fast)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from torchrec_recsys.data.dataset import ExampleTable
from torchrec_recsys.data.features import DenseFeature, FeatureSpec, SparseFeature
from torchrec_recsys.data.jagged import JaggedColumn
from torchrec_recsys.errors import UserError
from torchrec_recsys.serving.drift import (
    DriftAccumulator,
    _frequency_buckets,
    psi,
    training_statistics,
)
from torchrec_recsys.serving.registry import Registry
from torchrec_recsys.serving.routing import Routing, user_bucket

SPEC = FeatureSpec(
    sparse=(SparseFeature("user_id", "t_user_id", 101, 4, "sum", "user"),),
    dense=(DenseFeature("user_log_activity", "user"),),
)


def _table(ids: list[list[int]], dense: list[float]) -> ExampleTable:
    n = len(ids)
    return ExampleTable(
        sparse={"user_id": JaggedColumn.from_lists(ids)},
        dense=torch.tensor(dense)[:, None],  # [N, 1]
        labels=torch.zeros(n),
        user_rows=torch.zeros(n, dtype=torch.int64),
        item_rows=torch.zeros(n, dtype=torch.int64),
    )


def test_psi_is_zero_for_equal_shares_and_grows_with_shift() -> None:
    even = np.full(4, 0.25)
    assert psi(even, even) == pytest.approx(0.0)
    assert psi(even, [0.3, 0.2, 0.25, 0.25]) < 0.1 < psi(even, [0.7, 0.1, 0.1, 0.1])


def test_frequency_buckets_split_training_mass_evenly_and_keep_oov_apart() -> None:
    counts = np.r_[0, np.arange(100, 0, -1)]  # row 0 = OOV, then decreasing popularity
    bucket_of = _frequency_buckets(counts, 10)
    assert bucket_of[0] == 0 and set(bucket_of[1:]) == set(range(1, 11))
    mass = np.bincount(bucket_of, weights=counts)[1:] / counts.sum()
    assert mass.max() - mass.min() < 0.06


def test_accumulator_is_quiet_on_training_like_traffic_and_flags_unseen_ids() -> None:
    rng = np.random.default_rng(0)
    users = rng.zipf(1.5, 5000) % 100 + 1  # training traffic over ids 1..100
    stats = training_statistics(_table([[u] for u in users], list(rng.random(5000))), SPEC)
    live = DriftAccumulator(stats, SPEC, window_seconds=3600)
    for u in rng.choice(users, 300):
        live.observe(_table([[int(u)]], [float(rng.random())]))
    assert live.report(min_requests=50)["flagged"] == []
    live.reset()
    for _ in range(100):  # cold users: no id at all
        live.observe(_table([[]], [0.0]))
    report = live.report(min_requests=50)
    assert set(report["flagged"]) == {"user_id", "user_log_activity"}
    assert report["features"][0]["unseen_share"] == 1.0
    live.reset()
    live.observe(_table([[]], [0.0]))
    assert live.report(min_requests=50)["flagged"] == []  # too few requests to judge


def test_canary_routing_is_a_sticky_hash_share() -> None:
    routing = Routing(
        generation=1, live="A", live_name="a", canary="B", canary_name="b", canary_share=0.25
    )
    users = [f"user-{i}" for i in range(4000)]
    chosen = [routing.choose(u) for u in users]
    share = sum(c == ("b", "B") for c in chosen) / len(users)
    assert abs(share - 0.25) < 0.03
    assert all(routing.choose(u) == c for u, c in zip(users[:50], chosen[:50], strict=True))
    assert all(0.0 <= user_bucket(u) < 1.0 for u in users[:50])
    assert Routing(generation=0, live=None, live_name=None).choose("x") is None


def test_registry_refuses_rollback_without_history_and_bad_requests(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    assert registry.versions() == [] and registry.state().live is None
    with pytest.raises(UserError, match="no previous live version"):
        registry.rollback()
    with pytest.raises(UserError, match="not in registry"):
        registry.promote("v9")
    with pytest.raises(UserError, match="outside"):
        registry.set_canary("v1", 1.5)
    not_a_bundle = tmp_path / "nope"
    not_a_bundle.mkdir()
    (not_a_bundle / "manifest.json").write_text(json.dumps({"schema": "x"}))
    with pytest.raises(UserError, match="not a serving-bundle manifest"):
        registry.add(not_a_bundle)
    assert registry.versions() == []

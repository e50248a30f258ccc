"""The planner setup pieces the trainer and the benchmarks share: topology and constraints."""

from __future__ import annotations

import pytest

from torchrec_recsys.config import ShardingConfig
from torchrec_recsys.distributed.sharding import planner_topology, sharding_constraints
from torchrec_recsys.errors import ConfigError

MiB = 2**20


def test_topology_caps_ddr_on_cpu_for_any_world_size() -> None:
    topology = planner_topology(2, "cpu", memory_budget_mb=100.0)
    assert topology.world_size == 2 and topology.local_world_size == 2
    assert topology.compute_device == "cpu"
    assert [d.storage.ddr for d in topology.devices] == [100 * MiB, 100 * MiB]
    assert all(d.storage.hbm == 0 for d in topology.devices)


def test_topology_without_budget_keeps_what_the_device_reports() -> None:
    capped = planner_topology(1, "cpu", memory_budget_mb=1.0)
    free = planner_topology(1, "cpu", local_world_size=1)
    assert free.devices[0].storage.ddr > capped.devices[0].storage.ddr == MiB


def test_constraints_pick_the_kernel_and_take_pooling_factors() -> None:
    options = ShardingConfig(default="row_wise", per_table={"b": "data_parallel"})
    constraints = sharding_constraints(["a", "b"], options, pooling_factors={"a": 20})
    assert constraints["a"].sharding_types == ["row_wise"]
    assert constraints["a"].compute_kernels == ["fused"]
    assert constraints["a"].pooling_factors == [20.0]
    assert constraints["b"].compute_kernels == ["dense"]
    default = sharding_constraints(["b"], ShardingConfig(default="data_parallel"))["b"]
    assert constraints["b"].pooling_factors == default.pooling_factors  # not named: unchanged


def test_constraints_reject_unknown_tables() -> None:
    with pytest.raises(ConfigError, match="unknown table"):
        sharding_constraints(["a"], ShardingConfig(per_table={"zz": "row_wise"}))

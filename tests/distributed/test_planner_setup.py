"""The planner setup pieces the trainer and the benchmarks share: topology and constraints."""

from __future__ import annotations

import pytest
import torch

from torchrec_recsys.config import ShardingConfig
from torchrec_recsys.distributed.sharding import (
    planner_topology,
    sharders,
    sharding_constraints,
)
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


def test_column_wise_min_dim_splits_a_narrow_table_over_two_ranks() -> None:
    from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
    from torchrec.distributed.planner import EmbeddingShardingPlanner

    table = EmbeddingBagConfig(name="t", embedding_dim=16, num_embeddings=100, feature_names=["f"])

    def shard_sizes(options: ShardingConfig) -> list[list[int]]:
        ebc = EmbeddingBagCollection(tables=[table], device=torch.device("meta"))
        planner = EmbeddingShardingPlanner(
            topology=planner_topology(2, "cpu"),
            constraints=sharding_constraints(["t"], options),
        )
        plan = planner.plan(ebc, sharders())
        spec = plan.get_plan_for_module("")["t"].sharding_spec
        return [list(s.shard_sizes) for s in spec.shards]

    # TorchRec's default smallest column shard is 128: a dim-16 table stays in one shard
    assert shard_sizes(ShardingConfig(default="column_wise")) == [[100, 16]]
    split = ShardingConfig(default="column_wise", column_wise_min_dim=8)
    assert shard_sizes(split) == [[100, 8], [100, 8]]
    # other sharding types ignore it
    rows = sharding_constraints(["t"], ShardingConfig(default="row_wise", column_wise_min_dim=8))
    assert rows["t"].min_partition is None

"""Planner -> DistributedModelParallel -> fused sparse + dense optimizers.

    model built on meta ──apply_optimizer_in_backward(sparse opt, table weights)──┐
    FeatureSpec tables + ShardingConfig ──> ParameterConstraints ──> planner ──> plan
    DMP(model, plan, sharders) ──> CombinedOptimizer([dmp.fused_optimizer, dense optimizer])

The sparse optimizer runs inside the backward pass (fbgemm's fused kernels update the rows
a batch touched); the dense optimizer steps the MLPs and any data-parallel tables.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.embedding_types import EmbeddingComputeKernel
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DataParallelWrapper, DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner
from torchrec.distributed.planner.types import (
    KernelConfig,
    ParameterConstraints,
    PlannerError,
    Topology,
    TopologyFactory,
    TrainerConfig,
)
from torchrec.distributed.types import ModuleSharder, ShardingEnv, ShardingPlan, ShardingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

from torchrec_recsys.config import OptimizerConfig, ShardingConfig
from torchrec_recsys.distributed.env import DistContext
from torchrec_recsys.errors import ConfigError

OPTIMIZER_CLASSES: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
    "rowwise_adagrad": RowWiseAdagrad,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}
"""Optimizer name -> class. Which names are valid as sparse (fused) or dense optimizers is
``config.SPARSE_OPTIMIZERS`` / ``config.DENSE_OPTIMIZERS``, checked by ``validate_config``."""


class AnyDeviceShardingTypes:
    """Mixin for a stock TorchRec sharder: offer every sharding type on CPU too.

    The stock sharders withhold row_wise/table_row_wise/grid_shard on CPU because gloo once
    lacked reduce-scatter (https://github.com/pytorch/torchrec/issues/1252); with current
    gloo they run and match the unsharded model (see tests/distributed/test_sharded_models.py
    and tests/distributed/test_sharded_ec.py).
    """

    def sharding_types(self, compute_device_type: str) -> list[str]:
        if compute_device_type == "cpu":
            return [t.value for t in ShardingType]
        return super().sharding_types(compute_device_type)  # type: ignore[misc]


class AnyDeviceEBCSharder(AnyDeviceShardingTypes, EmbeddingBagCollectionSharder):
    """EmbeddingBagCollection (pooled) sharder, all sharding types on CPU."""


class AnyDeviceECSharder(AnyDeviceShardingTypes, EmbeddingCollectionSharder):
    """EmbeddingCollection (unpooled, sequence) sharder, all sharding types on CPU."""


class SingleProcessWrapper(DataParallelWrapper):
    """DMP's data-parallel wrapper for a world of one process: leaves the dense part as it
    is. DistributedDataParallel there would only add its forward and backward hooks and an
    all-reduce over one rank (the identity) to every step; parameter and state-dict names
    are the same either way (DMP strips DDP's ``module.`` prefix)."""

    def wrap(self, dmp: DistributedModelParallel, env: ShardingEnv, device: torch.device) -> None:
        """Nothing to wrap."""


def sharders() -> list[ModuleSharder[nn.Module]]:
    """The sharders every plan and DistributedModelParallel wrap use: EBCs and ECs."""
    return [AnyDeviceEBCSharder(), AnyDeviceECSharder()]


_COLUMN_SPLIT = (ShardingType.COLUMN_WISE.value, ShardingType.TABLE_COLUMN_WISE.value)


def sharding_constraints(
    tables: Iterable[str],
    options: ShardingConfig,
    pooling_factors: Mapping[str, float] | None = None,
) -> dict[str, ParameterConstraints]:
    """One constraint per table: its sharding type and the kernel that type needs.

    Args:
        tables: table names.
        options: the sharding type of each table (``per_table``, else ``default``), and the
            smallest column shard of column-split tables (``column_wise_min_dim``).
        pooling_factors: table -> mean ids per sample, for the planner's cost and memory
            estimates; a table not named keeps TorchRec's default.
    """
    tables = list(tables)
    unknown = sorted(set(options.per_table) - set(tables))
    if unknown:
        raise ConfigError(
            f"sharding.per_table names unknown table(s) {unknown}; tables are {tables}"
        )
    constraints = {}
    for table in tables:
        kind = options.per_table.get(table, options.default)
        kernel = (
            EmbeddingComputeKernel.DENSE
            if kind == ShardingType.DATA_PARALLEL.value
            else EmbeddingComputeKernel.FUSED
        )
        extra: dict[str, Any] = {}
        if pooling_factors and table in pooling_factors:
            extra["pooling_factors"] = [float(pooling_factors[table])]
        if options.column_wise_min_dim and kind in _COLUMN_SPLIT:
            extra["min_partition"] = options.column_wise_min_dim
        constraints[table] = ParameterConstraints(
            sharding_types=[kind], compute_kernels=[kernel.value], **extra
        )
    return constraints


def planner_topology(
    world_size: int,
    device_type: str,
    memory_budget_mb: float = 0.0,
    local_world_size: int | None = None,
) -> Topology:
    """The planner's view of ``world_size`` ranks computing on ``device_type``.

    Args:
        world_size: ranks the plan is for (need not be the current process group's size).
        device_type: ``"cpu"`` or ``"cuda"``.
        memory_budget_mb: per-rank memory (MiB) the planner may use for tables; it caps DDR on
            CPU and HBM on CUDA, where the planner places embedding storage. 0 = what the
            device reports.
        local_world_size: ranks per host (default: all ``world_size`` ranks on one host).
    """
    cap = int(memory_budget_mb * 1024 * 1024) or None
    on_gpu = device_type == "cuda"
    return TopologyFactory.create_topology(
        trainer_config=TrainerConfig(
            world_size=world_size,
            local_world_size=world_size if local_world_size is None else int(local_world_size),
            hbm_cap_bytes=cap if on_gpu else None,
            ddr_cap_bytes=None if on_gpu else cap,
        ),
        kernel_config=KernelConfig(compute_device=device_type),
    )


def plan_sharding(
    model: nn.Module,
    tables: Iterable[str],
    options: ShardingConfig,
    ctx: DistContext,
    batch_size: int,
) -> ShardingPlan:
    """Ask TorchRec's planner for a plan obeying ``options`` on this world (collective call)."""
    cap = int(options.memory_budget_mb * 1024 * 1024) or None
    topology = planner_topology(
        ctx.world_size,
        ctx.device.type,
        options.memory_budget_mb,
        local_world_size=_local_world_size(ctx),
    )
    constraints = sharding_constraints(tables, options)
    planner = EmbeddingShardingPlanner(
        topology=topology, batch_size=batch_size, constraints=constraints, debug=False
    )
    try:
        return planner.collective_plan(model, sharders(), dist.GroupMember.WORLD)
    except PlannerError as e:
        reason = str(e).strip().splitlines()[0]
        raise ConfigError(
            f"the sharding planner found no plan for {ctx.world_size} process(es) on "
            f"{ctx.device.type} with sharding {constraints_summary(constraints)}"
            f"{f' and a {options.memory_budget_mb:g} MB per-rank budget' if cap else ''}: {reason}"
        ) from None


def constraints_summary(constraints: dict[str, ParameterConstraints]) -> str:
    return ", ".join(f"{t}={c.sharding_types[0]}" for t, c in constraints.items())  # type: ignore[index]


def _local_world_size(ctx: DistContext) -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size))


def planner_hosts(ctx: DistContext) -> int:
    """Hosts the planner's topology sees: world size / processes per host (torchrun's
    ``LOCAL_WORLD_SIZE``), e.g. 2 for a 2-node x 1-process job."""
    return max(ctx.world_size // _local_world_size(ctx), 1)


def fuse_sparse_optimizer(model: nn.Module, name: str, lr: float) -> None:
    """Attach the sparse optimizer to every embedding table (run inside backward)."""
    params = [
        p
        for module in model.modules()
        if isinstance(module, EmbeddingBagCollection | EmbeddingCollection)
        for p in module.parameters()
    ]
    kwargs = {"lr": lr}
    if name == "adagrad":
        kwargs["eps"] = 1e-8
    apply_optimizer_in_backward(OPTIMIZER_CLASSES[name], params, kwargs)


def shard_model(
    model: nn.Module,
    tables: Iterable[str],
    sharding: ShardingConfig,
    optim: OptimizerConfig,
    ctx: DistContext,
    batch_size: int,
) -> tuple[DistributedModelParallel, CombinedOptimizer]:
    """Plan, wrap in DMP and build the combined (fused sparse + dense) optimizer.

    ``model`` must hold its EmbeddingBagCollections / EmbeddingCollections on ``meta``.
    """
    fuse_sparse_optimizer(model, optim.sparse, optim.sparse_lr)
    plan = plan_sharding(model, tables, sharding, ctx, batch_size)
    dmp = DistributedModelParallel(
        module=model,
        device=ctx.device,
        plan=plan,
        sharders=sharders(),
        data_parallel_wrapper=SingleProcessWrapper() if ctx.world_size == 1 else None,
    )
    dense_params = dict(in_backward_optimizer_filter(dmp.named_parameters()))
    dense_cls = OPTIMIZER_CLASSES[optim.dense]
    dense = KeyedOptimizerWrapper(
        dense_params,
        # foreach: one multi-tensor kernel per update op instead of a Python loop over the
        # parameters (torch picks it by itself only for CUDA tensors)
        lambda ps: dense_cls(ps, lr=optim.dense_lr, weight_decay=optim.weight_decay, foreach=True),
    )
    return dmp, CombinedOptimizer([dmp.fused_optimizer, dense])

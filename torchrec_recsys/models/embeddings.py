"""EmbeddingBagCollection / EmbeddingCollection construction (the only place tables are made)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torchrec.modules.embedding_configs import EmbeddingConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection

from torchrec_recsys.data.features import FeatureSpec, SparseFeature


def build_ebc(
    spec: FeatureSpec, device: torch.device | str = "meta", features: Iterable[str] | None = None
) -> EmbeddingBagCollection:
    """An EBC holding the tables read by ``features`` (default: every sparse feature).

    Build on ``meta`` for sharding: DistributedModelParallel materialises (and on CPU
    re-initialises) the shards on each rank; weights are loaded afterwards when needed.
    """
    return EmbeddingBagCollection(
        tables=spec.embedding_bag_configs(features), device=torch.device(device)
    )


def build_ec(
    features: Sequence[SparseFeature], device: torch.device | str = "meta"
) -> EmbeddingCollection:
    """An unpooled EmbeddingCollection (one embedding per sequence position) of ``features``.

    The sequence models' counterpart of :func:`build_ebc`, sharded by DMP the same way
    (TorchRec's examples/bert4rec uses it for its item sequences). Features naming the same
    table share it.
    """
    configs: dict[str, EmbeddingConfig] = {}
    for f in features:
        if f.table in configs:
            configs[f.table].feature_names.append(f.name)
            continue
        configs[f.table] = EmbeddingConfig(
            name=f.table,
            num_embeddings=f.num_embeddings,
            embedding_dim=f.embedding_dim,
            feature_names=[f.name],
        )
    return EmbeddingCollection(tables=list(configs.values()), device=torch.device(device))

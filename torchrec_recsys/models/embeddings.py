"""EmbeddingBagCollection construction from the FeatureSpec (the only place tables are made)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from torchrec_recsys.data.features import FeatureSpec


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

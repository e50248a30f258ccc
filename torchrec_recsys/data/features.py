"""FeatureSpec: the single source of truth for every model input.

It names each sparse feature (its KJT key), the embedding table it reads (several features
may share one table: ``item_id`` and ``user_history`` both read ``t_item_id``), the table's
rows and dimension, pooling, and which tower reads it; plus the dense features.
``EmbeddingBagConfig``s, KJT keys and sharding constraints are all derived from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType

from torchrec_recsys.errors import ConfigError

USER, ITEM = "user", "item"
POOLINGS = {"sum": PoolingType.SUM, "mean": PoolingType.MEAN}


@dataclass(frozen=True)
class SparseFeature:
    """One KJT key and the embedding table it reads."""

    name: str
    """KJT key, e.g. ``item_genres``."""
    table: str
    """Embedding table name, e.g. ``t_item_id`` (shared tables have one entry per feature)."""
    num_embeddings: int
    """Rows of the table; valid IDs are ``0 .. num_embeddings - 1`` (0 = out of vocabulary)."""
    embedding_dim: int
    """Columns of the table."""
    pooling: str
    """``sum`` or ``mean`` over the values of one example."""
    tower: str
    """``user`` (query side) or ``item`` (candidate side)."""


@dataclass(frozen=True)
class DenseFeature:
    """One column of the dense feature matrix."""

    name: str
    tower: str


@dataclass(frozen=True)
class FeatureSpec:
    """All features of an experiment, in KJT key order."""

    sparse: tuple[SparseFeature, ...]
    dense: tuple[DenseFeature, ...]

    def __post_init__(self) -> None:
        names = [f.name for f in self.sparse]
        if len(set(names)) != len(names):
            raise ConfigError(f"feature names must be unique, got {names}")
        by_table: dict[str, SparseFeature] = {}
        for f in self.sparse:
            first = by_table.setdefault(f.table, f)
            if (first.num_embeddings, first.embedding_dim, first.pooling) != (
                f.num_embeddings,
                f.embedding_dim,
                f.pooling,
            ):
                raise ConfigError(
                    f"features {first.name!r} and {f.name!r} share table {f.table!r} but differ "
                    "in rows, dimension or pooling"
                )

    def sparse_features(self, tower: str | None = None) -> list[SparseFeature]:
        return [f for f in self.sparse if tower is None or f.tower == tower]

    def sparse_names(self, tower: str | None = None) -> list[str]:
        """KJT keys, in spec order, optionally of one tower."""
        return [f.name for f in self.sparse_features(tower)]

    def dense_names(self, tower: str | None = None) -> list[str]:
        return [f.name for f in self.dense if tower is None or f.tower == tower]

    def dense_indices(self, tower: str) -> list[int]:
        """Columns of the dense matrix that belong to ``tower``."""
        return [i for i, f in enumerate(self.dense) if f.tower == tower]

    def feature(self, name: str) -> SparseFeature:
        for f in self.sparse:
            if f.name == name:
                return f
        raise KeyError(f"unknown sparse feature {name!r}; known: {self.sparse_names()}")

    def table_names(self) -> list[str]:
        return list(dict.fromkeys(f.table for f in self.sparse))

    def embedding_bag_configs(
        self, features: Iterable[str] | None = None
    ) -> list[EmbeddingBagConfig]:
        """One ``EmbeddingBagConfig`` per table read by ``features`` (default: all)."""
        wanted = set(self.sparse_names() if features is None else features)
        configs: dict[str, EmbeddingBagConfig] = {}
        for f in self.sparse:
            if f.name not in wanted:
                continue
            if f.table in configs:
                configs[f.table].feature_names.append(f.name)
                continue
            configs[f.table] = EmbeddingBagConfig(
                name=f.table,
                num_embeddings=f.num_embeddings,
                embedding_dim=f.embedding_dim,
                feature_names=[f.name],
                pooling=POOLINGS[f.pooling],
            )
        return list(configs.values())

    def to_dict(self) -> dict[str, object]:
        return {
            "sparse": [asdict(f) for f in self.sparse],
            "dense": [asdict(f) for f in self.dense],
        }

    @classmethod
    def from_dict(cls, data: dict, embedding_dim: int | None = None) -> FeatureSpec:
        """The spec :meth:`to_dict` wrote; ``embedding_dim``, when given, sets every table's
        dimension (a model setting, not a property of the data: shards store none)."""
        dim = {} if embedding_dim is None else {"embedding_dim": embedding_dim}
        return cls(
            sparse=tuple(SparseFeature(**{**f, **dim}) for f in data["sparse"]),
            dense=tuple(DenseFeature(**f) for f in data["dense"]),
        )

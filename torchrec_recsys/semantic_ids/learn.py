"""Glue of the semantic-ID flow; the only module that knows every step::

item text --TextEncoder--> embeddings [N, D] --RQVAE | RQKMeans--> codes [N, L]
    --add_collision_level--> SIDs [N, L+1] --> SIDTable (+ SIDReport)
    --item_token_features--> {sid_l*, sid_p*: token ids [N'] for any item vocabulary}
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from torchrec_recsys.errors import ConfigError, DataError
from torchrec_recsys.semantic_ids.base import SIDQuantizer
from torchrec_recsys.semantic_ids.collisions import CollisionResult, add_collision_level
from torchrec_recsys.semantic_ids.report import GenreInput, SIDReport, build_report
from torchrec_recsys.semantic_ids.rq_kmeans import RQKMeans, RQKMeansConfig
from torchrec_recsys.semantic_ids.rqvae import RQVAE, RQVAEConfig
from torchrec_recsys.semantic_ids.store import SIDTable
from torchrec_recsys.semantic_ids.tokens import UNKNOWN_TOKEN, SIDTokenFeature, sid_token_features

METHODS = ("rqvae", "rq_kmeans")


@dataclass
class SIDResult:
    """Everything one run of :func:`learn_semantic_ids` produced."""

    table: SIDTable
    """Item ids, SIDs [N, L(+1)], codebooks, weights: what :func:`.store.save_sid_table` writes."""
    report: SIDReport
    """Quality numbers of the quantizer codes (before the collision level)."""
    quantizer: SIDQuantizer
    """The fitted RQ-VAE or residual k-means."""
    collisions: CollisionResult | None
    """Collision-level details; None when no collision level was added."""
    timings: dict[str, float] = field(default_factory=dict)
    """Wall seconds: ``fit``, ``encode_codes``, ``report``."""


def make_quantizer(
    method: str, config: RQVAEConfig | RQKMeansConfig | None = None
) -> RQVAE | RQKMeans:
    """Unfitted quantizer for ``method`` (``rqvae`` or ``rq_kmeans``) with its default config.

    Raises:
        ConfigError: unknown method, or a config of the other method's type.
    """
    if method == "rqvae" and (config is None or isinstance(config, RQVAEConfig)):
        return RQVAE(config)
    if method == "rq_kmeans" and (config is None or isinstance(config, RQKMeansConfig)):
        return RQKMeans(config)
    raise ConfigError(
        f"semantic-ID method {method!r} with config {type(config).__name__} is invalid; "
        f"expected one of {', '.join(METHODS)} with its own config class"
    )


def learn_semantic_ids(
    item_ids: Sequence[str],
    embeddings: np.ndarray,
    quantizer: RQVAE | RQKMeans,
    *,
    collision_level: bool = True,
    genres: GenreInput | None = None,
    fallback_texts: int | None = None,
) -> SIDResult:
    """Fit ``quantizer`` on embeddings [N, D], derive SIDs and the report.

    Args:
        item_ids: N item ids, row-aligned with ``embeddings``.
        embeddings: [N, D] item embeddings (e.g. :attr:`.encoder.EncodeResult.embeddings`).
        quantizer: an unfitted :class:`RQVAE` or :class:`RQKMeans`.
        collision_level: append the extra level that makes every SID unique.
        genres: optional per-item genres for the coherence numbers.
        fallback_texts: the encoder's missing-text count, carried into the report.
    """
    if len(item_ids) != np.asarray(embeddings).shape[0]:
        raise DataError(
            f"got {len(item_ids)} item ids for {np.asarray(embeddings).shape[0]} embeddings"
        )
    timings: dict[str, float] = {}
    start = time.perf_counter()
    quantizer.fit(embeddings)
    timings["fit"] = time.perf_counter() - start
    start = time.perf_counter()
    codes = quantizer.encode(embeddings)  # [N, L]
    reconstruction = quantizer.decode(codes)  # [N, D]
    timings["encode_codes"] = time.perf_counter() - start
    start = time.perf_counter()
    method = "rqvae" if isinstance(quantizer, RQVAE) else "rq_kmeans"
    report = build_report(
        codes,
        quantizer.codebook_size,
        method=method,
        embeddings=embeddings,
        reconstruction=reconstruction,
        genres=genres,
        fallback_texts=fallback_texts,
    )
    timings["report"] = time.perf_counter() - start
    sizes = [quantizer.codebook_size] * quantizer.levels
    collisions = None
    if collision_level:
        collisions = add_collision_level(codes)
        codes = collisions.codes  # [N, L + 1]
        sizes.append(collisions.last_level_size)
    meta: dict = {
        "method": method,
        "config": quantizer.config.to_dict(),
        "collision_level": collision_level,
        "report": report.to_dict(),
    }
    state = {}
    if isinstance(quantizer, RQVAE):
        meta["input_dim"] = quantizer.input_dim
        state = quantizer.state_dict()
    table = SIDTable(
        item_ids=list(item_ids),
        codes=codes,
        codebook_sizes=sizes,
        codebooks=quantizer.codebooks(),
        model_state=state,
        meta=meta,
    )
    return SIDResult(table, report, quantizer, collisions, timings)


def quantizer_from_table(table: SIDTable) -> RQVAE | RQKMeans:
    """Rebuild the fitted quantizer stored in a table (to encode new items the same way)."""
    method = table.meta.get("method")
    if method == "rqvae":
        config = RQVAEConfig.from_dict(table.meta["config"])
        return RQVAE.from_state(config, int(table.meta["input_dim"]), table.model_state)
    if method == "rq_kmeans":
        config = RQKMeansConfig(**table.meta["config"])
        return RQKMeans.from_codebooks(config, table.codebooks)
    raise DataError(f"SID table method {method!r} is unknown; expected one of {', '.join(METHODS)}")


def item_token_features(
    table: SIDTable,
    item_ids: Sequence[str],
    *,
    unigrams: bool = True,
    prefixes: bool = True,
    max_cardinality: int | None = None,
) -> dict[str, SIDTokenFeature]:
    """SID token features for an item vocabulary [N'] (e.g. the FeatureSpec's item index).

    Items missing from the table get :data:`.tokens.UNKNOWN_TOKEN` (0) in every feature.
    """
    features = sid_token_features(
        table.codes,
        table.codebook_sizes,
        unigrams=unigrams,
        prefixes=prefixes,
        max_cardinality=max_cardinality,
    )
    rows = table.rows(list(item_ids))  # [N'], -1 = unknown
    known = rows >= 0
    out = {}
    for name, feature in features.items():
        ids = np.full(len(rows), UNKNOWN_TOKEN, dtype=np.int64)  # [N']
        ids[known] = feature.ids[rows[known]]
        out[name] = SIDTokenFeature(ids, feature.cardinality)
    return out

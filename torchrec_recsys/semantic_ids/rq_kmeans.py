"""Residual k-means (RQ-KMeans): the training-free baseline for semantic IDs.

::

    r_1 = x;  C_l = kmeans(r_l, K);  c_l = nearest(r_l, C_l);  r_{l+1} = r_l - C_l[c_l]
    x_hat = sum_l C_l[c_l]

No encoder or decoder: codebooks live in the embedding space itself ([L, K, D_in]).
Same interface as :class:`~torchrec_recsys.semantic_ids.rqvae.RQVAE`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from torchrec_recsys.errors import DataError
from torchrec_recsys.semantic_ids.base import as_embeddings, check_codes, check_levels
from torchrec_recsys.semantic_ids.kmeans import kmeans


@dataclass
class RQKMeansConfig:
    """Sizes of residual k-means; defaults match :class:`~.rqvae.RQVAEConfig`'s codes."""

    levels: int = 3
    """Residual levels L."""
    codebook_size: int = 64
    """Centroids per level K."""
    iters: int = 25
    """Lloyd iterations per level."""
    seed: int = 0
    """Seed of the k-means at level 1 (level l uses seed + l - 1)."""

    def __post_init__(self) -> None:
        check_levels(self.levels, self.codebook_size)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return dataclasses.asdict(self)


class RQKMeans:
    """Residual k-means with ``fit``, ``encode``, ``decode`` and ``reconstruct``."""

    def __init__(self, config: RQKMeansConfig | None = None) -> None:
        self.config = config if config is not None else RQKMeansConfig()
        self._codebooks: np.ndarray | None = None  # [L, K, D]

    @property
    def levels(self) -> int:
        """Residual levels L."""
        return self.config.levels

    @property
    def codebook_size(self) -> int:
        """Centroids per level K."""
        return self.config.codebook_size

    def fit(self, embeddings: np.ndarray) -> Self:
        """Run k-means on each level's residuals of ``embeddings`` [N, D]; returns ``self``.

        Raises:
            DataError: ``codebook_size`` exceeds the number of items (both numbers named).
        """
        cfg = self.config
        residual = as_embeddings(embeddings, cfg.codebook_size).copy()  # [N, D]
        books = []
        for level in range(cfg.levels):
            centroids, assign = kmeans(
                residual, cfg.codebook_size, iters=cfg.iters, seed=cfg.seed + level
            )  # [K, D], [N]
            books.append(centroids)
            residual -= centroids[assign]  # [N, D]
        self._codebooks = np.stack(books)  # [L, K, D]
        return self

    def _require(self) -> np.ndarray:
        if self._codebooks is None:
            raise DataError("this RQKMeans has not been fitted; call fit(embeddings) first")
        return self._codebooks

    def encode(self, embeddings: np.ndarray) -> np.ndarray:
        """Codes [N, L] int64: greedy nearest centroid on each level's residual."""
        books = self._require()  # [L, K, D]
        residual = as_embeddings(embeddings).copy()  # [N, D]
        if residual.shape[1] != books.shape[2]:
            raise DataError(
                f"embeddings have width {residual.shape[1]}; this RQKMeans was fitted on "
                f"width {books.shape[2]}"
            )
        codes = np.empty((residual.shape[0], books.shape[0]), dtype=np.int64)  # [N, L]
        for level, centroids in enumerate(books):
            distances = (
                -2.0 * residual @ centroids.T + (centroids**2).sum(-1)  # [N, K]
            )  # ||r||^2 is constant per row and does not change the argmin
            codes[:, level] = distances.argmin(axis=1)
            residual -= centroids[codes[:, level]]
        return codes

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Sum of chosen centroids: codes [N, l] (l <= L leading levels) -> [N, D] float32."""
        books = self._require()  # [L, K, D]
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] > books.shape[0]:
            raise DataError(
                f"codes have shape {codes.shape}; expected [items, <= {books.shape[0]}]"
            )
        codes = check_codes(codes, [books.shape[1]] * codes.shape[1])  # [N, l]
        out = np.zeros((codes.shape[0], books.shape[2]), dtype=np.float32)  # [N, D]
        for level in range(codes.shape[1]):
            out += books[level][codes[:, level]]
        return out

    def reconstruct(self, embeddings: np.ndarray) -> np.ndarray:
        """Encode then decode: [N, D] -> [N, D] float32."""
        return self.decode(self.encode(embeddings))

    def codebooks(self) -> np.ndarray:
        """Centroids [L, K, D] float32 (embedding space)."""
        return self._require().copy()

    @classmethod
    def from_codebooks(cls, config: RQKMeansConfig, codebooks: np.ndarray) -> RQKMeans:
        """Rebuild a fitted model from saved centroids [L, K, D]."""
        books = np.asarray(codebooks, dtype=np.float32)
        if books.shape[:2] != (config.levels, config.codebook_size):
            raise DataError(
                f"codebooks have shape {books.shape}; expected "
                f"[{config.levels}, {config.codebook_size}, dim]"
            )
        model = cls(config)
        model._codebooks = books.copy()
        return model

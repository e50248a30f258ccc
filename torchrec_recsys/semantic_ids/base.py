"""What every semantic-ID quantizer shares: the fit/encode/reconstruct interface and input checks.

Both :class:`~torchrec_recsys.semantic_ids.rqvae.RQVAE` and
:class:`~torchrec_recsys.semantic_ids.rq_kmeans.RQKMeans` satisfy :class:`SIDQuantizer`, so the
pipeline, the store and the report do not care which one produced the codes.
"""

from __future__ import annotations

from typing import Protocol, Self, runtime_checkable

import numpy as np

from torchrec_recsys.errors import ConfigError, DataError


@runtime_checkable
class SIDQuantizer(Protocol):
    """Learns L residual codebooks over item embeddings and maps items to code tuples."""

    levels: int
    """Number of residual levels L (codes per item, before any collision level)."""
    codebook_size: int
    """Codes per level K."""

    def fit(self, embeddings: np.ndarray) -> Self:
        """Learn the codebooks from ``embeddings`` [N, D]; returns ``self``."""
        ...

    def encode(self, embeddings: np.ndarray) -> np.ndarray:
        """Codes [N, L] int64, each in ``[0, K)``."""
        ...

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Embeddings [N, D] float32 from codes [N, l] (the first l <= L levels)."""
        ...

    def reconstruct(self, embeddings: np.ndarray) -> np.ndarray:
        """Embeddings [N, D] float32 rebuilt from their codes (encode then decode)."""
        ...

    def codebooks(self) -> np.ndarray:
        """Codebooks [L, K, D_code] float32 (D_code is the space the residuals live in)."""
        ...


def check_levels(levels: int, codebook_size: int) -> None:
    """Fail fast on a non-positive number of levels or codebook size.

    Raises:
        ConfigError: ``levels < 1`` or ``codebook_size < 1``.
    """
    if levels < 1:
        raise ConfigError(f"levels = {levels} is invalid; expected at least 1")
    if codebook_size < 1:
        raise ConfigError(f"codebook_size = {codebook_size} is invalid; expected at least 1")


def as_embeddings(embeddings: np.ndarray, codebook_size: int | None = None) -> np.ndarray:
    """Validate an embedding matrix and return it as contiguous float32 [N, D].

    Args:
        embeddings: array-like [N, D] of finite numbers.
        codebook_size: when given (fitting), the catalogue must hold at least this many items,
            because k-means cannot place K centroids on fewer than K points.

    Raises:
        DataError: not 2-D, empty, non-finite, or fewer items than ``codebook_size``.
    """
    array = np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32))  # [N, D]
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(
            f"embeddings have shape {tuple(array.shape)}; expected a non-empty [items, dim] matrix"
        )
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).any(axis=1).sum())
        raise DataError(f"embeddings hold NaN or infinite values in {bad} row(s); expected finite")
    if codebook_size is not None and codebook_size > array.shape[0]:
        raise DataError(
            f"codebook size {codebook_size} is larger than the number of items "
            f"{array.shape[0]}; use a codebook size of at most {array.shape[0]}"
        )
    return array


def check_codes(codes: np.ndarray, codebook_sizes: list[int] | tuple[int, ...]) -> np.ndarray:
    """Validate codes [N, L] against per-level sizes and return them as int64.

    Raises:
        DataError: wrong shape, or a code outside ``[0, K_l)`` at some level.
    """
    array = np.asarray(codes)
    if array.ndim != 2 or array.shape[1] != len(codebook_sizes):
        raise DataError(
            f"codes have shape {tuple(array.shape)}; expected [items, {len(codebook_sizes)}] "
            f"(one column per codebook size {list(codebook_sizes)})"
        )
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"codes have dtype {array.dtype}; expected integers")
    array = array.astype(np.int64, copy=False)  # [N, L]
    for level, size in enumerate(codebook_sizes):
        column = array[:, level]  # [N]
        if column.size and (column.min() < 0 or column.max() >= size):
            raise DataError(
                f"level {level + 1} codes span [{column.min()}, {column.max()}]; "
                f"expected values in [0, {size})"
            )
    return array

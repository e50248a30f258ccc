"""k-means on FAISS, shared by the RQ-VAE codebook initialisation and residual k-means."""

from __future__ import annotations

import faiss
import numpy as np


def kmeans(points: np.ndarray, k: int, *, iters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss k-means: points [N, D] float32 -> centroids [k, D] float32, assignment [N] int64."""
    points = np.ascontiguousarray(points, dtype=np.float32)
    km = faiss.Kmeans(
        points.shape[1],
        k,
        niter=iters,
        seed=seed,
        verbose=False,
        min_points_per_centroid=1,  # small catalogues: no "please provide more points" warning
        max_points_per_centroid=max(256, -(-points.shape[0] // k)),  # no silent subsampling
    )
    km.train(points)
    _, assign = km.index.search(points, 1)  # [N, 1]
    return km.centroids.copy(), assign[:, 0].astype(np.int64)

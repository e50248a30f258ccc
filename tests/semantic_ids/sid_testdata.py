"""Seeded synthetic inputs shared by the semantic-ID tests (a plain module, not a test)."""

from __future__ import annotations

import numpy as np


def clustered_embeddings(
    n: int = 300, dim: int = 16, clusters: int = 8, noise: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors [n, dim] around ``clusters`` random centres, and each row's cluster [n]."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))  # [C, D]
    label = rng.integers(0, clusters, size=n)  # [N]
    x = centres[label] + noise * rng.normal(size=(n, dim))  # [N, D]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), label

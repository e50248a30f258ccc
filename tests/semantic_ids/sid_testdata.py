"""Seeded synthetic inputs and a thread limit shared by the semantic-ID tests (not a test).

Deliberately not a ``conftest.py``: ``tests/conftest.py`` is imported by name elsewhere
(``from conftest import ...``) and a second conftest module would shadow it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Run each test on one torch thread (shared 2-core machine), then restore the setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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

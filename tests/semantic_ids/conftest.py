"""Semantic-ID tests: one torch thread each, to keep CPU use moderate on the shared machine."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)

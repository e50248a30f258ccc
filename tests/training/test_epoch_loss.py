"""The trainer's per-step loss bookkeeping: the same sum and first bad step as adding each
step's loss to a float64 tensor on the device."""

from __future__ import annotations

import torch

from torchrec_recsys.training.trainer import EpochLoss


def _device_sum(start: float, losses: list[torch.Tensor]) -> float:
    total = torch.tensor(start, dtype=torch.float64)
    for loss in losses:
        total += loss.double()
    return float(total)


def test_sum_equals_the_per_step_float64_sum_across_buffer_refills() -> None:
    g = torch.Generator().manual_seed(0)
    losses = [torch.rand((), generator=g) * 3 for _ in range(23)]  # float32, 0-dim
    tally = EpochLoss(1.25, first_step=8, device=torch.device("cpu"), capacity=5)
    for i, loss in enumerate(losses):
        tally.add(loss)
        if i == 11:  # a read in the middle (a log step) changes nothing
            assert tally.read() == (_device_sum(1.25, losses[:12]), None)
    assert tally.read() == (_device_sum(1.25, losses), None)


def test_first_non_finite_step_is_reported_by_its_global_step() -> None:
    tally = EpochLoss(0.0, first_step=101, device=torch.device("cpu"), capacity=4)
    for value in (0.5, 0.25, 0.5, 0.5, 0.5, float("nan"), float("inf"), 0.5):
        tally.add(torch.tensor(value))
    _, bad = tally.read()
    assert bad == 106  # the 6th loss added, counting from global step 101

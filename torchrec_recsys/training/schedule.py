"""The dense learning rate over a run: linear warm-up, then constant, cosine or linear decay.

    factor(step) = (step + 1) / warmup_steps                         step < warmup_steps
                   1                                                 constant
                   min + (1 - min) * (1 + cos(pi * p)) / 2           warmup_cosine
                   min + (1 - min) * (1 - p)                         warmup_linear
    p = (step - warmup_steps) / max(total_steps - warmup_steps, 1), clipped to [0, 1]

It is ``torch.optim.lr_scheduler.LambdaLR`` over the dense optimizer, built with the run's
``global_step`` as its position, so a resumed run continues the same curve (the factor is a
function of the step alone). The fused sparse (embedding) optimizer keeps its own rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from torchrec_recsys.errors import ConfigError

SCHEDULES = ("constant", "warmup_cosine", "warmup_linear")


def lr_factor(
    kind: str, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0
) -> Callable[[int], float]:
    """The multiplier of the peak learning rate at each 0-based step (see the module doc).

    Raises:
        ConfigError: unknown ``kind``.
    """
    if kind not in SCHEDULES:
        raise ConfigError(f"optimizer.schedule = {kind!r} is not one of {', '.join(SCHEDULES)}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "constant":
            return 1.0
        p = min(max((step - warmup_steps) / max(total_steps - warmup_steps, 1), 0.0), 1.0)
        decay = (1 + math.cos(math.pi * p)) / 2 if kind == "warmup_cosine" else 1 - p
        return min_lr_ratio + (1 - min_lr_ratio) * decay

    return factor


def build_schedule(
    optimizer: Optimizer,
    base_lr: float,
    kind: str,
    total_steps: int,
    warmup_steps: int = 0,
    min_lr_ratio: float = 0.0,
    global_step: int = 0,
) -> LambdaLR:
    """``LambdaLR`` over ``optimizer`` with peak ``base_lr``, positioned at ``global_step``
    (the learning rate of that step is set now; call ``step()`` after each optimizer step)."""
    for group in optimizer.param_groups:
        group["initial_lr"] = base_lr  # a resumed optimizer holds the last scheduled rate
    factor = lr_factor(kind, total_steps, warmup_steps, min_lr_ratio)
    return LambdaLR(optimizer, factor, last_epoch=global_step - 1)

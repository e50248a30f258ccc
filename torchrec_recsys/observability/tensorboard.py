"""TensorBoard events, written by rank 0 only (other ranks get a no-op writer).

What a run writes (``<run dir>/tensorboard/``), so runs line up side by side in one
``tensorboard --logdir runs``:

    train/loss                 the step's loss, every ``train.log_every`` steps
    train/loss_mean            mean loss of the steps since the previous log step
    train/samples_per_second   throughput of the steps since the previous log step
    lr/<optimizer>/group<i>    learning rate of each optimizer's parameter group
    train/epoch_loss, train/epoch_samples_per_second, val/*   at each epoch end
    test/*                     at the end
    HParams tab                the resolved config (``section.key``) + final val/test metrics
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

HParam = int | float | str | bool


def flatten_hparams(config: Mapping[str, Any], prefix: str = "") -> dict[str, HParam]:
    """``{"train": {"epochs": 2}}`` -> ``{"train.epochs": 2}``: nested tables become dotted
    keys; lists (and None) become their text, as the HParams tab takes scalars and strings."""
    out: dict[str, HParam] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_hparams(value, f"{dotted}."))
        elif isinstance(value, bool | int | float | str):
            out[dotted] = value
        else:
            out[dotted] = str(value)
    return out


class ScalarLogger:
    """``log(step, {"train/loss": 0.5, ...})``; a no-op unless ``enabled``."""

    def __init__(self, log_dir: Path, enabled: bool) -> None:
        self._writer = SummaryWriter(log_dir=str(log_dir)) if enabled else None

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        if self._writer is None:
            return
        for name, value in scalars.items():
            self._writer.add_scalar(name, value, global_step=step)

    def hparams(
        self, params: Mapping[str, HParam], metrics: Mapping[str, float], step: int
    ) -> None:
        """One HParams session for this run: ``params`` (e.g. :func:`flatten_hparams` of the
        resolved config) and its final ``metrics`` (tags such as ``hparams/test_auc``; the
        non-finite ones are left out). Written into this run's own folder, so each run is one
        row of TensorBoard's HParams tab."""
        if self._writer is None:
            return
        finite = {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
        # run_name "." keeps the session in log_dir (the default makes a timestamped subfolder)
        self._writer.add_hparams(dict(params), finite, run_name=".", global_step=step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

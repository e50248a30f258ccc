"""TensorBoard scalars, written by rank 0 only (other ranks get a no-op writer)."""

from __future__ import annotations

from pathlib import Path

from torch.utils.tensorboard import SummaryWriter


class ScalarLogger:
    """``log(step, {"train/loss": 0.5, ...})``; a no-op unless ``enabled``."""

    def __init__(self, log_dir: Path, enabled: bool) -> None:
        self._writer = SummaryWriter(log_dir=str(log_dir)) if enabled else None

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if self._writer is None:
            return
        for name, value in scalars.items():
            self._writer.add_scalar(name, value, global_step=step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

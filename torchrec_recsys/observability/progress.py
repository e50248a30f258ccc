"""Training progress: a tqdm bar on a terminal, a line now and then without one.

Under torchx, Slurm or a pipe there is no terminal and a bar would print one line per
step; there ``Progress`` prints a line every ``every_fraction`` of the epoch or every
``every_seconds``, whichever comes first.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm


class Progress:
    """Progress of one epoch: ``update()`` after every step, ``set_loss(loss)`` whenever the
    loss is read back (the trainer reads it only at log steps), ``close()`` at the end."""

    def __init__(
        self,
        total: int,
        initial: int,
        desc: str,
        enabled: bool,
        stream: TextIO | None = None,
        every_fraction: float = 0.1,
        every_seconds: float = 60.0,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total, self.done, self.desc = total, initial, desc
        self.terminal = enabled and self.stream.isatty()
        self.lines = enabled and not self.terminal
        self.bar = tqdm(
            total=total,
            initial=initial,
            desc=desc,
            disable=not self.terminal,
            dynamic_ncols=True,
            file=self.stream,
        )
        self.every_steps = max(1, int(total * every_fraction))
        self.every_seconds = every_seconds
        self.start = self.last_time = time.monotonic()
        self.start_step = self.last_step = initial
        self.loss = float("nan")

    def set_loss(self, loss: float) -> None:
        """The latest loss read back, shown from now on."""
        self.loss = loss
        if self.terminal:
            self.bar.set_postfix(loss=f"{loss:.4f}")

    def update(self) -> None:
        """One more step done."""
        self.done += 1
        if self.terminal:
            self.bar.update(1)
            return
        if not self.lines:
            return
        now = time.monotonic()
        due = self.done - self.last_step >= self.every_steps or self.done == self.total
        if due or now - self.last_time >= self.every_seconds:
            rate = (self.done - self.start_step) / max(now - self.start, 1e-9)
            print(
                f"{self.desc}: step {self.done}/{self.total} "
                f"({100 * self.done / max(self.total, 1):.0f}%) loss={self.loss:.4f} "
                f"{rate:.1f} steps/s",
                file=self.stream,
                flush=True,
            )
            self.last_time, self.last_step = now, self.done

    def close(self) -> None:
        self.bar.close()

"""Progress of long work: a tqdm bar on a terminal, a line now and then without one.

Under torchx, Slurm or a pipe there is no terminal and a bar would write one carriage-return
update per step into the log; there ``Progress`` prints a plain line every ``every_fraction``
of the work or every ``every_seconds``, whichever comes first. Training epochs, text
encoding, RQ-VAE fitting and preprocessing all report through it.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

from tqdm import tqdm


class Progress:
    """Progress over ``total`` units: ``update(n)`` as work is done, ``set_postfix(...)`` or
    ``set_loss(loss)`` for values shown beside it, ``close()`` at the end.

    Args:
        total: units of work in all.
        initial: units already done (a resumed epoch).
        desc: what is being done, the start of every line.
        enabled: False prints nothing (non-main ranks, ``--train.progress_bar=false``).
        units: what is counted, plural (``steps``, ``batches``); lines say
            ``<done>/<total> <units>``.
        stream: where to write; default standard error.
        every_fraction: without a terminal, a line after this share of ``total``.
        every_seconds: without a terminal, a line after this many seconds.
    """

    def __init__(
        self,
        total: int,
        initial: int = 0,
        desc: str = "",
        enabled: bool = True,
        units: str = "steps",
        stream: TextIO | None = None,
        every_fraction: float = 0.1,
        every_seconds: float = 60.0,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total, self.done, self.desc, self.units = total, initial, desc, units
        self.terminal = enabled and self.stream.isatty()
        self.lines = enabled and not self.terminal
        self.bar = tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit=units,
            disable=not self.terminal,
            dynamic_ncols=True,
            file=self.stream,
        )
        self.every_units = max(1, math.ceil(total * every_fraction))
        self.every_seconds = every_seconds
        self.start = self.last_time = time.monotonic()
        self.start_done = self.last_done = initial
        self.postfix: dict[str, str] = {}

    def set_postfix(self, **values: object) -> None:
        """Values shown after the count from now on (``epoch=3, loss="0.1234"``)."""
        self.postfix = {key: str(value) for key, value in values.items()}
        if self.terminal:
            self.bar.set_postfix(self.postfix)

    def set_loss(self, loss: float) -> None:
        """The latest loss read back, shown from now on."""
        self.set_postfix(loss=f"{loss:.4f}")

    def update(self, n: int = 1) -> None:
        """``n`` more units done."""
        self.done += n
        if self.terminal:
            self.bar.update(n)
            return
        if not self.lines:
            return
        now = time.monotonic()
        due = self.done - self.last_done >= self.every_units or self.done >= self.total
        if due or now - self.last_time >= self.every_seconds:
            rate = (self.done - self.start_done) / max(now - self.start, 1e-9)
            shown = "".join(f" {key}={value}" for key, value in self.postfix.items())
            print(
                f"{self.desc}: {self.done}/{self.total} {self.units} "
                f"({100 * self.done / max(self.total, 1):.0f}%){shown} "
                f"{rate:.1f} {self.units}/s",
                file=self.stream,
                flush=True,
            )
            self.last_time, self.last_done = now, self.done

    def close(self) -> None:
        """End the bar (a terminal) or nothing (lines were printed as work went)."""
        self.bar.close()

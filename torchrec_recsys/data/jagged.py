"""A column of variable-length int64 lists in CSR form, with a vectorised row gather."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


def segment_positions(starts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Concatenated ranges ``starts[i] .. starts[i] + lengths[i] - 1``. int64 [sum(lengths)]."""
    total = int(lengths.sum())
    out_starts = torch.cumsum(lengths, 0) - lengths  # [N] where each segment lands in the output
    return torch.repeat_interleave(starts - out_starts, lengths, output_size=total) + torch.arange(
        total, dtype=torch.int64
    )


@dataclass
class JaggedColumn:
    """Row ``i`` holds ``values[offsets[i]:offsets[i+1]]``.

    offsets: int64 [N + 1], offsets[0] == 0
    values:  int64 [offsets[-1]]
    """

    offsets: torch.Tensor
    values: torch.Tensor

    def __len__(self) -> int:
        return self.offsets.numel() - 1

    @property
    def lengths(self) -> torch.Tensor:
        """Number of values per row. int64 [N]."""
        return self.offsets[1:] - self.offsets[:-1]

    @classmethod
    def from_lengths(cls, lengths: torch.Tensor, values: torch.Tensor) -> JaggedColumn:
        offsets = torch.zeros(lengths.numel() + 1, dtype=torch.int64)
        torch.cumsum(lengths, 0, out=offsets[1:])
        return cls(offsets=offsets, values=values.to(torch.int64))

    @classmethod
    def from_single(cls, values: np.ndarray | torch.Tensor) -> JaggedColumn:
        """One value per row."""
        values = torch.as_tensor(values, dtype=torch.int64)
        return cls.from_lengths(torch.ones_like(values), values)

    @classmethod
    def from_lists(cls, rows: Sequence[Sequence[int]]) -> JaggedColumn:
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.int64)
        flat = [v for r in rows for v in r]
        return cls.from_lengths(lengths, torch.tensor(flat, dtype=torch.int64))

    def gather(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Lengths [B] and concatenated values [sum(lengths)] of ``rows`` (in that order)."""
        starts = self.offsets[rows]
        lengths = self.offsets[rows + 1] - starts
        return lengths, self.values[segment_positions(starts, lengths)]

    def select(self, rows: torch.Tensor) -> JaggedColumn:
        """A new compact column holding ``rows`` in order."""
        lengths, values = self.gather(rows)
        return JaggedColumn.from_lengths(lengths, values)

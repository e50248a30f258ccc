"""A column of variable-length int64 lists in CSR form, with a vectorised row gather."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from torchrec_recsys.errors import DataError


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

    def __post_init__(self) -> None:
        """Reject offsets that disagree with the values (they would gather the wrong IDs).

        Raises:
            DataError: offsets not 1-D starting at 0, decreasing, or not ending at len(values).
        """
        offsets, values = self.offsets, self.values
        if offsets.dim() != 1 or offsets.numel() == 0 or values.dim() != 1:
            raise DataError(
                f"jagged column needs 1-D offsets [N + 1] and 1-D values, got offsets of shape "
                f"{tuple(offsets.shape)} and values of shape {tuple(values.shape)}"
            )
        if offsets.dtype != torch.int64 or values.dtype != torch.int64:
            raise DataError(
                f"jagged column needs int64 offsets and values, got {offsets.dtype} and "
                f"{values.dtype}"
            )
        if int(offsets[0]) != 0 or int(offsets[-1]) != values.numel():
            raise DataError(
                f"jagged column offsets run from {int(offsets[0])} to {int(offsets[-1])}, but "
                f"they must run from 0 to the number of values ({values.numel()}): lengths and "
                f"values disagree"
            )
        if offsets.numel() > 1 and bool((offsets[1:] < offsets[:-1]).any()):
            row = int((offsets[1:] < offsets[:-1]).nonzero()[0])
            raise DataError(f"jagged column offsets decrease at row {row}: negative length")

    def __len__(self) -> int:
        return self.offsets.numel() - 1

    @property
    def lengths(self) -> torch.Tensor:
        """Number of values per row. int64 [N]."""
        return self.offsets[1:] - self.offsets[:-1]

    @classmethod
    def from_lengths(cls, lengths: torch.Tensor, values: torch.Tensor) -> JaggedColumn:
        """Column from per-row lengths [N] and the concatenated values [sum(lengths)]."""
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

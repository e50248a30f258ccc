"""Raw string IDs -> contiguous embedding rows, with row 0 reserved for out-of-vocabulary."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from torchrec_recsys.files import atomic_write_text

OOV_INDEX = 0


class Vocabulary:
    """A frozen mapping token -> index in ``[1, len(tokens)]``; unknown tokens -> ``OOV_INDEX``.

    The embedding table reading this vocabulary has ``size`` rows (OOV row included).
    """

    def __init__(self, name: str, tokens: Iterable[str]) -> None:
        self.name = name
        self.tokens: list[str] = list(dict.fromkeys(tokens))  # first occurrence order, unique
        self._index = {tok: i + 1 for i, tok in enumerate(self.tokens)}

    @property
    def size(self) -> int:
        """Rows needed by an embedding table: every token plus the OOV row."""
        return len(self.tokens) + 1

    def encode(self, values: Iterable[str]) -> np.ndarray:
        """Map tokens to indices; unknown tokens map to ``OOV_INDEX``. Returns int64 [N]."""
        get = self._index.get
        return np.fromiter((get(v, OOV_INDEX) for v in values), dtype=np.int64)

    def __contains__(self, token: str) -> bool:
        return token in self._index

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "oov_index": OOV_INDEX, "tokens": self.tokens}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Vocabulary:
        return cls(str(data["name"]), list(data["tokens"]))  # type: ignore[arg-type]


def save_vocabularies(path: Path, vocabs: dict[str, Vocabulary]) -> None:
    """Write every vocabulary to one JSON file (atomically)."""
    atomic_write_text(path, json.dumps({k: v.to_dict() for k, v in vocabs.items()}))


def load_vocabularies(path: Path) -> dict[str, Vocabulary]:
    """Read vocabularies written by :func:`save_vocabularies`."""
    data = json.loads(Path(path).read_text())
    return {k: Vocabulary.from_dict(v) for k, v in data.items()}

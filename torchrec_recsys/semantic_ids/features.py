"""Semantic IDs as sparse features: a SID table for the catalogue -> token ids per item.

    catalogue (item ids, texts, genres) --[table_path | cached learn]--> SIDTable
        --codes of the L quantizer levels (collision level left out)--> sid_l1.., sid_p2..
        --> {name: (token per catalogue row [I], table rows)} for data.dataset.ItemTokens

The collision level makes every SID unique (an item identifier); as a feature it would be an
item ID in disguise, with no sharing across items, so only the quantizer levels become tokens.
Learning at start-up is cached by a hash of the texts and the settings; with several
processes rank 0 learns and the others wait and read the cache.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch.distributed as dist

from torchrec_recsys.config import SemanticIdConfig
from torchrec_recsys.errors import DataError
from torchrec_recsys.semantic_ids.encoder import TextEncoder
from torchrec_recsys.semantic_ids.learn import SIDResult, learn_semantic_ids, make_quantizer
from torchrec_recsys.semantic_ids.rq_kmeans import RQKMeansConfig
from torchrec_recsys.semantic_ids.rqvae import RQVAEConfig
from torchrec_recsys.semantic_ids.store import SIDTable, load_sid_table, save_sid_table
from torchrec_recsys.semantic_ids.tokens import sid_token_features

LEARNING_FIELDS = (
    "method",
    "levels",
    "codebook_size",
    "epochs",
    "max_steps",
    "max_seconds",
    "encoder_dir",
)
"""The ``[semantic_ids]`` fields that change a learned table (its cache key)."""


def check_item_texts(texts: Sequence[str]) -> None:
    """Refuse to learn semantic IDs when every item's text is empty (they would be learned
    from the encoder's placeholders, one per item id, and mean nothing).

    Raises:
        DataError: one line with the number of items and the settings that fix it.
    """
    if not any(str(t).strip() for t in texts):
        raise DataError(
            f"semantic IDs are learned from item text, but every item's text is empty "
            f"({len(texts)} items); name text columns in data.item_text_columns or give a "
            "table in semantic_ids.table_path"
        )


def check_table_settings(table: SIDTable, settings: SemanticIdConfig, where: str) -> None:
    """Refuse a SID table whose shape is not what ``[semantic_ids]`` says: its quantizer
    levels (``codebooks.npy`` [L, K, D]) must equal ``levels`` and each level's codebook
    size ``codebook_size``.

    Raises:
        DataError: one line naming the table, both values and how to make them agree.
    """
    shape = list(table.codebooks.shape)
    if len(shape) != 3:
        raise DataError(f"SID table {where} has codebooks of shape {shape}; expected [L, K, D]")
    levels, size = shape[0], shape[1]
    if levels != settings.levels:
        raise DataError(
            f"SID table {where} has {levels} quantizer level(s) (codebooks {shape}), but "
            f"semantic_ids.levels = {settings.levels}; set semantic_ids.levels = {levels} "
            f"or rebuild the table with 'sid build --levels {settings.levels}'"
        )
    sizes = [int(k) for k in table.codebook_sizes[:levels]]
    if size != settings.codebook_size or any(k != size for k in sizes):
        raise DataError(
            f"SID table {where} has codebook sizes {sizes} (codebooks {shape}), but "
            f"semantic_ids.codebook_size = {settings.codebook_size}; set "
            f"semantic_ids.codebook_size = {size} or rebuild the table with "
            f"'sid build --codebook-size {settings.codebook_size}'"
        )


def learn_sid_table(
    item_ids: Sequence[str],
    texts: Sequence[str],
    genres: Sequence[str] | None,
    settings: SemanticIdConfig,
    show_progress: bool = True,
) -> SIDResult:
    """Encode ``texts`` (cached) and fit the quantizer; returns table + report.

    Raises:
        DataError: every text is empty (the codes would be learned from placeholders).
    """
    check_item_texts(texts)
    encoder = TextEncoder(settings.encoder_dir or None, show_progress=show_progress).load()
    encoded = encoder.encode_cached(
        list(texts), Path(settings.cache_dir) / "embeddings", item_ids=list(item_ids)
    )
    config: RQVAEConfig | RQKMeansConfig
    if settings.method == "rqvae":
        config = RQVAEConfig(
            levels=settings.levels,
            codebook_size=settings.codebook_size,
            epochs=settings.epochs,
            max_steps=settings.max_steps,
            max_seconds=settings.max_seconds,
            show_progress=show_progress,
        )
    else:
        config = RQKMeansConfig(levels=settings.levels, codebook_size=settings.codebook_size)
    result = learn_semantic_ids(
        list(item_ids),
        encoded.embeddings,
        make_quantizer(settings.method, config),
        genres=list(genres) if genres is not None else None,
        fallback_texts=encoded.num_fallback,
    )
    result.table.meta["fallback_texts"] = encoded.num_fallback
    return result


def cached_sid_table(
    item_ids: Sequence[str],
    texts: Sequence[str],
    genres: Sequence[str] | None,
    settings: SemanticIdConfig,
    show_progress: bool = True,
) -> SIDTable:
    """The SID table for these items and settings, learned once and then read from cache
    (``show_progress``: report the encoding and the fit while learning).

    Raises:
        DataError: every text is empty (checked on every rank, before any is learned).
    """
    check_item_texts(texts)
    key_fields = [list(item_ids), list(texts), {f: getattr(settings, f) for f in LEARNING_FIELDS}]
    key = hashlib.sha256(json.dumps(key_fields).encode()).hexdigest()[:20]
    folder = Path(settings.cache_dir) / "tables" / key
    rank0 = not dist.is_initialized() or dist.get_rank() == 0
    if rank0 and not folder.is_dir():
        learned = learn_sid_table(item_ids, texts, genres, settings, show_progress)
        save_sid_table(folder, learned.table)
    if dist.is_initialized():
        dist.barrier()
    return load_sid_table(folder)


def sid_item_features(
    table: SIDTable,
    catalogue_item_ids: Sequence[str],
    levels: int,
    unigrams: bool = True,
    prefixes: bool = True,
    prefix_max_rows: int | None = 65536,
    random_codes: bool = False,
    seed: int = 0,
) -> dict[str, tuple[np.ndarray, int]]:
    """``{"sid_l1": (token per catalogue row [I], rows), ...}``; token 0 never occurs.

    Raises:
        DataError: a catalogue item is missing from the SID table (names how many and one).
    """
    rows = table.rows(list(catalogue_item_ids))  # [I], -1 = missing
    if (rows < 0).any():
        missing = [catalogue_item_ids[i] for i in np.flatnonzero(rows < 0)]
        raise DataError(
            f"{len(missing)} item(s) of the catalogue are missing from the SID table, "
            f"e.g. {missing[0]!r}; rebuild the table for this catalogue"
        )
    quantizer_levels = min(levels, table.codes.shape[1])
    codes = table.codes[rows][:, :quantizer_levels]  # [I, L]
    sizes = table.codebook_sizes[:quantizer_levels]
    if random_codes:  # the control: same shape and code ranges, no meaning
        rng = np.random.default_rng(seed)
        codes = np.stack([rng.integers(0, k, size=len(codes)) for k in sizes], axis=1)
    features = sid_token_features(
        codes, sizes, unigrams=unigrams, prefixes=prefixes, max_cardinality=prefix_max_rows
    )
    return {name: (f.ids, f.cardinality) for name, f in features.items()}

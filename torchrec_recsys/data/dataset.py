"""Raw tables -> encoded examples per split, plus the FeatureSpec that describes them.

Pipeline (``build_dataset``)::

    RawData (string IDs)
      -> temporal order + leave-last-out split          (data/splits.py)
      -> vocabularies: user/item IDs from *train* only,  (data/vocab.py; row 0 = OOV)
         categoricals from the attribute tables
      -> per-example jagged columns (one per KJT key), dense matrix, labels
      -> FeatureSpec with each table's rows             (data/features.py)

Item-side columns are also kept per catalogue item (``ItemCatalogue``) so a retriever can
embed every item, including ones never seen in training (their ``item_id`` is OOV; their
genres and other attributes are not).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from torchrec_recsys.config import DataConfig, FeatureConfig
from torchrec_recsys.data.context import PairContext
from torchrec_recsys.data.features import ITEM, USER, DenseFeature, FeatureSpec, SparseFeature
from torchrec_recsys.data.jagged import JaggedColumn, segment_positions
from torchrec_recsys.data.readers import RawData, check_configured_columns
from torchrec_recsys.data.splits import (
    DROPPED,
    SPLIT_NAMES,
    TRAIN,
    leave_last_out,
    random_split,
    temporal_order,
)
from torchrec_recsys.data.tables import ExampleTable, ItemCatalogue, UserTable
from torchrec_recsys.data.vocab import Vocabulary, save_vocabularies
from torchrec_recsys.errors import DataError, warn_user
from torchrec_recsys.files import atomic_write_text


@dataclass
class ItemTokens:
    """Extra single-valued item features, e.g. semantic-ID tokens, for :func:`build_dataset`."""

    features: dict[str, tuple[np.ndarray, int]] = field(default_factory=dict)
    """name -> (token per catalogue row [I], table rows). Each becomes ``item_<name>`` (and
    ``user_history_<name>`` when ``history``), sharing table ``t_<name>``."""
    history: bool = True
    """Also give the items of ``user_history`` these tokens."""


@dataclass
class RecDataset:
    """Everything the models and the training loop read."""

    spec: FeatureSpec
    vocabs: dict[str, Vocabulary]
    splits: dict[str, ExampleTable]  # "train", "val", "test"
    items: ItemCatalogue
    users: UserTable
    user_ids: list[str]
    name: str
    read_report: dict[str, int] = field(default_factory=dict)
    """The reader's counts of skipped/filtered rows by reason (``RawData.report``)."""
    context: PairContext | None = None
    """A pipeline ranker's pairs dataset: the training statistics its context features read
    (``data/context.py``), built from the interactions before they became pairs."""

    @cached_property
    def user_row_of(self) -> dict[str, int]:
        """Raw user id -> row of ``user_ids`` (built once; the users are not mutated)."""
        return {user: i for i, user in enumerate(self.user_ids)}

    def catalogue_table(self) -> ExampleTable:
        """Every catalogue item as one example (user-side keys empty), to embed items."""
        n = len(self.items)
        return _side_table(
            self.spec,
            ITEM,
            self.items.sparse,
            self.items.dense,
            n,
            user_rows=torch.zeros(n, dtype=torch.int64),
            item_rows=torch.arange(n),
        )

    def pair_table(
        self, users: ExampleTable, user_index: torch.Tensor, item_rows: torch.Tensor
    ) -> ExampleTable:
        """(user, item) pairs: user-side features of ``users[user_index]`` [N] and item-side
        features of catalogue rows ``item_rows`` [N] (to score candidates with a ranker)."""
        item_keys = set(self.spec.sparse_names(ITEM))
        sparse = {
            k: (
                self.items.sparse[k].select(item_rows)
                if k in item_keys
                else users.sparse[k].select(user_index)
            )
            for k in self.spec.sparse_names()
        }
        dense = users.dense[user_index].clone()  # [N, num_dense]
        dense[:, self.spec.dense_indices(ITEM)] = self.items.dense[item_rows]
        return ExampleTable(
            sparse=sparse,
            dense=dense,
            labels=torch.zeros(len(item_rows)),
            user_rows=users.user_rows[user_index],
            item_rows=item_rows,
            times=None if users.times is None else users.times[user_index],
            history=None if users.history is None else users.history.select(user_index),
        )

    def cold_user_table(self, history_item_ids: list[str]) -> ExampleTable:
        """One unknown user: OOV id, no attributes, and ``history_item_ids`` as history."""
        history = torch.from_numpy(self.vocabs["item_id"].encode(history_item_ids))
        sparse = {
            k: JaggedColumn.from_lists([history.tolist()] if k == "user_history" else [[]])
            for k in self.spec.sparse_names(USER)
        }
        table = _side_table(
            self.spec,
            USER,
            sparse,
            torch.zeros(1, len(self.spec.dense_indices(USER))),
            1,
            user_rows=torch.zeros(1, dtype=torch.int64),
            item_rows=torch.zeros(1, dtype=torch.int64),
        )
        row_of = self.items.row_of
        table.history = JaggedColumn.from_lists(
            [[row_of[i] for i in history_item_ids if i in row_of]]
        )
        return table

    def user_table(self, user_rows: torch.Tensor) -> ExampleTable:
        """``user_rows`` as examples with their current user-side features (item keys empty)."""
        sparse = {k: c.select(user_rows) for k, c in self.users.sparse.items()}
        table = _side_table(
            self.spec,
            USER,
            sparse,
            self.users.dense[user_rows],
            len(user_rows),
            user_rows=user_rows,
            item_rows=torch.zeros_like(user_rows),
        )
        if self.users.history is not None:
            table.history = self.users.history.select(user_rows)
        return table

    def save_metadata(self, folder: Path) -> None:
        """Write vocabularies and the FeatureSpec next to a run's checkpoints."""
        folder.mkdir(parents=True, exist_ok=True)
        save_vocabularies(folder / "vocab.json", self.vocabs)
        atomic_write_text(folder / "feature_spec.json", json.dumps(self.spec.to_dict(), indent=2))


def _side_table(
    spec: FeatureSpec,
    tower: str,
    sparse: dict[str, JaggedColumn],
    tower_dense: torch.Tensor,
    n: int,
    user_rows: torch.Tensor,
    item_rows: torch.Tensor,
) -> ExampleTable:
    """An ExampleTable whose ``tower`` keys come from ``sparse`` and other keys are empty."""
    empty = JaggedColumn.from_lengths(torch.zeros(n, dtype=torch.int64), torch.zeros(0))
    dense = torch.zeros(n, len(spec.dense))  # [n, num_dense]
    dense[:, spec.dense_indices(tower)] = tower_dense
    return ExampleTable(
        sparse={
            k: sparse.get(k, empty) if k in spec.sparse_names(tower) else empty
            for k in spec.sparse_names()
        },
        dense=dense,
        labels=torch.zeros(n),
        user_rows=user_rows,
        item_rows=item_rows,
    )


def _categorical_column(values: pd.Series, vocab: Vocabulary, separator: str) -> JaggedColumn:
    """Per-row token lists -> indices (empty cell = empty bag)."""
    rows = [[t for t in str(v).split(separator) if t] for v in values.fillna("")]
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.int64)
    flat = vocab.encode(t for r in rows for t in r)
    return JaggedColumn.from_lengths(lengths, torch.from_numpy(flat))


def _tokens(values: pd.Series, separator: str) -> list[str]:
    return sorted({t for v in values.fillna("") for t in str(v).split(separator) if t})


SEPARATOR_CANDIDATES = ("|", ",", ";", "/")
"""Separators :func:`check_separator` looks for in a multi-valued column's cells."""


def check_separator(values: pd.Series, separator: str, what: str) -> None:
    """Warn when a categorical column looks multi-valued with another separator.

    The sign: most non-empty cells contain another common separator, and splitting at it
    gives at most half as many distinct tokens as splitting at ``separator`` does (the
    column would otherwise become one token per *combination*, most of them rare).
    """
    cells = [str(v) for v in values.fillna("") if str(v)]
    if len(cells) < 10:
        return
    have = len(_tokens(values, separator))
    for other in SEPARATOR_CANDIDATES:
        if other == separator or sum(other in c for c in cells) * 2 < len(cells):
            continue
        would = len(_tokens(values, other))
        if would * 2 <= have:
            warn_user(
                f"{what}: split at data.multi_value_separator = {separator!r} it has {have} "
                f"distinct tokens, split at {other!r} only {would}; its cells look like "
                f"{cells[0]!r}: set data.multi_value_separator = {other!r} if they are lists"
            )
            return


def history_column(item_idx: np.ndarray, user_codes: np.ndarray, length: int) -> JaggedColumn:
    """For each row of a user/time-ordered frame: the user's previous ``length`` items.

    Row r of user u at position p gets items of rows [max(first_row(u), r - length), r).
    """
    n = len(item_idx)
    rows = np.arange(n)
    first_row = np.zeros(n, dtype=np.int64)
    change = np.r_[True, user_codes[1:] != user_codes[:-1]]
    first_row[change] = rows[change]
    first_row = np.maximum.accumulate(first_row)
    starts = torch.from_numpy(np.maximum(first_row, rows - length))
    lengths = torch.from_numpy(rows) - starts
    values = torch.from_numpy(item_idx)[segment_positions(starts, lengths)]
    return JaggedColumn.from_lengths(lengths, values)


def build_dataset(
    raw: RawData,
    data: DataConfig,
    features: FeatureConfig,
    tokens: ItemTokens | None = None,
) -> RecDataset:
    """Encode ``raw`` into split example tables and derive the FeatureSpec.

    ``data`` says which columns become features and how to split; ``features`` sizes the
    tables; ``tokens`` adds extra item token features (semantic IDs).

    Raises:
        DataError: interactions reference items missing from the items file, or a
            configured attribute column is missing.
    """
    tokens = tokens if tokens is not None else ItemTokens()
    keys = {c: "data.item_categorical_columns" for c in data.item_categorical_columns}
    check_configured_columns(raw.items, data.item_categorical_columns, keys, "the items table")
    user_cols = [c for c in data.user_categorical_columns if c in raw.users.columns]
    if len(raw.users) and len(user_cols) != len(data.user_categorical_columns):
        keys = {c: "data.user_categorical_columns" for c in data.user_categorical_columns}
        check_configured_columns(raw.users, data.user_categorical_columns, keys, "the users table")
    if not len(raw.users):
        if data.user_categorical_columns:
            warn_user(
                f"data.user_categorical_columns = {data.user_categorical_columns} but there is "
                f"no users table (data.users_path is empty): training without user attributes"
            )
        user_cols = []

    items = raw.items.reset_index(drop=True)
    item_row_of = {iid: i for i, iid in enumerate(items["item_id"])}
    inter = temporal_order(raw.interactions)
    item_rows_np = inter["item_id"].map(item_row_of)
    if item_rows_np.isna().any():
        unknown = inter["item_id"][item_rows_np.isna()]
        raise DataError(
            f"{len(unknown)} interaction(s) reference item ids missing from the items file, "
            f"e.g. {unknown.iloc[0]!r}"
        )
    item_rows = torch.from_numpy(item_rows_np.to_numpy(dtype=np.int64, copy=True))
    if data.split == "random":
        split = random_split(
            len(inter), data.random_val_fraction, data.random_test_fraction, data.split_seed
        )
    else:
        split = leave_last_out(inter, data.val_per_user, data.test_per_user)
    cold_items = np.zeros(len(items), dtype=bool)
    if data.cold_item_fraction > 0:
        rng = np.random.default_rng(data.split_seed + 1)
        cold_items[rng.random(len(items)) < data.cold_item_fraction] = True
        split[(split == TRAIN) & cold_items[item_rows.numpy()]] = DROPPED
    train = split == TRAIN

    # Vocabularies. IDs: training split only (unseen at training time -> OOV row 0).
    vocabs = {
        "user_id": Vocabulary("user_id", inter["user_id"][train]),
        "item_id": Vocabulary("item_id", inter["item_id"][train]),
    }
    user_ids = list(dict.fromkeys(inter["user_id"]))
    user_row_of = {u: i for i, u in enumerate(user_ids)}
    user_rows = torch.from_numpy(
        inter["user_id"].map(user_row_of).to_numpy(dtype=np.int64, copy=True)
    )
    sep = data.multi_value_separator
    for col in data.item_categorical_columns:
        check_separator(items[col], sep, f"item column {col!r}")
        vocabs[f"item_{col}"] = Vocabulary(f"item_{col}", _tokens(items[col], sep))
    users = None
    if user_cols:
        _check_user_coverage(user_ids, raw.users["user_id"])
        users = raw.users.set_index("user_id").reindex(user_ids)
    for col in user_cols:
        check_separator(raw.users[col], sep, f"user column {col!r}")
        vocabs[f"user_{col}"] = Vocabulary(f"user_{col}", _tokens(users[col], sep))

    # Per-item and per-user columns, then per-example columns gathered through item/user rows.
    item_id_idx = vocabs["item_id"].encode(items["item_id"])  # [I]
    item_columns: dict[str, JaggedColumn] = {}
    if features.use_item_id:
        item_columns["item_id"] = JaggedColumn.from_single(item_id_idx)
    for col in data.item_categorical_columns:
        item_columns[f"item_{col}"] = _categorical_column(items[col], vocabs[f"item_{col}"], sep)
    for name, (ids, _) in tokens.features.items():
        if len(ids) != len(items):
            raise DataError(f"item feature {name!r} has {len(ids)} rows for {len(items)} items")
        item_columns[f"item_{name}"] = JaggedColumn.from_single(ids)
    user_columns: dict[str, JaggedColumn] = {}
    if features.use_user_id:
        user_columns["user_id"] = JaggedColumn.from_single(vocabs["user_id"].encode(user_ids))
    for col in user_cols:
        user_columns[f"user_{col}"] = _categorical_column(users[col], vocabs[f"user_{col}"], sep)

    # History as catalogue rows, then mapped to each history feature's tokens.
    # feature -> token per catalogue row [I]
    history_tokens = _history_token_maps(item_id_idx, features, tokens)
    history_rows = history_column(item_rows.numpy(), user_rows.numpy(), data.history_length)
    example_columns = {k: c.select(user_rows) for k, c in user_columns.items()}
    for name, token_map in history_tokens.items():
        example_columns[name] = _map_values(history_rows, token_map)
    example_columns.update({k: c.select(item_rows) for k, c in item_columns.items()})

    # Dense features: log-activity of the user and log-popularity of the item, from train only.
    item_train_counts = torch.bincount(item_rows[torch.from_numpy(train)], minlength=len(items))
    user_train_counts = torch.bincount(user_rows[torch.from_numpy(train)], minlength=len(user_ids))
    item_pop = torch.log1p(item_train_counts.float())
    item_pop = item_pop / item_pop.max().clamp(min=1.0)  # [I] in [0, 1]
    user_act = torch.log1p(user_train_counts.float())
    user_act = user_act / user_act.max().clamp(min=1.0)  # [U] in [0, 1]
    item_dense = item_pop[:, None] if features.use_item_popularity else torch.zeros(len(items), 0)
    dense = torch.cat([user_act[user_rows, None], item_dense[item_rows]], dim=1)  # [N, 1 or 2]
    labels = torch.from_numpy(
        (inter["rating"].to_numpy() >= data.positive_rating).astype(np.float32)
    )

    spec = _build_spec(vocabs, example_columns, features, tokens)
    times = torch.from_numpy(inter["timestamp"].to_numpy(dtype=np.float64, copy=True))  # [N]
    splits = {}
    for code, name in SPLIT_NAMES.items():
        rows = torch.from_numpy(np.flatnonzero(split == code))
        splits[name] = ExampleTable(
            sparse={k: example_columns[k].select(rows) for k in spec.sparse_names()},
            dense=dense[rows],
            labels=labels[rows],
            user_rows=user_rows[rows],
            item_rows=item_rows[rows],
            times=times[rows],
            history=history_rows.select(rows),
        )
    users_now = dict(user_columns)
    # the last `history_length` items of each user over all splits: their state "now"
    last_row = torch.zeros(len(user_ids), dtype=torch.int64)
    last_row.scatter_reduce_(0, user_rows, torch.arange(len(user_rows)), reduce="amax")
    lengths = torch.clamp(history_rows.lengths[last_row] + 1, max=data.history_length)
    now_rows = _tail(_append_last_item(history_rows, last_row, item_rows.numpy()), lengths)
    for name, token_map in history_tokens.items():
        users_now[name] = _map_values(now_rows, token_map)
    train_rows = torch.from_numpy(np.flatnonzero(train))
    order = torch.argsort(user_rows[train_rows], stable=True)
    train_lengths = torch.bincount(user_rows[train_rows], minlength=len(user_ids))
    user_table = UserTable(
        sparse={k: users_now[k] for k in spec.sparse_names(USER)},
        dense=user_act[:, None],  # [U, 1]
        train_items=JaggedColumn.from_lengths(train_lengths, item_rows[train_rows][order]),
        history=now_rows,
    )
    texts = item_texts(items, data.item_text_columns)
    catalogue = ItemCatalogue(
        item_ids=list(items["item_id"]),
        texts=texts,
        sparse={k: item_columns[k] for k in spec.sparse_names(ITEM)},
        dense=item_dense,  # [I, 1] (or [I, 0] without the popularity feature)
        train_counts=item_train_counts,
        cold=torch.from_numpy(cold_items),
    )
    return RecDataset(
        spec=spec,
        vocabs=vocabs,
        splits=splits,
        items=catalogue,
        users=user_table,
        user_ids=user_ids,
        name=raw.name,
        read_report=dict(raw.report),
    )


def _check_user_coverage(user_ids: list[str], known: pd.Series) -> None:
    """Fail if no interaction user is in the users file; warn if some are missing."""
    known_ids = set(known)
    missing = [u for u in user_ids if u not in known_ids]
    if len(missing) == len(user_ids):
        raise DataError(
            f"none of the {len(user_ids)} users of the interactions is in the users file "
            f"(e.g. {user_ids[0]!r} vs. {str(known.iloc[0])!r}); the IDs must match"
        )
    if missing:
        warn_user(
            f"{len(missing)} of {len(user_ids)} users of the interactions are missing from "
            f"the users file (e.g. {missing[0]!r}); they get no user attributes"
        )


def _append_last_item(
    history: JaggedColumn, rows: torch.Tensor, item_idx: np.ndarray
) -> JaggedColumn:
    """For each of ``rows``: that example's history followed by that example's own item."""
    lengths, values = history.gather(rows)  # histories before each user's last interaction
    out_lengths = lengths + 1
    out = torch.empty(int(out_lengths.sum()), dtype=torch.int64)
    ends = torch.cumsum(out_lengths, 0)
    last_positions = ends - 1
    keep = torch.ones(len(out), dtype=torch.bool)
    keep[last_positions] = False
    out[keep] = values
    out[last_positions] = torch.from_numpy(item_idx)[rows]
    return JaggedColumn.from_lengths(out_lengths, out)


def _history_token_maps(
    item_id_idx: np.ndarray, features: FeatureConfig, tokens: ItemTokens
) -> dict[str, torch.Tensor]:
    """History feature name -> the token each catalogue row contributes to it."""
    if not features.use_history:
        return {}
    maps = {}
    if features.use_item_id:
        maps["user_history"] = torch.from_numpy(item_id_idx)
    if tokens.history:
        for name, (ids, _) in tokens.features.items():
            maps[f"user_history_{name}"] = torch.as_tensor(ids, dtype=torch.int64)
    return maps


def _map_values(column: JaggedColumn, table: torch.Tensor) -> JaggedColumn:
    """Same lengths, each value ``v`` replaced by ``table[v]``."""
    return JaggedColumn(offsets=column.offsets, values=table[column.values])


def _tail(column: JaggedColumn, lengths: torch.Tensor) -> JaggedColumn:
    """The last ``lengths[i]`` values of each row."""
    starts = column.offsets[1:] - lengths
    values = column.values[segment_positions(starts, lengths)]
    return JaggedColumn.from_lengths(lengths, values)


def item_texts(items: pd.DataFrame, columns: list[str]) -> list[str]:
    """Each item's free text: the non-empty ``columns`` joined with ". "."""
    present = [c for c in columns if c in items.columns]
    if not present:
        return [""] * len(items)
    parts = items[present].fillna("").astype(str)
    return [". ".join(p for p in row if p) for row in parts.itertuples(index=False)]


def _build_spec(
    vocabs: dict[str, Vocabulary],
    columns: dict[str, JaggedColumn],
    features: FeatureConfig,
    tokens: ItemTokens,
) -> FeatureSpec:
    """One SparseFeature per column. History features share their item-side table:
    ``user_history`` reads ``t_item_id``; ``user_history_<tok>`` and ``item_<tok>`` read
    ``t_<tok>`` for each extra item token feature (e.g. semantic IDs)."""
    token_rows = {name: rows for name, (_, rows) in tokens.features.items()}

    def table_of(name: str) -> tuple[str, int]:
        if name == "user_history":
            return "t_item_id", vocabs["item_id"].size
        base = name.removeprefix("user_history_").removeprefix("item_")
        if base in token_rows and name != base:
            return f"t_{base}", token_rows[base]
        return f"t_{name}", vocabs[name].size

    names = [n for n in columns if not n.startswith("user_history")]
    names += [n for n in columns if n.startswith("user_history")]  # shared tables stay together
    tables = [table_of(n)[0] for n in names]
    sparse = []
    for name, table in zip(names, tables, strict=True):
        single = name in ("user_id", "item_id") or name.removeprefix("item_") in token_rows
        shared = tables.count(table) > 1
        sparse.append(
            SparseFeature(
                name=name,
                table=table,
                num_embeddings=table_of(name)[1],
                embedding_dim=features.embedding_dim,
                pooling=features.history_pooling if shared or not single else "sum",
                tower=ITEM if name.startswith("item_") else USER,
            )
        )
    dense = (DenseFeature("user_log_activity", USER),)
    if features.use_item_popularity:
        dense += (DenseFeature("item_log_popularity", ITEM),)
    return FeatureSpec(sparse=tuple(sparse), dense=dense)

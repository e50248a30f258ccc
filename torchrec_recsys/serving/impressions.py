"""The impression log: every response's shown items, as interactions the readers accept.

One CSV per server process (``impressions-<start unix>-<pid>.csv``, rolled over every
``rows_per_file`` rows) in the bring-your-own interactions format (``data/readers.py``
reads it with ``read_table`` + ``check_interactions``)::

    user_id,item_id,rating,timestamp,request_id,position,version,retrieval_score,ranking_score,cold_start
    u17,i42,0,1763851234.51,5f0c...,1,v2,0.4213,0.6120,0

``rating`` is 0: an impression is a shown item, not (yet) a choice. The join that turns the
log into ranker training data (``impressions_to_examples``): an impression whose user chose
the item (an interaction on the same ``(user_id, item_id)``) within ``horizon_seconds``
after it was shown becomes a positive with that rating; every other impression is a
shown-but-not-chosen negative with rating 0. Positions are kept for position-bias work.

Rows are queued by the request thread and written by one background thread, so logging
never blocks a response; ``close`` drains the queue.
"""

from __future__ import annotations

import csv
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd

COLUMNS = (
    "user_id",
    "item_id",
    "rating",
    "timestamp",
    "request_id",
    "position",
    "version",
    "retrieval_score",
    "ranking_score",
    "cold_start",
)


class ImpressionLog:
    """Append-only CSV impression log written by a background thread."""

    def __init__(self, folder: str | Path, rows_per_file: int = 1_000_000) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rows_per_file = rows_per_file
        self._queue: queue.Queue[list[tuple[Any, ...]] | None] = queue.Queue()
        self._part = 0
        self._rows_in_file = 0
        self._handle: Any = None
        self._writer: Any = None
        self._started = int(time.time())
        self._thread = threading.Thread(target=self._run, name="impression-log", daemon=True)
        self._thread.start()

    def log(
        self,
        request_id: str,
        user_id: str,
        version: str,
        items: list[dict[str, Any]],
        cold_start: bool,
        timestamp: float | None = None,
    ) -> None:
        """Queue one response: one row per shown item, ``position`` 1 = top."""
        ts = time.time() if timestamp is None else timestamp
        rows = [
            (
                user_id,
                item["item_id"],
                0,
                f"{ts:.3f}",
                request_id,
                item["position"],
                version,
                f"{item['retrieval_score']:.6f}",
                f"{item['ranking_score']:.6f}",
                int(cold_start),
            )
            for item in items
        ]
        self._queue.put(rows)

    def _open(self) -> None:
        if self._handle is not None:
            self._handle.close()
        suffix = "" if self._part == 0 else f"-{self._part}"
        path = self.folder / f"impressions-{self._started}-{os.getpid()}{suffix}.csv"
        self._handle = open(path, "a", newline="", encoding="utf-8")  # noqa: SIM115 - kept open
        self._writer = csv.writer(self._handle)
        if self._handle.tell() == 0:
            self._writer.writerow(COLUMNS)
        self._rows_in_file = 0
        self._part += 1

    def _run(self) -> None:
        self._open()
        while True:
            batch = self._queue.get()
            pending = [batch]
            while not self._queue.empty():  # drain what queued meanwhile, write once
                pending.append(self._queue.get_nowait())
            stop = False
            for rows in pending:
                if rows is None:
                    stop = True
                    continue
                if self._rows_in_file >= self.rows_per_file:
                    self._open()
                self._writer.writerows(rows)
                self._rows_in_file += len(rows)
            self._handle.flush()
            if stop:
                self._handle.close()
                return

    def close(self) -> None:
        """Write everything queued and close the file."""
        self._queue.put(None)
        self._thread.join(timeout=10)

    def files(self) -> list[Path]:
        """The log files written so far, oldest first."""
        return sorted(self.folder.glob("impressions-*.csv"))


def impressions_to_examples(
    impressions: pd.DataFrame, interactions: pd.DataFrame, horizon_seconds: float = 86_400.0
) -> pd.DataFrame:
    """Label impressions: chosen within ``horizon_seconds`` -> that rating, else 0 (negative).

    Both frames have the interactions schema (user_id, item_id, rating, timestamp as read by
    ``data.readers.check_interactions``); ``impressions`` may carry the extra log columns.
    Returns the impressions with ``rating`` set and a boolean ``chosen`` column.
    """
    shown = impressions.reset_index(drop=True).copy()
    shown["_row"] = range(len(shown))
    joined = shown.merge(
        interactions[["user_id", "item_id", "rating", "timestamp"]],
        on=["user_id", "item_id"],
        how="left",
        suffixes=("", "_chosen"),
    )
    delay = joined["timestamp_chosen"] - joined["timestamp"]
    hit = (delay >= 0) & (delay <= horizon_seconds)
    chosen = joined[hit].groupby("_row")["rating_chosen"].max()
    shown["chosen"] = shown["_row"].isin(chosen.index)
    shown["rating"] = shown["_row"].map(chosen).fillna(0.0).astype("float64")
    return shown.drop(columns="_row")

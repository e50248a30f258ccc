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

Durability: rows are queued by the request thread (never blocking a response; a full queue
drops rows, counted) and written by one background thread in whole lines, each batch with
one unbuffered ``os.write`` of complete rows. A write that fails (disk full, a file-size
limit, a vanished folder) is cut back to the last whole line, counted, logged once per
failure episode and retried after a backoff on a reopened file; the writer thread never
dies of it. Rows wait in a bounded buffer meanwhile (the oldest are dropped, counted, when
it is full). If a failed write cannot be cut back, the next rows go to a new part file, so
only the last line of a file can ever be torn, and :func:`read_impressions` skips (and
counts) such a line instead of refusing the file. ``close`` drains the queue.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from torchrec_recsys.errors import DataError

log = logging.getLogger("torchrec_recsys.serving")

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
FILE_GLOB = "impressions-*.csv"

Row = tuple[Any, ...]


@dataclass
class ImpressionStats:
    """What the writer has done so far (read by ``/healthz`` and ``/metrics``)."""

    rows_written: int = 0
    rows_dropped: int = 0
    """Rows lost: the queue or the retry buffer was full, or the log closed while failing."""
    write_errors: int = 0
    """Failed write attempts (each retried)."""
    last_error: str | None = None
    """The current failure (None once a write succeeds again)."""
    pending_rows: int = 0
    """Rows waiting for a retry."""


class ImpressionLog:
    """Append-only CSV impression log written by a background thread that survives write
    errors (see the module docstring)."""

    def __init__(
        self,
        folder: str | Path,
        rows_per_file: int = 1_000_000,
        max_pending_rows: int = 100_000,
        retry_seconds: float = 0.5,
        max_retry_seconds: float = 30.0,
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rows_per_file = rows_per_file
        self.max_pending_rows = max_pending_rows
        self.retry_seconds = retry_seconds
        self.max_retry_seconds = max_retry_seconds
        self.stats = ImpressionStats()
        self._stats_lock = threading.Lock()
        self._queue: queue.Queue[list[Row] | None] = queue.Queue(maxsize=max(1, max_pending_rows))
        self._pending: list[Row] = []
        self._part = 0
        self._rows_in_file = 0
        self._fd: int | None = None
        self._path: Path | None = None
        self._started = int(time.time())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="impression-log", daemon=True)
        self._thread.start()

    @property
    def healthy(self) -> bool:
        """False while writes fail (or if the writer thread is gone)."""
        return self.stats.last_error is None and self._thread.is_alive()

    def log(
        self,
        request_id: str,
        user_id: str,
        version: str,
        items: list[dict[str, Any]],
        cold_start: bool,
        timestamp: float | None = None,
    ) -> None:
        """Queue one response: one row per shown item, ``position`` 1 = top (never blocks)."""
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
        if not rows:
            return
        try:
            self._queue.put_nowait(rows)
        except queue.Full:
            self._count(dropped=len(rows))

    def _count(self, written: int = 0, dropped: int = 0, errors: int = 0) -> None:
        with self._stats_lock:
            self.stats.rows_written += written
            self.stats.rows_dropped += dropped
            self.stats.write_errors += errors
            self.stats.pending_rows = len(self._pending)

    # ------------------------------------------------------------------ the writer thread

    def _open(self, new_part: bool) -> None:
        """Open (append) the current part file, or the next one with ``new_part``."""
        self._close_fd()
        if new_part or self._path is None:
            suffix = "" if self._part == 0 else f"-{self._part}"
            self._path = self.folder / f"impressions-{self._started}-{os.getpid()}{suffix}.csv"
            self._part += 1
            self._rows_in_file = 0
        self.folder.mkdir(parents=True, exist_ok=True)  # the folder may have been removed
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _write(self, rows: list[Row]) -> None:
        """Append ``rows`` as whole lines (with the header in a new file) or raise OSError,
        leaving the file as it was (or, if it cannot be cut back, switching to a new part)."""
        if self._fd is not None and os.fstat(self._fd).st_nlink == 0:
            self._open(new_part=False)  # the file was deleted (or its folder): write a new one
        if self._fd is None:
            self._open(new_part=False)
        elif self._rows_in_file >= self.rows_per_file:
            self._open(new_part=True)
        assert self._fd is not None
        start = os.fstat(self._fd).st_size
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        if start == 0:
            writer.writerow(COLUMNS)
        writer.writerows(rows)
        data = memoryview(text.getvalue().encode("utf-8"))
        try:
            while data:
                written = os.write(self._fd, data)
                data = data[written:]
        except OSError:
            try:
                os.ftruncate(self._fd, start)  # cut a partial line back to the last whole one
            except OSError:
                self._path = None  # cannot cut it: the next write starts a new part file
            self._close_fd()
            raise
        self._rows_in_file += len(rows)

    def _flush_pending(self) -> bool:
        """Try to write every pending row; True on success."""
        if not self._pending:
            return True
        try:
            self._write(self._pending)
        except OSError as exc:
            first = self.stats.last_error is None
            with self._stats_lock:
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
            self._count(errors=1)
            if first:  # once per failure episode, not once per retry
                log.error(
                    "impression log write to %s failed (%s); retrying, requests still served",
                    self.folder,
                    exc,
                )
            return False
        written = len(self._pending)
        self._pending = []
        if self.stats.last_error is not None:
            log.info("impression log writes to %s work again", self.folder)
        with self._stats_lock:
            self.stats.last_error = None
        self._count(written=written)
        return True

    def _take(self, timeout: float | None) -> bool:
        """Move queued rows to the pending buffer (waiting up to ``timeout``); False on close."""
        try:
            batch = self._queue.get(timeout=timeout)
        except queue.Empty:
            return True
        batches = [batch]
        while True:
            try:
                batches.append(self._queue.get_nowait())
            except queue.Empty:
                break
        keep_going = True
        for rows in batches:
            if rows is None:
                keep_going = False
            else:
                self._pending.extend(rows)
        overflow = len(self._pending) - self.max_pending_rows
        if overflow > 0:  # the oldest go: a bounded buffer, never unbounded memory
            del self._pending[:overflow]
            self._count(dropped=overflow)
        return keep_going

    def _run(self) -> None:
        delay = self.retry_seconds
        retry_at = 0.0  # while failing: no write attempt before this time (backoff)
        running = True
        while running:
            try:
                wait = max(0.0, retry_at - time.monotonic()) if self._pending else None
                running = self._take(wait)
                if time.monotonic() < retry_at and running:
                    continue
                if self._flush_pending():
                    delay = self.retry_seconds
                else:
                    retry_at = time.monotonic() + delay
                    delay = min(2 * delay, self.max_retry_seconds)
            except Exception:  # noqa: BLE001 - the writer must outlive anything a row does
                log.exception("impression log writer error; continuing")
                with self._stats_lock:
                    self.stats.last_error = "unexpected writer error (see the server log)"
                self._count(errors=1)
                retry_at = time.monotonic() + delay
        if not self._flush_pending():  # closing: one last try, then the rest is counted lost
            lost = len(self._pending)
            self._pending = []
            self._count(dropped=lost)
        self._close_fd()

    def close(self) -> None:
        """Write everything queued and close the file."""
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=5)
        self._thread.join(timeout=10)

    def files(self) -> list[Path]:
        """The log files written so far, oldest first."""
        return sorted(self.folder.glob(FILE_GLOB))


@dataclass
class ImpressionRows:
    """What :func:`read_impressions` read."""

    frame: pd.DataFrame
    """Every whole row (strings, the log's columns), files in name order."""
    torn_lines: int
    """Torn last lines skipped (a write cut short by a crash or a full disk)."""
    files: list[Path]


def read_impressions(paths: str | Path | list[Path]) -> ImpressionRows:
    """Read impression log files (or every one in a folder): each whole row; a torn last
    line of a file (no final newline) is skipped and counted, not a reason to refuse it.

    Raises:
        DataError: a file is missing, is not an impression log (header), or has a malformed
            whole row (named with its file).
    """
    if isinstance(paths, str | Path):
        folder = Path(paths)
        files = sorted(folder.glob(FILE_GLOB)) if folder.is_dir() else [folder]
    else:
        files = [Path(p) for p in paths]
    frames: list[pd.DataFrame] = []
    torn = 0
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(f"impression log {str(path)!r} is unreadable ({exc})") from None
        end = data.rfind(b"\n") + 1
        if end < len(data):
            torn += 1
            data = data[:end]
        if not data:
            continue
        try:
            frame = pd.read_csv(
                io.BytesIO(data), dtype="string", keep_default_na=False, encoding="utf-8"
            )
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            raise DataError(
                f"impression log {str(path)!r} has a malformed row ({str(exc).strip()})"
            ) from None
        if tuple(frame.columns) != COLUMNS:
            raise DataError(
                f"impression log {str(path)!r} has columns {', '.join(map(str, frame.columns))};"
                f" expected {', '.join(COLUMNS)}"
            )
        frames.append(frame)
    frame = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame({c: pd.Series(dtype="string") for c in COLUMNS})
    )
    return ImpressionRows(frame=frame, torn_lines=torn, files=files)


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

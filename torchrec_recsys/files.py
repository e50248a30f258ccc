"""Atomic file and folder writes: a reader sees the old content or the new, never a part.

The one implementation of the mechanism; every writer in the package goes through it::

    atomic_write_text(run_dir / "summary.json", text)          # one file
    with atomic_file(path, "wb") as handle: np.save(handle, a)  # one file, streamed
    with atomic_directory(folder) as staging:                   # a whole folder
        (staging / "index.faiss").write_bytes(...)
    publish_directory(staged, folder)                           # a folder staged by others
    publish_file(staged_file, path)                             # a file a library streamed

Files and folders are staged next to their target (same file system, so the final
``os.replace`` is atomic), fsynced, and renamed into place; on any error the staged copy is
removed and an existing target is left (or put back) as it was.

Reading back: every JSON file the package writes is read through :func:`read_json` and checked
against a pydantic model of its shape with :func:`validated` (``read_validated`` does both), so
a wrong shape is one line naming the file and the field, never a traceback::

    state = read_validated(root / "state.json", StateModel, "registry state")
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from pydantic import BaseModel

M = TypeVar("M", bound="BaseModel")


def _read_umask() -> int:
    """The process umask (read once, at import: setting it to read it is not thread-safe)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()
FILE_MODE = 0o666 & ~_UMASK
"""Mode of a published file: what ``open()`` would give (``tempfile`` stages at 0600)."""
DIR_MODE = 0o777 & ~_UMASK
"""Mode of a published folder: what ``mkdir`` would give (``tempfile`` stages at 0700)."""


def fsync_path(path: Path) -> None:
    """fsync a file or folder so a rename is durable (best effort on odd file systems)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(
    path: str | Path, mode: str = "w", encoding: str | None = "utf-8"
) -> Iterator[IO[Any]]:
    """Open a staging file next to ``path``; on a clean exit it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staged = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        os.chmod(fd, FILE_MODE)
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staged, path)
    except BaseException:
        Path(staged).unlink(missing_ok=True)
        raise


def publish_file(staged: Path, target: Path) -> None:
    """Move the complete file ``staged`` (written next to ``target``) onto ``target``
    atomically, for writers that stream into a file of their own (e.g. a Parquet writer)."""
    fsync_path(staged)
    os.replace(staged, target)
    fsync_path(target.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_file(path, "w") as handle:
        handle.write(text)


def publish_directory(staged: Path, target: Path) -> None:
    """Move the complete folder ``staged`` to ``target`` atomically, replacing any old one.

    ``os.replace`` cannot replace a non-empty folder, so an old ``target`` is first moved
    aside (and put back if the final rename fails), then removed.
    """
    fsync_path(staged)
    old: Path | None = None
    try:
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
            os.replace(target, old / target.name)
        os.replace(staged, target)
    except BaseException:
        if old is not None and not target.exists():
            os.replace(old / target.name, target)  # put the previous folder back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    fsync_path(target.parent)


@contextlib.contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder; on a clean exit it becomes ``target`` atomically."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        staged.chmod(DIR_MODE)
        yield staged
        publish_directory(staged, target)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def check_output_folder(path: str | Path, overwrite: bool, flag: str = "--out") -> Path:
    """Refuse an output folder before any work: a file (or a folder below a file) always,
    and an existing non-empty folder unless ``overwrite`` (an empty one is used as is).

    Raises:
        UserError: one line naming ``flag``, the path and what was expected.
    """
    from torchrec_recsys.errors import UserError

    path = Path(path)
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.is_dir():
            where = "is a file" if parent == path else f"is below the file {str(parent)!r}"
            raise UserError(f"{flag} {str(path)!r} {where}; expected a folder path")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise UserError(
            f"{flag} {str(path)!r} already exists and is not empty; pass --overwrite to "
            "replace it, or choose a new folder"
        )
    return path


# --------------------------------------------------------------------------- read back


def read_json(path: str | Path, what: str) -> Any:
    """The JSON value in ``path``, a file the package wrote (``what`` names it in errors).

    Raises:
        DataError: the file is missing, not a regular file, not UTF-8 or not JSON; one line
            naming the file.
    """
    from torchrec_recsys.errors import DataError

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{what} {str(path)!r} does not exist") from None
    except (IsADirectoryError, NotADirectoryError):
        raise DataError(f"{what} {str(path)!r} is not a file") from None
    except UnicodeDecodeError:
        raise DataError(f"{what} {str(path)!r} is not UTF-8 text") from None
    except OSError as exc:
        raise DataError(f"{what} {str(path)!r} cannot be read ({exc.strerror})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{what} {str(path)!r} is not valid JSON ({exc})") from None
    except RecursionError:
        raise DataError(f"{what} {str(path)!r} is nested too deeply to be ours") from None


def validated(model: type[M], data: Any, where: str, error: type[Exception] | None = None) -> M:
    """``data`` (parsed JSON) checked against the pydantic ``model``: the one validator of the
    package's own files. ``where`` names the file (or answer) in the message.

    Raises:
        DataError (or ``error``): one line naming ``where``, the first bad field (dotted path,
            list positions as numbers) and what was expected.
    """
    import pydantic

    from torchrec_recsys.errors import DataError

    try:
        return model.model_validate(data, strict=True)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = ".".join(str(part) for part in first["loc"] if part != "[key]")
        field = f"field {loc!r}" if loc else "the top level"
        got = first.get("input")
        kind = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
        shown = kind.get(type(got)) or (repr(got) if len(repr(got)) <= 60 else type(got).__name__)
        message = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "missing":
            problem = "is missing"
        elif first["type"] == "extra_forbidden":
            problem = "is not expected here"
        elif first["type"] in ("model_type", "dict_type", "model_attributes_type"):
            problem = f"is {shown}; expected a JSON object"
        else:
            problem = f"is wrong ({message[0].lower()}{message[1:]}; got {shown})"
        more = exc.error_count() - 1
        extra = f", and {more} more problem{'s' * (more > 1)}" if more else ""
        raise (error or DataError)(f"{where}: {field} {problem}{extra}") from None


def read_validated(path: str | Path, model: type[M], what: str) -> M:
    """:func:`read_json` then :func:`validated`: a file the package wrote, its shape checked."""
    return validated(model, read_json(path, what), f"{what} {str(path)!r}")

"""Sharded checkpoints with ``torch.distributed.checkpoint`` (DCP), written atomically.

Layout under the run directory::

    checkpoints/
      step_00000010/            <- complete: DCP shards + .metadata + rng_rank*.json
                                   + trainer_state.json (written last)
      step_00000014.tmp/        <- being written (or a crash mid-write): never resumed from

Every rank writes its own shards and its RNG states into the ``.tmp`` folder; after a barrier
rank 0 writes ``trainer_state.json`` and renames the folder. A folder without the ``.tmp``
suffix is therefore always complete. DCP reshards on load, so a checkpoint saved by N
processes loads into M: table-wise, row-wise and column-wise shards, data-parallel tables
and the fused optimizer's per-row state alike.

Resume is exact: the state records the data position as a sample offset into the epoch's
shuffled order (see ``data/loader.py``) and every rank's torch / numpy / python RNG states.

Loading is safe on untrusted folders: DCP's own reader unpickles ``.metadata`` with
plain ``pickle`` and non-tensor items with ``torch.load`` without ``weights_only``; here the
metadata goes through an allow-list unpickler (DCP's metadata classes, torch sizes and
dtypes only) and non-tensor items through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
import json
import pickle
import shutil
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torch.distributed.checkpoint import metadata as dcp_metadata
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.filesystem import FileSystemReader
from torch.distributed.checkpoint.planner import ReadItem
from torch.optim import Optimizer

from torchrec_recsys.errors import UserError
from torchrec_recsys.files import atomic_write_text, publish_directory
from torchrec_recsys.training.state import TrainerState, capture_rng_state, restore_rng_state

STATE_FILE = "trainer_state.json"
METADATA_FILE = ".metadata"
TMP_SUFFIX = ".tmp"


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint folder, or ``None``."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return None
    complete = [
        p
        for p in root.iterdir()
        if p.is_dir() and not p.name.endswith(TMP_SUFFIX) and (p / STATE_FILE).is_file()
    ]
    return max(complete, key=lambda p: p.name, default=None)


def _rng_file(rank: int) -> str:
    return f"rng_rank{rank}.json"


# --- save ------------------------------------------------------------------------------------


def save_checkpoint(
    run_dir: Path, model: nn.Module, optimizer: Optimizer, state: TrainerState, keep_last: int = 2
) -> Path:
    """Write model + optimizer (sharded), RNG states and ``state``; every rank must call this.

    ``keep_last`` complete checkpoints are kept (0 = all).
    """
    root = checkpoint_dir(run_dir)
    final = root / f"step_{state.global_step:08d}"
    tmp = final.with_name(final.name + TMP_SUFFIX)
    rank = dist.get_rank()
    state.world_size = dist.get_world_size()
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    dcp.save({"model": model.state_dict(), "optim": optimizer.state_dict()}, checkpoint_id=str(tmp))
    (tmp / _rng_file(rank)).write_text(json.dumps(capture_rng_state()))
    dist.barrier()
    if rank == 0:
        atomic_write_text(tmp / STATE_FILE, json.dumps(asdict(state)))
        publish_directory(tmp, final)
        _prune(root, keep_last, final)
    dist.barrier()
    return final


def _prune(root: Path, keep_last: int, newest: Path) -> None:
    """Keep the ``keep_last`` newest complete checkpoints; drop abandoned ``.tmp`` folders."""
    for stale in root.glob(f"*{TMP_SUFFIX}"):
        if stale.name < newest.name:  # left by a crash while saving an older step
            shutil.rmtree(stale, ignore_errors=True)
    complete = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.endswith(TMP_SUFFIX)),
        key=lambda p: p.name,
    )
    for old in complete[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


# --- safe load -------------------------------------------------------------------------------


def _metadata_class(name: str) -> bool:
    obj = getattr(dcp_metadata, name, None)
    return isinstance(obj, type) and obj.__module__ == dcp_metadata.__name__


_ALLOWED_GLOBALS: dict[str, Any] = {
    dcp_metadata.__name__: _metadata_class,
    "torch.distributed.checkpoint.filesystem": lambda n: n == "_StorageInfo",
    "torch.serialization": lambda n: n == "_get_layout",
    "torch": lambda n: n == "Size" or isinstance(getattr(torch, n, None), torch.dtype),
    "pathlib": lambda n: n in ("Path", "PosixPath", "PurePosixPath", "WindowsPath"),
    "collections": lambda n: n == "OrderedDict",
}


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP metadata, refusing every global outside an allow-list."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get(module)
        if allowed is None or not allowed(name):
            raise pickle.UnpicklingError(f"refused to unpickle {module}.{name}")
        return super().find_class(module, name)


class SafeFileSystemReader(FileSystemReader):
    """DCP's file reader with an allow-list unpickler for ``.metadata``."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> dcp_metadata.Metadata:
        rank = kwargs.get("rank")
        name = METADATA_FILE if rank is None else f"__{rank}{METADATA_FILE}"
        with self.fs.create_stream(self.fs.concat_path(self.path, name), "rb") as stream:
            metadata = _MetadataUnpickler(stream).load()
        if not isinstance(metadata, dcp_metadata.Metadata):
            raise pickle.UnpicklingError(f"{name} holds a {type(metadata).__name__}")
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = dcp_metadata.StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """DCP's default load planner, but non-tensor items load with ``weights_only=True``."""

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        obj = torch.load(value, weights_only=True)
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
        else:
            self.state_dict[read_item.dest_index.fqn] = obj


@torch.no_grad()
def materialize_optimizer_state(optimizer: Optimizer) -> None:
    """Create lazily built optimizer state (Adam's moments and step) so DCP can load into it.

    DCP loads in place, and only the keys the target state dict already holds: a fresh
    torch optimizer has no state yet, so without this the saved moments would be skipped
    silently and the resumed run would restart Adam from zero. One step with zero gradients
    creates the state; SGD, Adagrad and Adam without weight decay leave the weights unchanged
    on zero gradients, and the load overwrites both weights and state anyway. This covers
    data-parallel tables too (their weights go to the dense optimizer). The fused (fbgemm)
    optimizer allocates its state eagerly and is left alone.
    """
    parts = getattr(optimizer, "optimizers", None)
    for opt in [o for _, o in parts] if isinstance(parts, list) else [optimizer]:
        lazy = [
            p
            for group in opt.param_groups
            for p in group["params"]
            if isinstance(p, torch.Tensor)
            and not isinstance(p, ShardedTensor)
            and p.requires_grad
            and p not in opt.state
        ]
        if not lazy:
            continue
        for p in lazy:
            p.grad = torch.zeros_like(p)
        opt.step()
        for p in lazy:
            p.grad = None


def read_trainer_state(path: Path) -> TrainerState:
    """The :class:`TrainerState` of checkpoint folder ``path``.

    Raises:
        UserError: the file is missing or is not a trainer state written by this package.
    """
    state_file = path / STATE_FILE
    if not state_file.is_file():
        raise UserError(f"checkpoint {str(path)!r} is incomplete: {STATE_FILE} is missing")
    try:
        raw = json.loads(state_file.read_text())
        known = {f.name for f in fields(TrainerState)}
        if not isinstance(raw, dict) or not set(raw) <= known:
            raise ValueError(f"unexpected keys {sorted(set(raw) - known)}")
        return TrainerState(**raw)
    except (ValueError, TypeError) as e:
        raise UserError(
            f"checkpoint {str(path)!r} has an unreadable {STATE_FILE} ({e}); it was not "
            f"written by torchrec_recsys or is corrupt"
        ) from None


def load_checkpoint(
    path: Path, model: nn.Module, optimizer: Optimizer, restore_rng: bool = False
) -> TrainerState:
    """Load ``path`` into ``model`` and ``optimizer`` in place (resharding as needed).

    With ``restore_rng`` every rank also takes back its RNG states (rank 0's when the
    checkpoint was written by fewer processes). Collective call.

    Raises:
        UserError: the folder is incomplete, truncated, corrupt, or from another model.
    """
    state = read_trainer_state(path)
    if not (path / METADATA_FILE).is_file():
        raise UserError(f"checkpoint {str(path)!r} is incomplete: {METADATA_FILE} is missing")
    materialize_optimizer_state(optimizer)
    tensors = {"model": model.state_dict(), "optim": optimizer.state_dict()}
    try:
        dcp.load(tensors, storage_reader=SafeFileSystemReader(path), planner=SafeLoadPlanner())
    except (Exception, CheckpointException) as e:  # CheckpointException is a BaseException
        raise UserError(
            f"checkpoint {str(path)!r} cannot be loaded into this model: it is truncated, "
            f"corrupt or from another model ({_root_cause(e)})"
        ) from None
    model.load_state_dict(tensors["model"])
    optimizer.load_state_dict(tensors["optim"])
    if restore_rng:
        rank = dist.get_rank()
        rng_file = path / _rng_file(rank)
        if not rng_file.is_file():
            rng_file = path / _rng_file(0)
        if not rng_file.is_file():
            raise UserError(f"checkpoint {str(path)!r} is incomplete: {rng_file.name} is missing")
        try:
            rng = json.loads(rng_file.read_text())
        except ValueError as e:
            raise UserError(f"checkpoint file {str(rng_file)!r} is not valid JSON ({e})") from None
        restore_rng_state(rng)
    return state


def _root_cause(error: BaseException) -> str:
    """``Type: message`` of the first rank's failure (DCP wraps them in CheckpointException)."""
    if isinstance(error, CheckpointException) and error.failures:
        error = next(iter(error.failures.values()))[0]
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300] if text else ''}"

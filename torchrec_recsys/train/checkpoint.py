"""Sharded checkpoints with ``torch.distributed.checkpoint`` (DCP), written atomically.

Layout under the run directory::

    checkpoints/
      step_00000383/            <- complete: DCP shards + .metadata + trainer_state.json
      step_00000766.tmp/        <- being written (or a crash mid-write): never resumed from

Every rank writes its own shards into the ``.tmp`` folder; after a barrier rank 0 writes
``trainer_state.json`` and renames the folder. A folder without the ``.tmp`` suffix is
therefore always complete. DCP reshards on load, so a checkpoint saved by N processes
loads into M.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.optim import Optimizer

from torchrec_recsys.errors import UserError

STATE_FILE = "trainer_state.json"


@dataclass
class TrainerState:
    """Where training stands: the step count and the position in the data."""

    global_step: int = 0
    epoch: int = 0
    """Epoch to run next (equal to the number of finished epochs at an epoch-end save)."""
    step_in_epoch: int = 0
    """Steps of ``epoch`` already trained (0 at an epoch boundary)."""
    samples_seen: int = 0


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
        if p.is_dir() and not p.name.endswith(".tmp") and (p / STATE_FILE).is_file()
    ]
    return max(complete, key=lambda p: p.name, default=None)


def save_checkpoint(
    run_dir: Path, model: nn.Module, optimizer: Optimizer, state: TrainerState, keep_last: int = 2
) -> Path:
    """Write model + optimizer (sharded) and ``state``; every rank must call this."""
    root = checkpoint_dir(run_dir)
    final = root / f"step_{state.global_step:08d}"
    tmp = final.with_name(final.name + ".tmp")
    rank0 = dist.get_rank() == 0
    if rank0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    dcp.save({"model": model.state_dict(), "optim": optimizer.state_dict()}, checkpoint_id=str(tmp))
    dist.barrier()
    if rank0:
        (tmp / STATE_FILE).write_text(json.dumps(asdict(state)))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        _prune(root, keep_last)
    dist.barrier()
    return final


def _prune(root: Path, keep_last: int) -> None:
    complete = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.endswith(".tmp")),
        key=lambda p: p.name,
    )
    for old in complete[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(path: Path, model: nn.Module, optimizer: Optimizer) -> TrainerState:
    """Load ``path`` into ``model`` and ``optimizer`` in place (resharding as needed)."""
    state_file = path / STATE_FILE
    if not state_file.is_file():
        raise UserError(f"checkpoint {str(path)!r} is incomplete: {STATE_FILE} is missing")
    state = {"model": model.state_dict(), "optim": optimizer.state_dict()}
    try:
        dcp.load(state, checkpoint_id=str(path))
    except Exception as e:  # DCP wraps per-rank failures in CheckpointException
        raise UserError(
            f"checkpoint {str(path)!r} cannot be loaded into this model "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optim"])
    return TrainerState(**json.loads(state_file.read_text()))

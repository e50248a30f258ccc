"""Best-epoch selection and early stopping, from the validation metrics in the epoch history.

Everything is a pure function of ``TrainerState.history`` (which survives resumes), so a
resumed run selects and stops exactly as an uninterrupted one. The best epoch's checkpoint
is copied to ``<run dir>/best/`` (outside the rotating ``checkpoints/``), and
``best/selection.json`` says which epoch and value it holds::

    run_dir/checkpoints/step_*   newest checkpoints (resume)   -> kept keep_last_checkpoints
    run_dir/best/                the selected epoch's checkpoint -> test metrics, export, pipeline
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.distributed as dist

from torchrec_recsys.errors import ConfigError
from torchrec_recsys.files import atomic_directory

BEST_DIR = "best"
SELECTION_FILE = "selection.json"
LOWER_IS_BETTER = ("loss", "ne")
"""Validation metrics to minimise; every other one (auc, recall@K, ndcg@K, mrr, ...) is
maximised."""


@dataclass(frozen=True)
class Selection:
    """The selected epoch (0-based) and its validation value of ``metric``."""

    epoch: int
    metric: str
    value: float
    epochs_run: int


def _better(a: float, b: float, metric: str) -> bool:
    """Whether value ``a`` strictly improves on ``b`` (NaN never improves)."""
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a < b if metric in LOWER_IS_BETTER else a > b


def best_epoch(history: list[dict[str, Any]], metric: str) -> Selection | None:
    """The epoch of ``history`` with the best validation ``metric`` (earliest on ties).

    Returns None when no epoch has validation metrics (no validation split).

    Raises:
        ConfigError: the validation metrics lack ``metric``.
    """
    best: Selection | None = None
    for record in history:
        val = record.get("val") or {}
        if not val:
            continue
        if metric not in val:
            raise ConfigError(
                f"train.select_metric = {metric!r} is not a validation metric of this model; "
                f"expected one of {', '.join(sorted(val))}"
            )
        value = float(val[metric])
        if best is None or _better(value, best.value, metric):
            best = Selection(record["epoch"], metric, value, len(history))
    return None if best is None else Selection(best.epoch, metric, best.value, len(history))


def should_stop(history: list[dict[str, Any]], metric: str, patience: int) -> bool:
    """True when the last ``patience`` epochs brought no improvement (``patience`` 0 = never)."""
    best = best_epoch(history, metric) if patience > 0 else None
    return best is not None and history[-1]["epoch"] - best.epoch >= patience


def best_checkpoint(run_dir: Path) -> Path | None:
    """The selected epoch's checkpoint folder, if the run kept one."""
    folder = Path(run_dir) / BEST_DIR
    return folder if (folder / SELECTION_FILE).is_file() else None


def read_selection(run_dir: Path) -> dict[str, Any] | None:
    """The ``selection.json`` of the run's best checkpoint (None without one)."""
    folder = best_checkpoint(run_dir)
    return json.loads((folder / SELECTION_FILE).read_text()) if folder else None


def keep_if_best(
    run_dir: Path, checkpoint: Path, history: list[dict[str, Any]], metric: str
) -> bool:
    """Copy ``checkpoint`` (just saved for the last epoch of ``history``) to ``best/`` when
    that epoch is the best so far. Collective: rank 0 copies, everyone waits. Returns whether
    it was copied."""
    best = best_epoch(history, metric)
    is_best = best is not None and best.epoch == history[-1]["epoch"]
    if is_best and dist.get_rank() == 0:
        with atomic_directory(Path(run_dir) / BEST_DIR) as staged:
            shutil.copytree(checkpoint, staged, dirs_exist_ok=True)
            record = {"epoch": best.epoch, "metric": metric, "value": best.value}
            (staged / SELECTION_FILE).write_text(
                json.dumps({**record, "checkpoint": checkpoint.name})
            )
    dist.barrier()
    return is_best


def choose_on_validation(
    by_value: Mapping[float, Mapping[str, float]], metric: str
) -> tuple[float, dict[float, float]]:
    """The value with the best validation ``metric`` (the earliest in ``by_value``'s order on
    ties), from each value's validation metrics. Used for the generative model's cold-item
    share. Returns (chosen, metric per value).

    Raises:
        ConfigError: ``by_value`` is empty, or the metrics lack ``metric``.
    """
    if not by_value:
        raise ConfigError("the tuning grid is empty: give at least one value")
    values: dict[float, float] = {}
    for value, metrics in by_value.items():
        if metric not in metrics:
            raise ConfigError(
                f"{metric!r} is not a validation metric; expected one of {', '.join(metrics)}"
            )
        values[value] = float(metrics[metric])
    grid = list(values)
    chosen = grid[0]
    for value in grid[1:]:
        if _better(values[value], values[chosen], metric):
            chosen = value
    return chosen, values

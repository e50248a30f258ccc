"""Load a trained run back as a plain (unsharded) CPU model, for export and inference.

    run_dir/config.json -> rebuild data + task on meta -> DMP -> load newest DCP checkpoint
        -> gather every shard to rank 0 -> plain task module on CPU (rank 0; others get None)

The DCP checkpoint reshards on load, so a run trained with N processes loads with any number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from torchrec_recsys.app import builders
from torchrec_recsys.config import RUN_CONFIG_FILE, ExperimentConfig, config_from_dict
from torchrec_recsys.data.dataset import RecDataset
from torchrec_recsys.data.vocab import load_vocabularies
from torchrec_recsys.distributed.env import DistContext
from torchrec_recsys.distributed.state import gather_full_state
from torchrec_recsys.errors import DataError, UserError
from torchrec_recsys.training.checkpoint_io import latest_checkpoint, load_checkpoint
from torchrec_recsys.training.selection import best_checkpoint
from torchrec_recsys.training.state import TrainerState


@dataclass
class TrainedModel:
    """A trained task module (plain, on CPU, in eval mode) with its config and data."""

    cfg: ExperimentConfig
    data: RecDataset
    task: nn.Module | None  # None on ranks other than 0
    checkpoint: Path
    state: TrainerState
    sequences: builders.SequenceInputs | None = None
    """Sequence examples and token spelling of a ``sasrec`` / ``generative`` run."""


def read_run_config(run_dir: Path) -> ExperimentConfig:
    """The resolved config a run was trained with."""
    path = Path(run_dir) / RUN_CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{str(run_dir)!r} is not a run directory: {RUN_CONFIG_FILE} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UserError(f"run config {str(path)!r} is not readable JSON ({e})") from None
    if not isinstance(data, dict):
        raise UserError(f"run config {str(path)!r} is not a JSON object of config sections")
    return config_from_dict(data, where=str(path))


def check_vocabularies(run_dir: Path, data: RecDataset) -> None:
    """Fail if the data was re-encoded differently from training (e.g. the files changed)."""
    path = Path(run_dir) / "vocab.json"
    try:
        saved = load_vocabularies(path)
    except (ValueError, OSError, KeyError, TypeError, AttributeError) as e:
        raise DataError(f"vocabularies {str(path)!r} are missing or damaged ({e!r})") from None
    for name, vocab in data.vocabs.items():
        if name not in saved or saved[name].tokens != vocab.tokens:
            raise DataError(
                f"vocabulary {name!r} rebuilt from the data differs from the one saved in "
                f"{str(run_dir)!r}: the data changed since training"
            )


def load_trained(
    run_dir: str | Path, ctx: DistContext, data: RecDataset | None = None
) -> TrainedModel:
    """Rebuild, load and unshard the run's selected (best-epoch) checkpoint, else its newest
    (collective call)."""
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    if data is None:
        if cfg.model.objective == "pipeline":
            raise UserError(
                f"{str(run_dir)!r} is a pipeline-objective ranker: load it with "
                f"app.pipeline.load_ranker, which rebuilds its (query, candidate) pairs"
            )
        data = builders.build_data(cfg)
    check_vocabularies(run_dir, data)
    checkpoint = best_checkpoint(run_dir) or latest_checkpoint(run_dir)  # the selected epoch
    if checkpoint is None:
        raise UserError(f"run directory {str(run_dir)!r} has no complete checkpoint")
    sequences = builders.build_sequence_inputs(cfg, data)
    sharded, optimizer = builders.build_sharded(cfg, data, ctx, sequences)
    state = load_checkpoint(checkpoint, sharded, optimizer)
    full = gather_full_state(sharded)
    task = None
    if ctx.is_main:
        task = builders.build_task(
            cfg, data, dense_device="cpu", sparse_device="cpu", sequences=sequences
        )
        prefix = "_dmp_wrapped_module."
        task.load_state_dict({k.removeprefix(prefix): v for k, v in full.items()})
        task.eval()
    return TrainedModel(
        cfg=cfg, data=data, task=task, checkpoint=checkpoint, state=state, sequences=sequences
    )

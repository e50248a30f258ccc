"""``main(argv)``: the one training entry point (CLI, torchx and tests all call it).

python -m torchrec_recsys train [--config FILE] [--resume | --resume-if-any] [--run-id ID]
    [--run-dir DIR] [--profile] [--section.key=value ...]

Fault tolerance: ``--resume-if-any --run-id <job id>`` makes every attempt of a retried job
use the same run directory and continue from its newest complete checkpoint (the torchx
component sets both, as ``$TORCHREC_RECSYS_RESUME_IF_ANY`` and ``$TORCHREC_RECSYS_RUN_ID``,
when ``max_retries > 0``). For tests, ``TORCHREC_RECSYS_FAULT_AT_STEP``
makes one rank die right after that global step, once per run directory.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from torchrec_recsys.app import builders, parsers
from torchrec_recsys.app.pipeline import build_run_data
from torchrec_recsys.app.results import SUMMARY_FILE, RunResult
from torchrec_recsys.app.run_folder import (
    HEARTBEAT_S,
    STALE_AFTER_S,
    RunLock,
    check_resume_config,
    existing_files,
    new_run_dir,
    newest_run_with_checkpoint,
    write_run_metadata,
)
from torchrec_recsys.config import (
    RUN_CONFIG_FILE,
    ExperimentConfig,
    check_plain_name,
    config_to_dict,
    load_config,
    resolve_pipeline,
    selection_metric,
)
from torchrec_recsys.distributed.env import DistContext, init_distributed, shutdown_distributed
from torchrec_recsys.distributed.sharding import planner_hosts
from torchrec_recsys.errors import DataWarning, UserError
from torchrec_recsys.files import atomic_write_text
from torchrec_recsys.observability.tensorboard import flatten_hparams
from torchrec_recsys.training.checkpoint_io import latest_checkpoint, load_checkpoint
from torchrec_recsys.training.evaluation import SequenceEvaluator, unwrap
from torchrec_recsys.training.schedule import build_schedule
from torchrec_recsys.training.selection import (
    best_checkpoint,
    choose_on_validation,
    read_selection,
)
from torchrec_recsys.training.state import TrainerState
from torchrec_recsys.training.trainer import Trainer

STREAM_FILE = "shards.json"
"""With ``data.source = "shards"``: the shard folder and vocabulary hash the run trained on
(a resume must stream shards with the same hash)."""
FAULT_STEP_ENV = "TORCHREC_RECSYS_FAULT_AT_STEP"
"""Test hook: global step after which one rank dies (first time per run directory only)."""
FAULT_RANK_ENV = "TORCHREC_RECSYS_FAULT_RANK"
"""Which rank dies (default 0)."""
FAULT_MODE_ENV = "TORCHREC_RECSYS_FAULT_MODE"
"""``exit`` (default: ``os._exit(1)``, like a killed process) or ``raise`` (a RuntimeError)."""
FAULT_MARKER = ".fault_injected"


def parse_config(argv: list[str] | None) -> tuple[ExperimentConfig, argparse.Namespace]:
    args, overrides = parsers.train_parser().parse_known_args(argv)
    flags = []
    if args.model:
        flags.append(f"--model.name={args.model}")
    if args.resume:
        flags.append("--train.resume=true")
    if args.profile:
        flags.append("--train.profile=true")
    return load_config(args.config, [*overrides, *flags]), args


def resolve_run_dir(
    cfg: ExperimentConfig,
    ctx: DistContext,
    run_dir_arg: str | Path | None = None,
    run_id: str | None = None,
    resume_if_any: bool = False,
) -> tuple[Path, Path | None, RunLock | None]:
    """The run directory, the checkpoint to resume from and (rank 0) the folder's lock.

    Rank 0 decides (the file system is shared), takes the run folder's lock, then
    broadcasts: ranks never disagree about whether this attempt resumes.

    Raises:
        UserError: ``--resume`` finds no checkpoint, ``--run-id`` is not a plain name, a
            fresh run would reuse a folder that holds files, or another job holds the lock.
    """
    choice: list[Any] = [None, None, None]  # run dir, checkpoint, error
    lock: RunLock | None = None
    if ctx.is_main:
        root = Path(cfg.train.output_dir) / cfg.name
        run_dir: Path | None = None
        resuming = cfg.train.resume or resume_if_any
        try:
            if run_dir_arg:
                run_dir = Path(run_dir_arg)
            elif run_id:
                check_plain_name(run_id, "--run-id")
                run_dir = root / run_id
            elif resuming:
                run_dir = newest_run_with_checkpoint(root)
            if cfg.train.resume and run_dir is None:
                raise UserError(
                    f"--resume found no run of {cfg.name!r} with a checkpoint under {str(root)!r}"
                )
            run_dir = run_dir or new_run_dir(root)
            checkpoint = latest_checkpoint(run_dir) if resuming else None
            if cfg.train.resume and checkpoint is None:
                raise UserError(
                    f"--resume: run directory {str(run_dir)!r} has no complete checkpoint"
                )
            found = existing_files(run_dir)
            if checkpoint is None and not resume_if_any and found:
                raise UserError(
                    f"run directory {str(run_dir)!r} already holds {', '.join(found[:4])}"
                    f"{' ...' if len(found) > 4 else ''}; a fresh run needs an empty or new "
                    f"folder: pass --resume to continue it, or another --run-id/--run-dir"
                )
            if run_dir.exists() and not run_dir.is_dir():
                raise UserError(f"run directory {str(run_dir)!r} exists and is not a folder")
            lock = RunLock(run_dir)
            # a retried job (--resume-if-any) may start before the dead attempt's lock is stale
            lock.acquire(wait_s=STALE_AFTER_S + HEARTBEAT_S if resume_if_any else 0.0)
            choice[:2] = [str(run_dir), str(checkpoint) if checkpoint else None]
        except UserError as e:
            choice[2] = str(e)
    dist.broadcast_object_list(choice, src=0)
    if choice[2]:
        raise UserError(choice[2])
    return Path(choice[0]), Path(choice[1]) if choice[1] else None, lock


def fault_injection_hook(run_dir: Path, rank: int) -> Callable[[TrainerState], None] | None:
    """Test hook from ``TORCHREC_RECSYS_FAULT_*``: one rank fails right after a global step.

    The fault fires once per run directory (a marker file records it), so the retried
    attempt that resumes the same run directory trains through.

    Raises:
        UserError: the environment variables hold invalid values.
    """
    raw = os.environ.get(FAULT_STEP_ENV, "")
    if not raw:
        return None
    mode = os.environ.get(FAULT_MODE_ENV, "exit")
    try:
        at_step, fault_rank = int(raw), int(os.environ.get(FAULT_RANK_ENV, "0"))
    except ValueError:
        raise UserError(f"{FAULT_STEP_ENV}={raw!r} and {FAULT_RANK_ENV} must be integers") from None
    if mode not in ("exit", "raise"):
        raise UserError(f"{FAULT_MODE_ENV}={mode!r} is not one of exit, raise")
    marker = run_dir / FAULT_MARKER
    if rank != fault_rank or marker.exists():
        return None

    def hook(state: TrainerState) -> None:
        if state.global_step != at_step:
            return
        marker.write_text(f"rank {rank} failed after step {at_step}\n")
        print(f"fault injection: rank {rank} fails after global step {at_step}", flush=True)
        if mode == "raise":
            raise RuntimeError(f"injected fault after global step {at_step}")
        os._exit(1)

    return hook


def seed_everything(seed: int) -> None:
    """Seed every global generator a run draws from: Python's ``random``, NumPy's legacy
    global state and torch's (CPU and every CUDA device). The data order, negatives and
    splits use generators of their own, seeded from the config."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic_algorithms() -> Iterator[None]:
    """Deterministic kernels while a run trains (same seed, data and threads: the same
    numbers bit for bit); an op without a deterministic implementation only warns. The
    process's previous setting is restored afterwards (the API may call :func:`run` inside
    a longer-lived process)."""
    was_on = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    was_benchmark = torch.backends.cudnn.benchmark
    if torch.cuda.is_available():  # cuBLAS needs a fixed workspace to be deterministic
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_on, warn_only=was_warn_only)
        torch.backends.cudnn.benchmark = was_benchmark


def run(
    cfg: ExperimentConfig, ctx: DistContext, run_dir: Path, checkpoint: Path | None = None
) -> dict[str, Any]:
    """Train and evaluate ``cfg`` in ``run_dir`` (from ``checkpoint`` if given), seeded from
    ``train.seed`` with deterministic algorithms: with the same seed, data, world size and
    threads per process, two runs give the same metrics and parameters bit for bit.

    Returns the summary (all ranks); rank 0 writes it to ``summary.json`` atomically, and
    only after training and testing finished, so a failed run leaves none.
    """
    with deterministic_algorithms():
        return _run(cfg, ctx, run_dir, checkpoint)


def _run(
    cfg: ExperimentConfig, ctx: DistContext, run_dir: Path, checkpoint: Path | None
) -> dict[str, Any]:
    wall_start = time.perf_counter()
    seed_everything(cfg.train.seed)
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DataWarning)
            trained_on = _recorded_vocab_hash(run_dir) if checkpoint is not None else None
            stream = builders.build_stream(cfg, ctx, expected_hash=trained_on)
            data = build_run_data(cfg) if stream is None else stream.dataset()
            builders.check_data(cfg, data, ctx.world_size, stream)
            sequences = builders.build_sequence_inputs(cfg, data)
    finally:  # said even when the data is then refused
        data_warnings = _report_warnings(caught, ctx.is_main)
    phases = {"data": time.perf_counter() - wall_start}
    if ctx.is_main and data.read_report:
        counts = ", ".join(f"{k}={v:,}" for k, v in data.read_report.items())
        print(f"data {data.name}: {counts}", flush=True)
    if checkpoint is not None:
        check_resume_config(run_dir, config_to_dict(cfg))
    model, optimizer = builders.build_sharded(cfg, data, ctx, sequences)
    state = TrainerState()
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, model, optimizer, restore_rng=True)
        if state.epoch > cfg.train.epochs:
            raise UserError(
                f"checkpoint {str(checkpoint)!r} has finished {state.epoch} epochs, more than "
                f"train.epochs = {cfg.train.epochs}: nothing to resume; raise train.epochs"
            )
    if ctx.is_main:  # only now is the run known valid: nothing was written before
        data.save_metadata(run_dir)
        if stream is not None:
            record = {"shards_dir": str(stream.shard_dir), "vocab_hash": stream.vocab_hash}
            atomic_write_text(run_dir / STREAM_FILE, json.dumps(record, indent=2))
        atomic_write_text(run_dir / RUN_CONFIG_FILE, json.dumps(config_to_dict(cfg), indent=2))
        write_run_metadata(run_dir, cfg.name)
    if checkpoint is not None and ctx.is_main:
        print(
            f"resumed from {checkpoint} at step {state.global_step} (epoch {state.epoch}, "
            f"{state.samples_in_epoch} examples in; written by {state.world_size} "
            f"process(es), now {ctx.world_size})",
            flush=True,
        )
    evaluator = builders.build_evaluator(cfg, data, ctx, sequences, stream=stream)
    source = stream if stream is not None else sequences.source if sequences else None
    trainer = Trainer(
        model,
        optimizer,
        data,
        ctx,
        run_dir,
        dataclasses.replace(cfg.train, pipeline=resolve_pipeline(cfg)),
        evaluator,
        on_step=fault_injection_hook(run_dir, ctx.rank),
        source=source,
        select_metric=selection_metric(cfg),
        patience=cfg.train.patience,
        validate=stream.rows("val") > 0 if stream is not None else None,
    )
    o = cfg.optimizer
    if o.schedule != "constant" or o.warmup_steps:
        dense = optimizer.optimizers[-1][1]  # CombinedOptimizer([fused sparse, dense])
        total = trainer.steps_left(TrainerState()) * cfg.train.epochs
        trainer.scheduler = build_schedule(
            dense, o.dense_lr, o.schedule, total, o.warmup_steps, o.min_lr_ratio, state.global_step
        )
    phases["build"] = time.perf_counter() - wall_start - sum(phases.values())
    history = trainer.fit(state)
    phases["fit"] = time.perf_counter() - wall_start - sum(phases.values())
    selection = read_selection(run_dir) if selection_metric(cfg) else None
    if selection is not None and selection["epoch"] != history[-1].epoch:
        load_checkpoint(best_checkpoint(run_dir), model, optimizer)  # test the selected epoch
    cold_share = None
    if cfg.model.name == "generative" and cfg.sequence.cold_share_grid:
        assert isinstance(evaluator, SequenceEvaluator)
        val_by_share = evaluator.by_cold_share(model, "val", cfg.sequence.cold_share_grid)
        chosen, by_share = choose_on_validation(val_by_share, f"recall@{cfg.sequence.top_k}")
        unwrap(model).model.cold_share = chosen
        cold_share = {"chosen": chosen, f"val_recall@{cfg.sequence.top_k}": by_share}
        if ctx.is_main:
            print(f"cold_share {chosen} chosen on validation from {by_share}", flush=True)
    test = evaluator(model, "test")
    phases["test"] = time.perf_counter() - wall_start - sum(phases.values())
    baselines_test = builders.baselines(cfg, data, learned=ctx.is_main)
    phases["baselines"] = time.perf_counter() - wall_start - sum(phases.values())
    trainer.logger.log(state.global_step, {f"test/{k}": v for k, v in test.items()})
    final_val = _final_validation(history, selection)
    trainer.logger.hparams(
        flatten_hparams(config_to_dict(cfg)),
        {
            **{f"hparams/val_{k}": v for k, v in final_val.items()},
            **{f"hparams/test_{k}": v for k, v in test.items()},
        },
        step=state.global_step,
    )
    trainer.logger.close()
    summary = {
        "run_dir": str(run_dir),
        "config": config_to_dict(cfg),
        "world_size": ctx.world_size,
        "planner_hosts": planner_hosts(ctx),
        "device": str(ctx.device),
        "backend": ctx.backend,
        # what else the numbers depend on: same seed + data + these = the same numbers
        "threads": torch.get_num_threads(),
        "dataset": {
            "name": data.name,
            **{k: stream.rows(k) if stream else len(v) for k, v in data.splits.items()},
            "read_report": data.read_report,
        },
        "feature_spec": data.spec.to_dict(),
        "plan": str(model.plan) if hasattr(model, "plan") else None,
        "final_state": {k: v for k, v in asdict(state).items() if k != "history"},
        "epochs": [asdict(r) for r in history],
        "selected_epoch": selection,
        "cold_share": cold_share,
        "sid_codes": builders.sid_code_usage(cfg, sequences),
        "test": test,
        "baselines_test": baselines_test,
        "train_samples_per_second": (
            float(np.mean([r.samples_per_second for r in history])) if history else None
        ),
        "wall_time_seconds": time.perf_counter() - wall_start,
        # seconds per phase: data (read + encode), build (shard, restore), fit (epochs with
        # validation and checkpoints), test (evaluation), baselines (fit + score)
        "phase_seconds": phases,
        "warnings": data_warnings,
    }
    if ctx.is_main:
        path = run_dir / SUMMARY_FILE
        atomic_write_text(path, json.dumps(summary, indent=2))
        metrics = " ".join(f"{k}={v:.4f}" for k, v in test.items())
        at = (
            f" at epoch {selection['epoch'] + 1} (best val {selection['metric']})"
            if selection
            else " at the last epoch"
        )
        print(f"test{at} {metrics}; summary: {path}", flush=True)
    return summary


def _final_validation(history: list[Any], selection: dict[str, Any] | None) -> dict[str, float]:
    """Validation metrics of the tested epoch: the selected one, else the last."""
    if not history:
        return {}
    epoch = selection["epoch"] if selection is not None else history[-1].epoch
    return next((r.val for r in history if r.epoch == epoch), history[-1].val)


def _recorded_vocab_hash(run_dir: Path) -> str | None:
    """The vocabulary hash of the shards ``run_dir`` trained on (None: not a shards run)."""
    path = run_dir / STREAM_FILE
    return json.loads(path.read_text())["vocab_hash"] if path.is_file() else None


def _report_warnings(caught: list[warnings.WarningMessage], show: bool) -> list[str]:
    """Print each :class:`DataWarning` (rank 0) and return their texts for the summary;
    other warnings go on to the usual handler."""
    texts = []
    for w in caught:
        if issubclass(w.category, DataWarning):
            texts.append(str(w.message))
            if show:
                print(f"warning: {w.message}", file=sys.stderr, flush=True)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return texts


def train(
    cfg: ExperimentConfig,
    run_dir: str | Path | None = None,
    *,
    run_id: str | None = None,
    resume_if_any: bool = False,
) -> RunResult:
    """Join (or create) the process group, pick the run folder, train, evaluate, and return
    the run's result (every rank; rank 0 also wrote it to ``summary.json``).

    Args:
        cfg: the resolved experiment (``train.resume`` continues the newest run).
        run_dir: train into this folder (default: ``<train.output_dir>/<name>/<timestamp>``).
        run_id: train into ``<train.output_dir>/<name>/<run_id>`` instead.
        resume_if_any: continue the folder's newest checkpoint if it has one, else start.

    Raises:
        UserError: see :func:`resolve_run_dir`, and any invalid data or settings.
    """
    if run_dir is not None and run_id is not None:
        raise UserError("give a run directory or a run id, not both")
    owns_group = not dist.is_initialized()
    ctx = init_distributed()
    lock: RunLock | None = None
    try:
        folder, checkpoint, lock = resolve_run_dir(cfg, ctx, run_dir, run_id, resume_if_any)
        summary = run(cfg, ctx, folder, checkpoint)
        return RunResult.from_summary(summary, where=str(folder / SUMMARY_FILE))
    finally:
        if lock is not None:
            lock.release()
        if owns_group:
            shutdown_distributed()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse ``argv`` and :func:`train`; returns the run summary."""
    cfg, args = parse_config(argv)
    result = train(cfg, args.run_dir, run_id=args.run_id, resume_if_any=args.resume_if_any)
    return result.summary

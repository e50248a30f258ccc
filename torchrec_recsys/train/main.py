"""``main(argv)``: the one training entry point (CLI, torchx and tests all call it).

python -m torchrec_recsys train [--config FILE] [--resume] [--profile] [--section.key=value ...]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from torchrec_recsys.config import (
    MODELS,
    RUN_CONFIG_FILE,
    ExperimentConfig,
    config_to_dict,
    load_config,
)
from torchrec_recsys.distributed.env import DistContext, init_distributed, shutdown_distributed
from torchrec_recsys.distributed.sharding import shard_model
from torchrec_recsys.errors import UserError
from torchrec_recsys.train import builders
from torchrec_recsys.train.checkpoint import TrainerState, latest_checkpoint, load_checkpoint
from torchrec_recsys.train.trainer import Trainer

SUMMARY_FILE = "summary.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torchrec_recsys train",
        description="Train the configured model; --section.key=value flags override the config.",
    )
    parser.add_argument(
        "--config",
        help="TOML experiment file (default: built-in defaults = configs/ml100k_dlrm.toml)",
    )
    parser.add_argument("--model", choices=MODELS, help="shorthand for --model.name=...")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the newest run of this experiment from its newest checkpoint",
    )
    parser.add_argument(
        "--run-dir",
        help="use this run directory (default: <train.output_dir>/<name>/<UTC timestamp>)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="record torch.profiler traces into <run dir>/profile"
    )
    return parser


def parse_config(argv: list[str] | None) -> tuple[ExperimentConfig, argparse.Namespace]:
    args, overrides = build_parser().parse_known_args(argv)
    flags = []
    if args.model:
        flags.append(f"--model.name={args.model}")
    if args.resume:
        flags.append("--train.resume=true")
    if args.profile:
        flags.append("--train.profile=true")
    return load_config(args.config, [*overrides, *flags]), args


def resolve_run_dir(cfg: ExperimentConfig, explicit: str | None, ctx: DistContext) -> Path:
    """The run directory, agreed by all ranks (rank 0 decides, then broadcasts)."""
    choice: list[Any] = [None]
    if ctx.is_main:
        root = Path(cfg.train.output_dir) / cfg.name
        if explicit:
            choice[0] = explicit
        elif cfg.train.resume:
            runs = (
                sorted(p for p in root.glob("*") if latest_checkpoint(p) is not None)
                if root.is_dir()
                else []
            )
            choice[0] = (
                str(runs[-1])
                if runs
                else f"no run of {cfg.name!r} with a checkpoint under {str(root)!r}"
            )
        else:
            choice[0] = str(root / datetime.now(UTC).strftime("%Y%m%d-%H%M%S"))
    dist.broadcast_object_list(choice, src=0)
    if choice[0].startswith("no run of"):
        raise UserError(f"--resume found {choice[0]}")
    return Path(choice[0])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run(cfg: ExperimentConfig, ctx: DistContext, run_dir: Path) -> dict[str, Any]:
    """Train and evaluate ``cfg`` in ``run_dir``; returns the summary (all ranks)."""
    wall_start = time.perf_counter()
    seed_everything(cfg.train.seed)
    data = builders.build_data(cfg)
    if ctx.is_main:
        data.save_metadata(run_dir)
        (run_dir / RUN_CONFIG_FILE).write_text(json.dumps(config_to_dict(cfg), indent=2))
    task = builders.build_task(cfg, data, dense_device=str(ctx.device))
    model, optimizer = shard_model(
        task,
        data.spec.table_names(),
        builders.sharding_options(cfg),
        builders.optimizer_options(cfg),
        ctx,
        batch_size=cfg.train.batch_size,
    )
    state = TrainerState()
    if cfg.train.resume:
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is None:
            raise UserError(f"--resume: run directory {str(run_dir)!r} has no complete checkpoint")
        state = load_checkpoint(checkpoint, model, optimizer)
        if ctx.is_main:
            print(f"resumed from {checkpoint} at step {state.global_step}", flush=True)
    evaluator = builders.build_evaluator(cfg, data, ctx)
    trainer = Trainer(model, optimizer, data, ctx, run_dir, builders.loop_options(cfg), evaluator)
    history = trainer.fit(state)
    test = evaluator(model, "test")
    trainer.logger.log(state.global_step, {f"test/{k}": v for k, v in test.items()})
    trainer.logger.close()
    summary = {
        "run_dir": str(run_dir),
        "config": config_to_dict(cfg),
        "world_size": ctx.world_size,
        "device": str(ctx.device),
        "backend": ctx.backend,
        "dataset": {"name": data.name, **{k: len(v) for k, v in data.splits.items()}},
        "feature_spec": data.spec.to_dict(),
        "plan": str(model.plan) if hasattr(model, "plan") else None,
        "final_state": asdict(state),
        "epochs": [asdict(r) for r in history],
        "test": test,
        "baselines_test": builders.baselines(cfg, data),
        "train_samples_per_second": (
            float(np.mean([r.samples_per_second for r in history])) if history else None
        ),
        "wall_time_seconds": time.perf_counter() - wall_start,
    }
    if ctx.is_main:
        path = run_dir / SUMMARY_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(summary, indent=2))
        tmp.replace(path)
        metrics = " ".join(f"{k}={v:.4f}" for k, v in test.items())
        print(f"test {metrics}; summary: {path}", flush=True)
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse ``argv``, join/create the process group, train; returns the run summary."""
    cfg, args = parse_config(argv)
    owns_group = not dist.is_initialized()
    ctx = init_distributed()
    try:
        run_dir = resolve_run_dir(cfg, args.run_dir, ctx)
        return run(cfg, ctx, run_dir)
    finally:
        if owns_group:
            shutdown_distributed()

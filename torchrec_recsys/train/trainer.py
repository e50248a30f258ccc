"""The training loop: epochs of sharded steps, validation after each, checkpoints at epoch end.

The model is a DMP-wrapped task module whose forward returns
``(loss, (loss, logits, labels, weights))``; the loop knows nothing else about it, so the
DLRM ranker and the two-tower retriever share it. What "evaluate" means is the
``Evaluator``'s business.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn
from torch.optim import Optimizer
from tqdm import tqdm

from torchrec_recsys.data.dataset import RecDataset
from torchrec_recsys.data.loader import ShardInfo, num_train_steps, train_batches
from torchrec_recsys.distributed.env import DistContext
from torchrec_recsys.metrics.profiler import maybe_enable_profiling
from torchrec_recsys.metrics.tensorboard import ScalarLogger
from torchrec_recsys.train.checkpoint import TrainerState, save_checkpoint


class Evaluator(Protocol):
    """Scores a split with the current model; every rank calls it, all get the same dict."""

    def __call__(self, model: nn.Module, split: str) -> dict[str, float]: ...


@dataclass(frozen=True)
class LoopOptions:
    """Typed loop settings (built from the ``[train]`` config section)."""

    epochs: int
    batch_size: int
    seed: int
    log_every: int = 50
    max_steps_per_epoch: int = 0
    progress_bar: bool = True
    profile: bool = False
    keep_last_checkpoints: int = 2


@dataclass
class EpochRecord:
    epoch: int
    global_step: int
    train_loss: float
    samples_per_second: float
    seconds: float
    val: dict[str, float]


class Trainer:
    """Runs :meth:`fit`; rank 0 alone logs, shows progress and writes events."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: Optimizer,
        data: RecDataset,
        ctx: DistContext,
        run_dir: Path,
        options: LoopOptions,
        evaluate: Evaluator,
        on_step: Callable[[TrainerState], None] | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.data = data
        self.ctx = ctx
        self.run_dir = run_dir
        self.options = options
        self.evaluate = evaluate
        self.on_step = on_step
        self.shard = ShardInfo(ctx.rank, ctx.world_size)
        self.logger = ScalarLogger(run_dir / "tensorboard", enabled=ctx.is_main)

    def steps_per_epoch(self) -> int:
        steps = num_train_steps(len(self.data.splits["train"]), self.options.batch_size, self.shard)
        if self.options.max_steps_per_epoch:
            steps = min(steps, self.options.max_steps_per_epoch)
        return steps

    def fit(self, state: TrainerState) -> list[EpochRecord]:
        """Train from ``state`` to the configured number of epochs."""
        history = []
        with maybe_enable_profiling(
            self.options.profile, self.run_dir / "profile", self.ctx.rank
        ) as profiler:
            while state.epoch < self.options.epochs:
                history.append(self._train_epoch(state, profiler))
        return history

    def _train_epoch(
        self, state: TrainerState, profiler: torch.profiler.profile | None
    ) -> EpochRecord:
        opts = self.options
        steps = self.steps_per_epoch()
        global_batch = opts.batch_size * self.ctx.world_size
        batches = train_batches(
            self.data.splits["train"],
            self.data.spec,
            opts.batch_size,
            self.shard,
            seed=opts.seed,
            epoch=state.epoch,
            start_step=state.step_in_epoch,
        )
        bar = tqdm(
            total=steps,
            initial=state.step_in_epoch,
            desc=f"epoch {state.epoch + 1}/{opts.epochs}",
            disable=not (opts.progress_bar and self.ctx.is_main),
            dynamic_ncols=True,
        )
        self.model.train()
        loss_sum, loss_count = torch.zeros(()), 0
        start = time.perf_counter()
        steps_run = 0
        for batch in batches:
            if state.step_in_epoch >= steps:
                break
            batch = batch.to(self.ctx.device)
            loss, _ = self.model(batch)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.detach().cpu()
            loss_count += 1
            steps_run += 1
            state.global_step += 1
            state.step_in_epoch += 1
            state.samples_seen += global_batch
            if profiler is not None:
                profiler.step()
            if state.global_step % opts.log_every == 0:
                self.logger.log(state.global_step, {"train/loss": loss.item()})
            if self.on_step is not None:
                self.on_step(state)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        bar.close()
        seconds = time.perf_counter() - start
        throughput = steps_run * global_batch / max(seconds, 1e-9)
        val = self.evaluate(self.model, "val") if len(self.data.splits["val"]) else {}
        record = EpochRecord(
            epoch=state.epoch,
            global_step=state.global_step,
            train_loss=float(loss_sum / max(loss_count, 1)),
            samples_per_second=throughput,
            seconds=seconds,
            val=val,
        )
        self.logger.log(
            state.global_step,
            {
                "train/epoch_loss": record.train_loss,
                "train/samples_per_second": throughput,
                **{f"val/{k}": v for k, v in val.items()},
            },
        )
        if self.ctx.is_main:
            metrics = " ".join(f"{k}={v:.4f}" for k, v in val.items()) or "(no validation split)"
            print(
                f"epoch {state.epoch + 1}: train_loss={record.train_loss:.4f} "
                f"val {metrics} ({throughput:,.0f} samples/s)",
                flush=True,
            )
        state.epoch += 1
        state.step_in_epoch = 0
        save_checkpoint(
            self.run_dir, self.model, self.optimizer, state, keep_last=opts.keep_last_checkpoints
        )
        return record

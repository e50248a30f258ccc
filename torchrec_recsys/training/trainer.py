"""The training loop: epochs of sharded steps, validation after each, checkpoints.

Checkpoints are written at every epoch end and, with ``checkpoint_every_steps``, every that
many global steps; a resumed :class:`TrainerState` continues at the exact next example of the
epoch's shuffled order (``samples_in_epoch``), whatever the world size now is.

The model is a DMP-wrapped task module whose forward returns
``(loss, (loss, logits, labels, weights))``; the loop knows nothing else about it, so the
DLRM ranker and the two-tower retriever share it. What "evaluate" means is the
``Evaluator``'s business.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import nn
from torch.optim import Optimizer
from tqdm import tqdm

from torchrec_recsys.config import TrainConfig
from torchrec_recsys.data.dataset import RecDataset
from torchrec_recsys.data.loader import ShardInfo, num_train_steps, train_batches
from torchrec_recsys.distributed.env import DistContext
from torchrec_recsys.errors import UserError
from torchrec_recsys.observability.profiler import maybe_enable_profiling
from torchrec_recsys.observability.tensorboard import ScalarLogger
from torchrec_recsys.training.checkpoint_io import save_checkpoint
from torchrec_recsys.training.selection import keep_if_best, should_stop
from torchrec_recsys.training.state import TrainerState


class Evaluator(Protocol):
    """Scores a split with the current model; every rank calls it, all get the same dict."""

    def __call__(self, model: nn.Module, split: str) -> dict[str, float]: ...


@dataclass
class EpochRecord:
    """One finished epoch (kept in ``TrainerState.history``, so it survives resumes)."""

    epoch: int
    global_step: int
    train_loss: float
    samples_per_second: float
    seconds: float
    val: dict[str, float]


def check_data_position(state: TrainerState, train_examples: int, seed: int) -> None:
    """Fail if ``state`` stopped mid-epoch in a data order this run cannot reproduce.

    The position is a sample offset into the epoch's shuffled order, which depends only on
    the size of the training split and the seed (not on world size or batch size); with
    either changed the next example is unknown. At an epoch boundary nothing is needed.
    Records the run's split size and seed in ``state``.

    Raises:
        UserError: mid-epoch position with another training split size or seed.
    """
    if state.samples_in_epoch and (
        state.train_examples != train_examples or state.shuffle_seed != seed
    ):
        raise UserError(
            f"the checkpoint stopped mid-epoch {state.epoch} after {state.samples_in_epoch} "
            f"examples of a {state.train_examples}-example training split shuffled with seed "
            f"{state.shuffle_seed}, but this run has {train_examples} examples and seed {seed}: "
            f"resume with the same data and train.seed, or from an epoch-end checkpoint"
        )
    state.train_examples = train_examples
    state.shuffle_seed = seed


class Trainer:
    """Runs :meth:`fit`; rank 0 alone logs, shows progress and writes events."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: Optimizer,
        data: RecDataset,
        ctx: DistContext,
        run_dir: Path,
        options: TrainConfig,
        evaluate: Evaluator,
        on_step: Callable[[TrainerState], None] | None = None,
        select_metric: str = "",
        patience: int = 0,
    ) -> None:
        """``select_metric`` (validation metric name, "" = none) picks the epoch kept in
        ``<run dir>/best/``; ``patience`` > 0 stops after that many epochs without a better
        one (see ``training/selection.py``)."""
        self.model = model
        self.optimizer = optimizer
        self.data = data
        self.ctx = ctx
        self.run_dir = run_dir
        self.options = options
        self.evaluate = evaluate
        self.on_step = on_step
        self.select_metric = select_metric
        self.patience = patience
        self.shard = ShardInfo(ctx.rank, ctx.world_size)
        self.logger = ScalarLogger(run_dir / "tensorboard", enabled=ctx.is_main)

    def steps_left(self, state: TrainerState) -> int:
        """Global steps still to run in ``state.epoch`` from its data position."""
        steps = num_train_steps(
            len(self.data.splits["train"]),
            self.options.batch_size,
            self.shard,
            start_sample=state.samples_in_epoch,
        )
        if self.options.max_steps_per_epoch:
            steps = min(steps, max(self.options.max_steps_per_epoch - state.step_in_epoch, 0))
        return steps

    def fit(self, state: TrainerState) -> list[EpochRecord]:
        """Train from ``state`` to the configured number of epochs; all epochs' records."""
        check_data_position(state, len(self.data.splits["train"]), self.options.seed)
        with maybe_enable_profiling(
            self.options.profile, self.run_dir / "profile", self.ctx.rank
        ) as profiler:
            while state.epoch < self.options.epochs and not self._stop(state):
                self._train_epoch(state, profiler)
        return [EpochRecord(**record) for record in state.history]

    def _stop(self, state: TrainerState) -> bool:
        """Early stopping: no better ``select_metric`` in the last ``patience`` epochs."""
        if not (self.select_metric and state.history):
            return False
        stop = should_stop(state.history, self.select_metric, self.patience)
        if stop and self.ctx.is_main:
            print(
                f"early stop after epoch {state.epoch}: no better val {self.select_metric} "
                f"in {self.patience} epoch(s)",
                flush=True,
            )
        return stop

    def _save(self, state: TrainerState) -> Path:
        return save_checkpoint(
            self.run_dir,
            self.model,
            self.optimizer,
            state,
            keep_last=self.options.keep_last_checkpoints,
        )

    def _train_epoch(
        self, state: TrainerState, profiler: torch.profiler.profile | None
    ) -> EpochRecord:
        opts = self.options
        steps = self.steps_left(state)
        global_batch = opts.batch_size * self.ctx.world_size
        batches = train_batches(
            self.data.splits["train"],
            self.data.spec,
            opts.batch_size,
            self.shard,
            seed=opts.seed,
            epoch=state.epoch,
            start_sample=state.samples_in_epoch,
        )
        bar = tqdm(
            total=state.step_in_epoch + steps,
            initial=state.step_in_epoch,
            desc=f"epoch {state.epoch + 1}/{opts.epochs}",
            disable=not (opts.progress_bar and self.ctx.is_main),
            dynamic_ncols=True,
        )
        self.model.train()
        start = time.perf_counter()
        for steps_run, batch in enumerate(itertools.islice(batches, steps), start=1):
            batch = batch.to(self.ctx.device)
            loss, _ = self.model(batch)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            loss_value = loss.item()
            state.count_batch(global_batch, loss_value)
            if profiler is not None:
                profiler.step()
            if state.global_step % opts.log_every == 0:
                self.logger.log(state.global_step, {"train/loss": loss_value})
            every = opts.checkpoint_every_steps
            if every and state.global_step % every == 0 and steps_run < steps:
                self._save(state)  # (the last step of the epoch is saved at the epoch end)
            if self.on_step is not None:
                self.on_step(state)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}")
        bar.close()
        seconds = time.perf_counter() - start
        throughput = steps * global_batch / max(seconds, 1e-9)
        val = self.evaluate(self.model, "val") if len(self.data.splits["val"]) else {}
        record = EpochRecord(
            epoch=state.epoch,
            global_step=state.global_step,
            train_loss=state.epoch_loss_sum / max(state.step_in_epoch, 1),
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
        state.finish_epoch(asdict(record))
        checkpoint = self._save(state)
        if self.select_metric and val:
            keep_if_best(self.run_dir, checkpoint, state.history, self.select_metric)
        return record

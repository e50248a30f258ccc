"""The training loop: epochs of sharded steps, validation after each, checkpoints.

Checkpoints are written at every epoch end and, with ``checkpoint_every_steps``, every that
many global steps; a resumed :class:`TrainerState` continues at the exact next example of the
epoch's shuffled order (``samples_in_epoch``), whatever the world size now is.

The model is a DMP-wrapped task module whose forward returns
``(loss, (loss, logits, labels, weights))``; the loop knows nothing else about it, so the
DLRM ranker, the two-tower retriever and the sequence models share it. Where the training
batches come from is the :class:`TrainSource`'s business (default: the dataset's training
table); what "evaluate" means is the ``Evaluator``'s.

The engine of a step is TorchRec's train pipeline (``train.pipeline``):

    sparse_dist  TrainPipelineSparseDist: batch i+2 copied to the device and batch i+1's
                 embedding input all-to-all started while batch i runs forward/backward
                 (overlap needs CUDA streams; on CPU the stages run in turn)
    base         TrainPipelineBase: copy of batch i+1 overlapped with batch i
    none         the plain loop: forward, backward, step

The pipelines read batches ahead, but the data position counts only trained batches, so a
checkpoint's ``samples_in_epoch`` is exact. The loss stays on the device, copied into a float64
buffer (:class:`EpochLoss`, one op per step): it is read back and summed in step order (the
same additions as a per-step ``float``) only at log steps, checkpoints and the end of the epoch.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchrec.distributed.train_pipeline import (
    TrainPipeline,
    TrainPipelineBase,
    TrainPipelineSparseDist,
)

from torchrec_recsys.config import TrainConfig
from torchrec_recsys.data.batch import Batch
from torchrec_recsys.data.dataset import RecDataset
from torchrec_recsys.data.loader import ShardInfo, TableSource, num_train_steps
from torchrec_recsys.distributed.env import DistContext
from torchrec_recsys.errors import UserError
from torchrec_recsys.observability.profiler import maybe_enable_profiling
from torchrec_recsys.observability.progress import Progress
from torchrec_recsys.observability.tensorboard import ScalarLogger
from torchrec_recsys.training.checkpoint_io import save_checkpoint
from torchrec_recsys.training.selection import keep_if_best, should_stop
from torchrec_recsys.training.state import TrainerState


class Evaluator(Protocol):
    """Scores a split with the current model; every rank calls it, all get the same dict."""

    def __call__(self, model: nn.Module, split: str) -> dict[str, float]: ...


class TrainSource(Protocol):
    """Training examples in a seeded, resumable order (see ``data.loader.train_rows``)."""

    def __len__(self) -> int: ...

    def order(self, batch_size: int, shard: ShardInfo) -> str:
        """What the epoch's example order depends on besides the seed and the number of
        examples ("" = nothing); a mid-epoch resume needs the same."""
        ...

    def train_batches(
        self, batch_size: int, shard: ShardInfo, seed: int, epoch: int, start_sample: int = 0
    ) -> Iterator[Any]:
        """This rank's batches (each with ``.to(device)``) from sample ``start_sample``."""
        ...


@dataclass
class EpochRecord:
    """One finished epoch (kept in ``TrainerState.history``, so it survives resumes)."""

    epoch: int
    global_step: int
    train_loss: float
    samples_per_second: float
    seconds: float
    val: dict[str, float]


def check_data_position(
    state: TrainerState, train_examples: int, seed: int, order: str = ""
) -> None:
    """Fail if ``state`` stopped mid-epoch in a data order this run cannot reproduce.

    The position is a sample offset into the epoch's order. The in-memory sources shuffle
    by the size of the training split and the seed alone (not the world size or batch size);
    streamed shards also depend on what ``order`` says (``TrainSource.order``). With any of
    them changed the next example is unknown. At an epoch boundary nothing is needed.
    Records the run's split size, seed and order in ``state``.

    Raises:
        UserError: mid-epoch position with another training split size, seed or order.
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
    if state.samples_in_epoch and state.data_order != order:
        raise UserError(
            f"the checkpoint stopped mid-epoch {state.epoch} after {state.samples_in_epoch} "
            f"examples in the order of {state.data_order or 'an in-memory split'!r}, but this "
            f"run reads {order or 'an in-memory split'!r}: resume with the same data, "
            f"processes, train.batch_size and data.loader_workers, or from an epoch-end "
            f"checkpoint"
        )
    state.train_examples = train_examples
    state.shuffle_seed = seed
    state.data_order = order


def learning_rates(optimizer: Optimizer) -> dict[str, float]:
    """``lr/<optimizer>/group<i>`` -> learning rate of every parameter group; a
    ``CombinedOptimizer`` is split into its parts, each by its own name or, unnamed, as
    ``sparse`` (the first: the fused embedding optimizer) and ``dense`` (the last)."""
    parts = list(getattr(optimizer, "optimizers", None) or [("dense", optimizer)])
    default = {0: "sparse", len(parts) - 1: "dense"}
    named = [(name or default.get(i, f"part{i}"), part) for i, (name, part) in enumerate(parts)]
    out: dict[str, float] = {}
    for name, part in named:
        for i, group in enumerate(part.param_groups):
            if "lr" in group:
                out[f"lr/{name}/group{i}"] = float(group["lr"])
    return out


class _LogWindow:
    """The steps since the previous log step: their mean loss and their throughput (so the
    throughput chart has a point at every log step, not one per epoch)."""

    def __init__(self, start: float, loss_sum: float, global_step: int) -> None:
        self.time, self.loss_sum, self.step = start, loss_sum, global_step

    def advance(self, state: TrainerState, global_batch: int) -> dict[str, float]:
        now, steps = time.perf_counter(), state.global_step - self.step
        out = {
            "train/loss_mean": (state.epoch_loss_sum - self.loss_sum) / max(steps, 1),
            "train/samples_per_second": steps * global_batch / max(now - self.time, 1e-9),
        }
        self.time, self.loss_sum, self.step = now, state.epoch_loss_sum, state.global_step
        return out


class EpochLoss:
    """The epoch's running training loss, with one tensor op per step.

    Each step's loss is copied into a float64 buffer on the device (no host sync); ``read``
    brings the buffer to the host, adds it to the running sum in step order (float64, the
    same additions as a per-step ``float``) and finds the first step whose loss was not
    finite. The buffer is read when it fills, so a long interval between reads costs one
    sync per ``capacity`` steps.
    """

    def __init__(
        self, total: float, first_step: int, device: torch.device, capacity: int = 1024
    ) -> None:
        """``total``: the sum so far (a resumed epoch's); ``first_step``: the global step
        number of the first loss to be added."""
        self.total = total
        self.next_step = first_step  # global step of the buffer's first entry
        self.bad_step: int | None = None
        self._buffer = torch.zeros(max(capacity, 1), dtype=torch.float64, device=device)  # [C]
        self._count = 0

    def add(self, loss: torch.Tensor) -> None:
        """Record one step's (0-dim) loss."""
        if self._count == self._buffer.numel():
            self._flush()
        self._buffer[self._count].copy_(loss.detach())
        self._count += 1

    def _flush(self) -> None:
        values = self._buffer[: self._count].tolist()
        for i, value in enumerate(values):
            if self.bad_step is None and not math.isfinite(value):
                self.bad_step = self.next_step + i
            self.total += value
        self.next_step += self._count
        self._count = 0

    def read(self) -> tuple[float, int | None]:
        """(running sum, first global step whose loss was not finite, or None)."""
        self._flush()
        return self.total, self.bad_step


def make_pipeline(
    kind: str, model: nn.Module, optimizer: Optimizer, device: torch.device
) -> TrainPipeline | None:
    """TorchRec's train pipeline of ``kind`` over ``model`` (None for the plain loop)."""
    if kind == "sparse_dist":
        return TrainPipelineSparseDist(model, optimizer, device, execute_all_batches=True)
    if kind == "base":
        return TrainPipelineBase(model, optimizer, device)
    if kind == "none":
        return None
    raise UserError(
        f"train.pipeline = {kind!r} is not an engine; expected sparse_dist, base or none "
        f"('auto' is resolved by config.resolve_pipeline before training)"
    )


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
        source: TrainSource | None = None,
        select_metric: str = "",
        patience: int = 0,
        validate: bool | None = None,
        scheduler: LRScheduler | None = None,
    ) -> None:
        """``select_metric`` (validation metric name, "" = none) picks the epoch kept in
        ``<run dir>/best/``; ``patience`` > 0 stops after that many epochs without a better
        one (see ``training/selection.py``). ``validate``: evaluate "val" after each epoch
        (default: when ``data`` has validation examples in memory). ``scheduler`` (e.g.
        ``training/schedule.py``) is stepped after every optimizer step."""
        self.model = model
        self.optimizer = optimizer
        self.data = data
        self.ctx = ctx
        self.run_dir = run_dir
        self.options = options
        self.evaluate = evaluate
        self.on_step = on_step
        self.source: TrainSource = (
            source if source is not None else TableSource(data.splits["train"], data.spec)
        )
        self.select_metric = select_metric
        self.patience = patience
        self.validate = len(data.splits["val"]) > 0 if validate is None else validate
        self.scheduler = scheduler
        self.shard = ShardInfo(ctx.rank, ctx.world_size)
        self.logger = ScalarLogger(run_dir / "tensorboard", enabled=ctx.is_main)

    def steps_left(self, state: TrainerState) -> int:
        """Global steps still to run in ``state.epoch`` from its data position."""
        steps = num_train_steps(
            len(self.source),
            self.options.batch_size,
            self.shard,
            start_sample=state.samples_in_epoch,
        )
        if self.options.max_steps_per_epoch:
            steps = min(steps, max(self.options.max_steps_per_epoch - state.step_in_epoch, 0))
        return steps

    def fit(self, state: TrainerState) -> list[EpochRecord]:
        """Train from ``state`` to the configured number of epochs; all epochs' records."""
        order = self.source.order(self.options.batch_size, self.shard)
        check_data_position(state, len(self.source), self.options.seed, order)
        with maybe_enable_profiling(
            self.options.profile, self.run_dir / "profile", self.ctx.rank
        ) as profiler:
            while state.epoch < self.options.epochs and not self._stop(state):
                self._train_epoch(state, profiler)
        return [EpochRecord(**record) for record in state.history]

    def _plain_step(self, batch: Batch) -> torch.Tensor:
        """Forward, backward and update of one batch without a pipeline; the detached loss."""
        batch = batch.to(self.ctx.device)
        loss, _ = self.model(batch)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.detach()

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
        batches = self.source.train_batches(
            opts.batch_size,
            self.shard,
            seed=opts.seed,
            epoch=state.epoch,
            start_sample=state.samples_in_epoch,
        )
        bar = Progress(
            total=state.step_in_epoch + steps,
            initial=state.step_in_epoch,
            desc=f"epoch {state.epoch + 1}/{opts.epochs}",
            enabled=opts.progress_bar and self.ctx.is_main,
        )
        self.model.train()
        pipeline = make_pipeline(opts.pipeline, self.model, self.optimizer, self.ctx.device)
        batch_iter = itertools.islice(batches, steps)
        # running loss sum of the epoch, kept on the device: read back only when needed
        losses = EpochLoss(
            state.epoch_loss_sum, state.global_step + 1, self.ctx.device, min(opts.log_every, 4096)
        )

        def read_loss() -> None:
            """Bring the epoch's loss to the host; fail if a step's loss was not finite."""
            total, first_bad = losses.read()
            if first_bad is not None:
                raise UserError(
                    f"the training loss became non-finite at global step {first_bad} (epoch "
                    f"{state.epoch + 1}): the model diverged; lower optimizer.sparse_lr / "
                    f"optimizer.dense_lr (no checkpoint was written after it)"
                )
            state.epoch_loss_sum = total

        start = time.perf_counter()
        window = _LogWindow(start, state.epoch_loss_sum, state.global_step)
        for steps_run in range(1, steps + 1):
            if pipeline is not None:
                loss = pipeline.progress(batch_iter)[0]  # (detached loss, scores, ...)
            else:
                loss = self._plain_step(next(batch_iter))
            losses.add(loss)  # one copy into a device buffer: no sync
            state.count_batch(global_batch, 0.0)
            if self.scheduler is not None:
                self.scheduler.step()
            if profiler is not None:
                profiler.step()
            if state.global_step % opts.log_every == 0:
                read_loss()
                loss_value = float(loss)
                scalars = {"train/loss": loss_value, **learning_rates(self.optimizer)}
                scalars.update(window.advance(state, global_batch))
                self.logger.log(state.global_step, scalars)
                bar.set_loss(loss_value)
            every = opts.checkpoint_every_steps
            if every and state.global_step % every == 0 and steps_run < steps:
                read_loss()
                self._save(state)  # (the last step of the epoch is saved at the epoch end)
            if self.on_step is not None:
                self.on_step(state)
            bar.update()
        read_loss()
        close = getattr(batches, "close", None)
        if close is not None:  # a stream stopped early (max_steps_per_epoch): its workers end
            close()
        if isinstance(pipeline, TrainPipelineSparseDist):
            pipeline.detach()  # the model's own forward again, for evaluation and export
        bar.close()
        seconds = time.perf_counter() - start
        throughput = steps * global_batch / max(seconds, 1e-9)
        val = self.evaluate(self.model, "val") if self.validate else {}
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
                "train/epoch_samples_per_second": throughput,
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

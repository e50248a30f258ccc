"""What a checkpoint restores besides weights: the trainer's position and the RNG states.

Both are plain JSON data (nothing pickled); ``checkpoint_io`` writes and reads them.
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from torchrec_recsys.errors import UserError


@dataclass
class TrainerState:
    """Where training stands: the step count, the data position and per-epoch accounting."""

    global_step: int = 0
    epoch: int = 0
    """Epoch to run next (equal to the number of finished epochs at an epoch-end save)."""
    step_in_epoch: int = 0
    """Global batches of ``epoch`` already trained (0 at an epoch boundary)."""
    samples_seen: int = 0
    """Training examples consumed so far, all ranks and epochs together."""
    samples_in_epoch: int = 0
    """The data position: examples of ``epoch``'s shuffled order already trained, all ranks
    together. Independent of the world size, so a resume with another world size continues
    at the same example (the step number does not carry over: the global batch changes)."""
    epoch_loss_sum: float = 0.0
    """Sum of rank 0's step losses so far in ``epoch`` (the epoch's mean loss survives a resume)."""
    epoch_batches: list[int] = field(default_factory=list)
    """Global batches trained per epoch (index = epoch). A batch undone by a crash is not
    counted: the count comes back from the checkpoint with the model it trained."""
    epoch_samples: list[int] = field(default_factory=list)
    """Examples trained per epoch (index = epoch), all ranks together."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """Finished epochs' records (loss, throughput, validation), across restarts."""
    train_examples: int = 0
    """Size of the training split the position refers to (0 = not yet recorded)."""
    shuffle_seed: int = 0
    """Seed of the shuffled order the position refers to."""
    data_order: str = ""
    """What else the epoch's order depends on ("" = nothing: the in-memory sources' order
    depends only on the split size and seed; streamed shards: the world size, batch size and
    loader workers, see ``TrainSource.order``)."""
    world_size: int = 0
    """Processes that wrote the checkpoint (0 = not yet saved)."""

    def count_batch(self, samples: int, loss: float) -> None:
        """Account for one global batch of ``samples`` examples just trained."""
        while len(self.epoch_batches) <= self.epoch:
            self.epoch_batches.append(0)
            self.epoch_samples.append(0)
        self.global_step += 1
        self.step_in_epoch += 1
        self.samples_seen += samples
        self.samples_in_epoch += samples
        self.epoch_loss_sum += loss
        self.epoch_batches[self.epoch] += 1
        self.epoch_samples[self.epoch] += samples

    def finish_epoch(self, record: dict[str, Any]) -> None:
        """Record the finished epoch and move the position to the start of the next one."""
        while len(self.epoch_batches) <= self.epoch:
            self.epoch_batches.append(0)
            self.epoch_samples.append(0)
        self.history.append(record)
        self.epoch += 1
        self.step_in_epoch = 0
        self.samples_in_epoch = 0
        self.epoch_loss_sum = 0.0


# --- RNG states, as JSON (nothing pickled) ------------------------------------------------


def _b64(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.cpu().numpy().tobytes()).decode("ascii")


def _unb64(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def capture_rng_state() -> dict[str, Any]:
    """This process's python, numpy, torch (and CUDA) RNG states as plain JSON data."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_name, np_keys.tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": _b64(torch.get_rng_state()),
    }
    if torch.cuda.is_available():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`.

    Raises:
        UserError: ``state`` is not what :func:`capture_rng_state` writes.
    """
    try:
        py_version, py_state, py_gauss = state["python"]
        np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
        torch_state = _unb64(state["torch"])
        random.setstate((py_version, tuple(py_state), py_gauss))
        np.random.set_state(
            (np_name, np.asarray(np_keys, dtype=np.uint32), np_pos, np_has_gauss, np_gauss)
        )
        torch.set_rng_state(torch_state)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise UserError(f"saved RNG state is malformed ({type(e).__name__}: {e})") from None
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([_unb64(s) for s in cuda])

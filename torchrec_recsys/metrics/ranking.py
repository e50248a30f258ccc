"""Ranking metrics (AUC, normalized entropy) from ``torchrec.metrics``, synced across ranks."""

from __future__ import annotations

import torch
from torchrec.metrics.auc import AUCMetric, compute_auc
from torchrec.metrics.metrics_config import RecTaskInfo
from torchrec.metrics.ne import NEMetric

TASK = RecTaskInfo(
    name="rank", label_name="label", prediction_name="prediction", weight_name="weight"
)
# AUC keeps every prediction of the window; a window larger than any eval split makes it exact.
WINDOW = 10_000_000


class RankingMetrics:
    """Accumulates predictions of one evaluation pass; ``compute`` returns the global values.

    Weight-0 rows (padding) do not count. Every rank must call ``compute`` (it syncs).
    """

    def __init__(
        self, world_size: int, rank: int, batch_size: int, device: torch.device | str = "cpu"
    ) -> None:
        # on the evaluation device: its state syncs over the process group (NCCL needs CUDA)
        self._metrics = [
            cls(
                world_size=world_size,
                my_rank=rank,
                batch_size=batch_size,
                tasks=[TASK],
                window_size=WINDOW,
                compute_on_all_ranks=True,
            ).to(device)
            for cls in (AUCMetric, NEMetric)
        ]

    def update(self, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> None:
        """Add a batch: ``logits``, ``labels``, ``weights`` are [B]."""
        predictions = {TASK.name: torch.sigmoid(logits.float())}
        for metric in self._metrics:
            metric.update(
                predictions=predictions, labels={TASK.name: labels}, weights={TASK.name: weights}
            )

    def compute(self) -> dict[str, float]:
        """``{"auc": ..., "ne": ...}`` over everything added since the last reset."""
        out: dict[str, float] = {}
        for metric in self._metrics:
            for key, value in metric.compute().items():
                if key.endswith("|window_auc"):
                    out["auc"] = float(value)
                elif key.endswith("|lifetime_ne"):
                    out["ne"] = float(value)
        return out

    def reset(self) -> None:
        for metric in self._metrics:
            metric.reset()


def auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """ROC AUC of ``scores`` [N] against binary ``labels`` [N] (torchrec.metrics)."""
    return float(
        compute_auc(
            1,
            [scores.double()[None]],
            [labels.double()[None]],
            [torch.ones_like(labels, dtype=torch.double)[None]],
        )
    )


def normalized_entropy(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    """Log-loss of ``probabilities`` [N] divided by the entropy of the label base rate.

    Same definition as ``torchrec.metrics.ne`` (1.0 = no better than always predicting the
    base rate; lower is better).
    """
    p = probabilities.double().clamp(1e-12, 1 - 1e-12)
    y = labels.double()
    log_loss = -(y * p.log() + (1 - y) * (1 - p).log()).mean()
    base = y.mean().clamp(1e-12, 1 - 1e-12)
    entropy = -(base * base.log() + (1 - base) * (1 - base).log())
    return float(log_loss / entropy)

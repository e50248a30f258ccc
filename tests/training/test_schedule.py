"""The dense learning-rate schedule and the validation tuning of one value."""

from __future__ import annotations

import math

import pytest
import torch

from torchrec_recsys.config import load_config
from torchrec_recsys.errors import ConfigError
from torchrec_recsys.training.schedule import build_schedule, lr_factor
from torchrec_recsys.training.selection import choose_on_validation


def test_factor_at_chosen_steps() -> None:
    cosine = lr_factor("warmup_cosine", total_steps=12, warmup_steps=2, min_lr_ratio=0.1)
    assert [cosine(0), cosine(1)] == [0.5, 1.0]  # linear warm-up
    assert cosine(2) == 1.0  # the peak, then cosine decay
    assert math.isclose(cosine(7), 0.1 + 0.9 * 0.5)  # half-way
    assert math.isclose(cosine(12), 0.1) and math.isclose(cosine(50), 0.1)  # the floor
    linear = lr_factor("warmup_linear", total_steps=10, warmup_steps=0)
    assert [linear(0), linear(5), linear(10)] == [1.0, 0.5, 0.0]
    constant = lr_factor("constant", total_steps=10, warmup_steps=4)
    assert [constant(1), constant(3), constant(9)] == [0.5, 1.0, 1.0]


def test_schedule_sets_the_optimizer_rate_and_resumes_on_the_same_curve() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=123.0)  # replaced by the schedule's rate
    schedule = build_schedule(optimizer, 1e-2, "warmup_cosine", 10, 2, 0.0)
    seen = []
    for _ in range(10):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert seen[0] == pytest.approx(5e-3) and seen[2] == pytest.approx(1e-2)
    assert all(a >= b for a, b in zip(seen[2:], seen[3:], strict=False))  # decays
    resumed = torch.optim.Adam([param], lr=seen[-1])  # as loaded from a checkpoint
    build_schedule(resumed, 1e-2, "warmup_cosine", 10, 2, 0.0, global_step=6)
    assert resumed.param_groups[0]["lr"] == pytest.approx(seen[6])


def test_unknown_schedule_and_bad_ranges_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"optimizer.schedule = 'step' is not one of"):
        load_config(None, ["--optimizer.schedule=step"])
    with pytest.raises(ConfigError, match=r"optimizer.min_lr_ratio must be in \[0, 1\]"):
        load_config(None, ["--optimizer.min_lr_ratio=1.5"])
    with pytest.raises(ConfigError, match=r"optimizer.weight_decay must be >= 0"):
        load_config(None, ["--optimizer.weight_decay=-0.1"])
    with pytest.raises(ConfigError, match=r"every element of sequence.cold_share_grid must be"):
        load_config(None, ["--sequence.cold_share_grid=[0.0, 2.0]"])


def test_tuning_chooses_the_best_validation_value_the_earliest_on_ties() -> None:
    recall = {0.0: 0.2, 0.3: 0.25, 1.0: 0.25}  # tie: the earlier value wins
    by_value = {v: {"recall@10": r, "mrr": r / 2} for v, r in recall.items()}
    chosen, values = choose_on_validation(by_value, "recall@10")
    assert chosen == 0.3
    assert values == recall
    assert choose_on_validation({1.0: by_value[1.0], 0.3: by_value[0.3]}, "recall@10")[0] == 1.0
    with pytest.raises(ConfigError, match="'ndcg@10' is not a validation metric"):
        choose_on_validation(by_value, "ndcg@10")
    with pytest.raises(ConfigError, match="the tuning grid is empty"):
        choose_on_validation({}, "recall@10")

"""A run's TensorBoard folder: the HParams session, learning rates, a loss curve and a
throughput chart with real points."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import tiny_overrides
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from torchrec_recsys.app.train import main
from torchrec_recsys.observability.tensorboard import flatten_hparams


def test_flatten_hparams_gives_dotted_scalars() -> None:
    flat = flatten_hparams(
        {"name": "x", "train": {"epochs": 2, "lr": 0.1}, "m": {"layers": [4, 1], "t": {}}}
    )
    assert flat == {
        "name": "x",
        "train.epochs": 2,
        "train.lr": 0.1,
        "m.layers": "[4, 1]",
        "m.t": "{}",
    }


@pytest.mark.slow
def test_tensorboard_holds_hparams_lr_loss_curve_and_throughput(  # type: ignore[no-untyped-def]
    synthetic_paths, tmp_path: Path
) -> None:
    summary = main(
        [*tiny_overrides(synthetic_paths, tmp_path), "--train.epochs=1", "--train.log_every=2"]
    )
    acc = EventAccumulator(
        str(Path(summary["run_dir"]) / "tensorboard"), size_guidance={"scalars": 0}
    )
    acc.Reload()
    tags = set(acc.Tags()["scalars"])

    content = acc.PluginTagToContent("hparams")
    assert content, "no hparams plugin data"
    sessions = [plugin_data_pb2.HParamsPluginData.FromString(v) for v in content.values()]
    start = next(s.session_start_info for s in sessions if s.HasField("session_start_info"))
    assert start.hparams["train.epochs"].number_value == 1
    assert start.hparams["model.name"].string_value == "dlrm"
    assert "hparams/test_auc" in tags and "hparams/val_auc" in tags

    lr_tags = [t for t in tags if t.startswith("lr/")]
    assert "lr/dense/group0" in lr_tags and any(t.startswith("lr/sparse/") for t in lr_tags)
    assert acc.Scalars("lr/dense/group0")[0].value == pytest.approx(1e-3)

    steps = summary["final_state"]["global_step"]
    loss = acc.Scalars("train/loss")
    assert len(loss) >= steps // 2 - 1 >= 5
    assert len({e.step for e in loss}) == len(loss)
    assert len(acc.Scalars("train/loss_mean")) == len(loss)

    speed = acc.Scalars("train/samples_per_second")
    finite = [e for e in speed if math.isfinite(e.value) and e.value > 0]
    assert len({e.step for e in finite}) >= 2

"""TorchRec's train pipelines drive the same training as the plain loop, bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny_overrides

from torchrec_recsys.app.train import main
from torchrec_recsys.config import load_config
from torchrec_recsys.data.synthetic import SyntheticPaths
from torchrec_recsys.errors import ConfigError


@pytest.mark.parametrize("model", ["dlrm", "two_tower"])
def test_sparse_dist_pipeline_matches_the_plain_loop(
    model: str, synthetic_paths: SyntheticPaths, tmp_path: Path
) -> None:
    results = {}
    for engine in ("none", "sparse_dist"):
        summary = main(
            [
                *tiny_overrides(synthetic_paths, tmp_path),
                f"--name={model}-{engine}",
                f"--model.name={model}",
                f"--train.pipeline={engine}",
                "--train.epochs=1",
                "--train.max_steps_per_epoch=6",
                "--train.log_every=4",
            ]
        )
        results[engine] = (summary["test"], summary["epochs"][0]["train_loss"])
    assert results["sparse_dist"] == results["none"]


def test_unknown_pipeline_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="train.pipeline = 'fast'"):
        load_config(None, ["--train.pipeline=fast"])

"""TorchRec's eval pipeline scores a split bit for bit like the plain loop."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny_overrides

from torchrec_recsys.app import builders
from torchrec_recsys.app.train import main
from torchrec_recsys.data.synthetic import SyntheticPaths
from torchrec_recsys.training import evaluation
from torchrec_recsys.training.evaluation import RankingEvaluator, RetrievalEvaluator


@pytest.mark.parametrize("model", ["dlrm", "two_tower"])
def test_eval_pipeline_metrics_equal_the_plain_loop(
    model: str, synthetic_paths: SyntheticPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every evaluation of a sparse_dist run (validation after the epoch, then test) is
    computed twice on the same weights: through EvalPipelineSparseDist and the plain loop."""
    real_builder = builders.build_evaluator
    pairs: list[tuple[str, dict[str, float], dict[str, float]]] = []

    def both_ways(cfg, data, ctx, sequences=None, stream=None):  # type: ignore[no-untyped-def]
        evaluator = real_builder(cfg, data, ctx, sequences, stream=stream)
        assert isinstance(evaluator, (RankingEvaluator, RetrievalEvaluator))
        assert evaluator.pipelined  # train.pipeline = sparse_dist turns the eval pipeline on

        def evaluate(model, split):  # type: ignore[no-untyped-def]
            evaluator.pipelined = True
            piped = evaluator(model, split)
            evaluator.pipelined = False
            plain = evaluator(model, split)
            pairs.append((split, piped, plain))
            return piped

        return evaluate

    pipelined_modules: list[int] = []

    class Spy(evaluation.EvalPipelineSparseDist):  # type: ignore[misc]
        def reset(self) -> None:
            pipelined_modules.append(len(self._pipelined_modules))
            super().reset()

    monkeypatch.setattr(builders, "build_evaluator", both_ways)
    monkeypatch.setattr(evaluation, "EvalPipelineSparseDist", Spy)
    main(
        [
            *tiny_overrides(synthetic_paths, tmp_path),
            f"--model.name={model}",
            "--train.pipeline=sparse_dist",
            "--train.epochs=1",
            "--train.max_steps_per_epoch=6",
        ]
    )
    assert [split for split, _, _ in pairs] == ["val", "test"]
    # the pipeline really ran: its sharded EBC's input dist was pipelined on every pass
    # (ranking: 1 pass per split; two-tower: items, then queries)
    assert pipelined_modules == [1] * (2 if model == "dlrm" else 4)
    for _, piped, plain in pairs:
        assert piped == plain  # bit-equal, every metric
        assert piped  # (and not empty)

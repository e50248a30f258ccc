"""The pipeline objective end to end: retriever -> pairs ranker -> evaluate-pipeline; bad asks."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_overrides

from torchrec_recsys.app.pipeline import load_ranker
from torchrec_recsys.app.retrieval_commands import ranker_name
from torchrec_recsys.app.train import main
from torchrec_recsys.app.trained import load_trained
from torchrec_recsys.cli import main as cli_main
from torchrec_recsys.config import ExperimentConfig
from torchrec_recsys.data.context import context_feature_names
from torchrec_recsys.distributed.env import init_distributed, shutdown_distributed
from torchrec_recsys.errors import ConfigError, UserError
from torchrec_recsys.retrieval.candidates import retrieval_features
from torchrec_recsys.retrieval.faiss_index import load_index, search
from torchrec_recsys.retrieval.predict import predict
from torchrec_recsys.retrieval.two_stage import pipeline_scorer, recommend, user_query_table
from torchrec_recsys.serving.online import OnlineFeatures, recommend_online


@pytest.fixture(scope="module")
def runs(synthetic_paths, tmp_path_factory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("pipeline")
    base = tiny_overrides(synthetic_paths, out)
    retriever = main([*base, "--name=tt", "--model", "two_tower", "--train.epochs=2"])
    rating = main([*base, "--name=rating", "--train.epochs=1", "--baselines.lightgbm=false"])
    pipeline = main(
        [
            *base,
            "--name=pipe",
            "--train.epochs=2",
            "--model.objective=pipeline",
            f"--model.retriever_run={retriever['run_dir']}",
            "--model.candidates=20",
            "--model.hard_negatives=4",
            "--model.random_negatives=2",
            "--baselines.enabled=true",
            "--baselines.lightgbm_rounds=20",
        ]
    )
    return base, out, retriever, rating, pipeline


@pytest.mark.slow
def test_pipeline_ranker_trains_on_pairs_and_evaluates(runs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, _, retriever, rating, pipeline = runs
    pair = [f["name"] for f in pipeline["feature_spec"]["dense"] if f["tower"] == "pair"]
    fixed = ["retrieval_score", "retrieval_rank", *context_feature_names([])]
    assert pair[: len(fixed)] == fixed
    shares = pair[len(fixed) :]  # one per configured item column
    assert shares and all(n.startswith("history_share_item_") for n in shares)
    # 1 positive + 4 hard + 2 random negatives per training example
    assert pipeline["dataset"]["train"] == 7 * rating["dataset"]["train"]
    assert 0.0 <= pipeline["test"]["auc"] <= 1.0
    assert {"logistic_regression", "lightgbm"} <= set(pipeline["baselines_test"])
    out = tmp_path / "pipeline.json"
    args = ["evaluate-pipeline", "--retriever", retriever["run_dir"], "--candidates", "20"]
    code = cli_main(
        [*args, "--ranker", rating["run_dir"], "--ranker", pipeline["run_dir"], "--out", str(out)]
    )
    assert code == 0
    metrics = json.loads(out.read_text())
    assert set(metrics) == {
        "retrieval",
        "DLRM (rating)",
        "DLRM (pipeline)",
        "logistic regression (pipeline)",
        "LightGBM (pipeline)",
        "LightGBM lambdarank (pipeline)",
        "candidates_recall",
    }
    for name in ("retrieval", "DLRM (pipeline)"):
        assert {"recall@10", "ndcg@10", "mrr", "coverage@10", "hr@10", "map@10"} <= set(
            metrics[name]
        )
    # retrieval alone here equals the retriever's own test Recall@10 (same exact search)
    assert metrics["retrieval"]["recall@10"] == pytest.approx(
        retriever["test"]["recall@10"], abs=1e-6
    )


@pytest.mark.slow
def test_pipeline_bad_inputs_are_clear_errors(runs, capsys) -> None:  # type: ignore[no-untyped-def]
    base, _, retriever, rating, pipeline = runs
    pipe = [*base, "--name=bad", "--train.epochs=1", "--model.objective=pipeline"]
    with pytest.raises(ConfigError, match="needs model.retriever_run"):
        main(pipe)
    with pytest.raises(UserError, match="trained a 'dlrm' model"):
        main([*pipe, f"--model.retriever_run={rating['run_dir']}"])
    with pytest.raises(UserError, match="data.history_length differ"):
        main([*pipe, f"--model.retriever_run={retriever['run_dir']}", "--data.history_length=3"])
    # a pipeline ranker evaluated on another retriever's candidates
    args = ["evaluate-pipeline", "--retriever", rating["run_dir"], "--ranker", pipeline["run_dir"]]
    assert cli_main(args) == 2
    assert "expected 'two_tower'" in capsys.readouterr().err


def test_ranker_rows_name_the_objective_and_a_missing_context() -> None:
    cfg = ExperimentConfig()
    assert ranker_name(cfg) == "DLRM (rating)"
    piped = dataclasses.replace(cfg.model, objective="pipeline", interaction="dcn")
    assert ranker_name(dataclasses.replace(cfg, model=piped)) == "DCN-v2 (pipeline)"
    plain = dataclasses.replace(piped, interaction="dot", context_features=False)
    assert ranker_name(dataclasses.replace(cfg, model=plain)) == "DLRM (pipeline, no context)"


@pytest.mark.slow
def test_recommend_scores_a_pipeline_ranker_like_the_evaluation(runs) -> None:  # type: ignore[no-untyped-def]
    _, _, retriever_summary, _, pipeline_summary = runs
    tt_dir = Path(retriever_summary["run_dir"])
    assert cli_main(["export", "--run-dir", str(tt_dir)]) == 0
    ctx = init_distributed()
    try:
        retriever = load_trained(tt_dir, ctx)
        ranker = load_ranker(pipeline_summary["run_dir"], ctx)
        assert ranker.data.context is not None
        index = load_index(tt_dir / "index_flat", expected_dim=None, expected_metric="cosine")
        user = retriever.data.user_ids[1]
        result = recommend(retriever, ranker, index, user, k=5, candidates=20, rank_cap=20)
        # the same 20 candidates through the evaluation's scorer, with the user's state now
        data = retriever.data
        query_table, cold = user_query_table(data, user, [])
        assert not cold and query_table.times is None and query_table.history is not None
        query = predict(retriever.task, query_table, data, "query").numpy()  # [1, D]
        own = data.users.train_items.select(query_table.user_rows).values.tolist()
        scores, ids = search(index, query, 20, exclude=[{data.items.item_ids[i] for i in own}])
        rows = torch.tensor([ranker.data.items.row_of[i] for i in ids[0]])
        features = retrieval_features(torch.tensor(scores[0]), torch.arange(20), 20)
        now = ranker.data.user_table(query_table.user_rows)
        expected = pipeline_scorer(ranker)(now, torch.zeros(20, dtype=torch.int64), rows, features)
        order = torch.argsort(expected, descending=True)[:5]
        assert [r.item_id for r in result.items] == [ids[0][i] for i in order.tolist()]
        got = torch.tensor([r.ranking_score for r in result.items], dtype=expected.dtype)
        assert torch.allclose(got, expected[order], atol=1e-6)
        # the serving path answers the same (its pipeline pairs come from the same builder)
        online = OnlineFeatures.build(retriever, ranker, index)
        served = recommend_online(
            retriever, ranker, index, online, user, k=5, candidates=20, rank_cap=20
        ).result
        assert [r.item_id for r in served.items] == [r.item_id for r in result.items]
        served_scores = torch.tensor([r.ranking_score for r in served.items], dtype=got.dtype)
        assert torch.allclose(served_scores, got, atol=1e-6)
    finally:
        shutdown_distributed()

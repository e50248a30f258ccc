"""Export -> load -> search round trip, recommendations, and the two-stage evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_overrides

from torchrec_recsys.app.train import main
from torchrec_recsys.app.trained import load_trained
from torchrec_recsys.cli import main as cli_main
from torchrec_recsys.distributed.env import init_distributed, shutdown_distributed
from torchrec_recsys.retrieval.faiss_index import load_index, search
from torchrec_recsys.retrieval.predict import item_embeddings
from torchrec_recsys.retrieval.two_stage import evaluate_two_stage, recommend


@pytest.fixture(scope="module")
def trained_runs(synthetic_paths, tmp_path_factory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("runs")
    base = tiny_overrides(synthetic_paths, out)
    retriever = main([*base, "--name=tt", "--model", "two_tower", "--train.epochs=2"])
    ranker = main([*base, "--name=dlrm", "--train.epochs=2"])
    return Path(retriever["run_dir"]), Path(ranker["run_dir"]), retriever


@pytest.mark.slow
def test_export_round_trip_and_recommendations(trained_runs, capsys) -> None:  # type: ignore[no-untyped-def]
    tt_dir, dlrm_dir, tt_summary = trained_runs
    assert cli_main(["export", "--run-dir", str(tt_dir)]) == 0
    meta = json.loads((tt_dir / "index_flat" / "metadata.json").read_text())
    assert meta["metric"] == "cosine" and meta["dim"] == 32
    assert cli_main(["export", "--run-dir", str(dlrm_dir)]) == 2
    assert "trained a 'dlrm' model; expected 'two_tower'" in capsys.readouterr().err

    ctx = init_distributed()
    try:
        retriever = load_trained(tt_dir, ctx)
        ranker = load_trained(dlrm_dir, ctx)
        # the loaded (unsharded) model reproduces the trained run's test metrics
        two_stage = evaluate_two_stage(retriever, ranker, "test", candidates=20, k=10)
        assert two_stage["retrieval"]["recall@10"] == pytest.approx(
            tt_summary["test"]["recall@10"], abs=1e-6
        )
        assert set(two_stage) == {"retrieval", "retrieve_then_rank", "candidates_recall"}

        index = load_index(tt_dir / "index_flat", expected_dim=32, expected_metric="cosine")
        items = item_embeddings(retriever.task, retriever.data).numpy()  # [I, D]
        queries = items[:5]
        _, ids = search(index, queries, k=5)
        brute = np.argsort(-(queries @ items.T), axis=1)[:, :5]
        assert ids == [[retriever.data.items.item_ids[j] for j in row] for row in brute]

        known = retriever.data.user_ids[0]
        result = recommend(retriever, ranker, index, known, k=5, candidates=20)
        assert not result.cold_start and len(result.items) == 5
        scores = [r.ranking_score for r in result.items]
        assert scores == sorted(scores, reverse=True)
        row = retriever.data.user_ids.index(known)
        seen = retriever.data.users.train_items.select(torch.tensor([row])).values.tolist()
        seen_ids = {retriever.data.items.item_ids[i] for i in seen}
        assert not seen_ids & {r.item_id for r in result.items}

        cold = recommend(retriever, ranker, index, "nobody", k=3, candidates=20)
        assert cold.cold_start and len(cold.items) == 3
    finally:
        shutdown_distributed()


@pytest.mark.slow
def test_recommend_cli_and_bad_input(trained_runs, capsys) -> None:  # type: ignore[no-untyped-def]
    tt_dir, dlrm_dir, _ = trained_runs
    if not (tt_dir / "index_flat").exists():
        assert cli_main(["export", "--run-dir", str(tt_dir)]) == 0
    args = ["recommend", "--retriever", str(tt_dir), "--ranker", str(dlrm_dir)]
    assert cli_main([*args, "--user", "brand-new", "-k", "3", "--candidates", "10"]) == 0
    out = capsys.readouterr().out
    assert "cold-start" in out and len(out.strip().splitlines()) == 2 + 3
    assert cli_main([*args, "--user", "u1", "-k", "30", "--candidates", "10"]) == 2
    assert "k = 30 must not exceed the number of candidates (10)" in capsys.readouterr().err
    assert cli_main([*args, "--user", "u1", "--candidates", "100000"]) == 2
    assert "exceeds the 80 indexed items" in capsys.readouterr().err
    assert cli_main([*args, "--user", "u1", "--index", str(dlrm_dir / "nope")]) == 2

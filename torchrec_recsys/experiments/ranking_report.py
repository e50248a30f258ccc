"""Ranking and pipeline report over seeds: the ranking and pipeline tables, in one command.

Per seed (``train.seed``; the temporal split is the same for every seed)::

    two-tower retriever ------------------------------------------+
    DLRM (rating label) + popularity / LR / LightGBM baselines     |  evaluate-pipeline:
    DCN-v2 (rating label)                                          +-> retrieval alone vs
    DLRM (pipeline objective, the retriever's candidates) --------+    + each second stage

Tables (mean +/- sample standard deviation over seeds, with n = seeds):

* ranking (rating label, test split): AUC and NE of popularity, item positive rate,
  logistic regression, LightGBM, DLRM, DCN-v2;
* pipeline (test split): Recall@10, NDCG@10, MRR, coverage@10 of retrieval alone and
  re-ranked by the rating DLRM, the pipeline DLRM, and LR / LightGBM (binary and
  lambdarank) on the pipeline pairs (retrieval score and rank + context features).

A run whose ``summary.json`` exists is reused, so an interrupted report resumes.
"""

from __future__ import annotations

import json
from pathlib import Path

from torchrec_recsys import api
from torchrec_recsys.app.retrieval_commands import pipeline_table as method_table
from torchrec_recsys.errors import UserError
from torchrec_recsys.experiments import parsers
from torchrec_recsys.files import atomic_write_text
from torchrec_recsys.metrics.spread import mean_spread
from torchrec_recsys.observability.provenance import start_run_meta, write_result

RANKING_ROWS = (
    ("popularity", "baseline", "popularity", None),
    ("item positive rate", "baseline", "item_positive_rate", "item_positive_rate_ne"),
    ("logistic regression", "baseline", "logistic_regression", None),
    ("LightGBM", "baseline", "lightgbm", None),
    ("DLRM", "dlrm", None, None),
    ("DCN-v2", "dcn", None, None),
)
PIPELINE_COLUMNS = ("recall@10", "ndcg@10", "mrr", "coverage@10")


def _train(config: str, overrides: list[str], run_dir: Path) -> api.RunResult:
    """The run in ``run_dir``: read back when it finished before, else trained now."""
    if (run_dir / api.SUMMARY_FILE).is_file():
        result = api.load_run(run_dir).result
        assert result is not None
        return result
    return api.train(api.load_config(config, overrides), run_dir=run_dir)


def _evaluate(
    out: Path, retriever: api.RunResult, rankers: list[api.RunResult], candidates: int
) -> dict[str, dict[str, float]]:
    """``evaluate-pipeline`` of ``rankers`` on ``retriever``'s candidates; its metrics are
    kept in ``out`` (JSON) and read back from there when it exists."""
    if out.is_file():
        return json.loads(out.read_text())
    result = api.evaluate_pipeline(retriever, rankers, candidates=candidates)
    if result is None:
        raise UserError("the ranking report evaluates in one process; run it without a launcher")
    text = result.to_json()
    print(text)
    print(method_table(result.metrics, result.k))
    atomic_write_text(out, text)
    return result.metrics


def ranking_table(per_seed: list[dict[str, api.RunResult]]) -> str:
    """Rows = methods; AUC and NE on the test split, mean ± std over seeds."""
    lines = ["| ranker (rating label) | test AUC | test NE |", "|---|---|---|"]
    for label, source, key, ne_key in RANKING_ROWS:
        aucs, nes = [], []
        for runs in per_seed:
            if source == "baseline":
                value = runs["dlrm"].baselines.get(key)
                if isinstance(value, dict):
                    aucs.append(value["auc"])
                    nes.append(value["ne"])
                elif value is not None:
                    aucs.append(value)
                    if ne_key:
                        nes.append(runs["dlrm"].baselines[ne_key])
            else:
                aucs.append(runs[source].metrics["auc"])
                nes.append(runs[source].metrics["ne"])
        lines.append(f"| {label} | {mean_spread(aucs)} | {mean_spread(nes)} |")
    return "\n".join(lines)


def pipeline_table(per_seed: list[dict[str, dict[str, float]]]) -> str:
    """Rows = retrieval alone and each second stage; mean ± std over seeds."""
    header = "| method | " + " | ".join(PIPELINE_COLUMNS) + " |"
    lines = [header, "|---" * (len(PIPELINE_COLUMNS) + 1) + "|"]
    for name in per_seed[0]:
        if name == "candidates_recall":
            continue
        label = "retrieval alone" if name == "retrieval" else f"+ {name}"
        cells = [mean_spread([m[name][c] for m in per_seed]) for c in PIPELINE_COLUMNS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _evaluate_alone(
    retriever: api.RunResult, ranker: api.RunResult, candidates: int, root: Path, seed: int
) -> dict[str, dict[str, float]]:
    """``evaluate-pipeline`` of a pipeline ranker without context features: its rows (the
    DLRM and the tabular second stages on its pairs) only."""
    out = root / f"evaluate_pipeline_noctx_s{seed}.json"
    metrics = _evaluate(out, retriever, [ranker], candidates)
    return {k: v for k, v in metrics.items() if "no context" in k}


def main(argv: list[str]) -> None:
    parser = parsers.ranking_report_parser()
    args, overrides = parser.parse_known_args(argv)
    meta = start_run_meta()
    root = Path(args.runs_dir)
    common = ["--train.progress_bar=false", *overrides]
    no_learned = ["--baselines.logistic_regression=false", "--baselines.lightgbm=false"]
    ranking_runs, pipeline_runs = [], []
    for seed in args.seeds:
        s = [*common, f"--train.seed={seed}"]
        tt = _train(args.retriever_config, s, root / f"two_tower_s{seed}")
        dlrm = _train(args.ranker_config, [*s, "--baselines.enabled=true"], root / f"dlrm_s{seed}")
        dcn = _train(
            args.ranker_config, [*s, "--model.interaction=dcn", *no_learned], root / f"dcn_s{seed}"
        )
        pipe_overrides = [
            *s,
            "--model.objective=pipeline",
            f"--model.retriever_run={tt.run_dir}",
            f"--model.candidates={args.candidates}",
            *no_learned,
            *args.pipeline_flag,
        ]
        pipe = _train(args.ranker_config, pipe_overrides, root / f"pipeline_s{seed}")
        ranking_runs.append({"dlrm": dlrm, "dcn": dcn})
        out = root / f"evaluate_pipeline_s{seed}.json"
        metrics = _evaluate(out, tt, [dlrm, pipe], args.candidates)
        if args.ablate_context:
            plain = _train(
                args.ranker_config,
                [*pipe_overrides, "--model.context_features=false"],
                root / f"pipeline_noctx_s{seed}",
            )
            metrics.update(_evaluate_alone(tt, plain, args.candidates, root, seed))
        pipeline_runs.append(metrics)
        selected = {
            n: r.selected_epoch
            for n, r in (("dlrm", dlrm), ("dcn", dcn), ("pipeline", pipe), ("two_tower", tt))
        }
        print(f"seed {seed}: selected epochs {json.dumps(selected)}", flush=True)
    seeds = ", ".join(map(str, args.seeds))
    text = (
        f"Seeds {seeds} (mean ± sample std over {len(args.seeds)} seeds).\n\n"
        + ranking_table(ranking_runs)
        + "\n\n"
        + pipeline_table(pipeline_runs)
        + "\n"
    )
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_path, text)
    payload = {
        "ranking": [{n: r.summary for n, r in runs.items()} for runs in ranking_runs],
        "pipeline": pipeline_runs,
    }
    atomic_write_text(out_path.with_suffix(".json"), json.dumps(payload, indent=2, default=str))
    if args.results:
        payload = json.loads(json.dumps(payload, default=str))
        print(f"wrote {write_result('results', args.results, payload, meta, markdown=text)}")
    print(text)
    print(f"wrote {out_path}")

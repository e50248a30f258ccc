"""Markdown table of train-command summaries: mean +/- spread over seeds, per model.

Reads ``<runs>/<model>_s<seed>/summary.json`` (as written by ``python -m torchrec_recsys
train ... --run-dir <runs>/<model>_s<seed>``) and the popularity baseline stored in the
sequence models' summaries (it does not depend on the seed), and prints one row per model:
Recall@10, NDCG@10, MRR, coverage@10, cold-item Recall@10 and training-loop seconds (the sum
of the epochs' ``seconds``: training steps only, no evaluation or data building).

    python benchmarks/sequence_results_table.py --runs runs/readme \
        --out results
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from torchrec_recsys.metrics.spread import mean_spread
from torchrec_recsys.observability.provenance import start_run_meta, write_result_to

METRICS = ("recall@10", "ndcg@10", "mrr", "coverage@10", "cold_recall@10")
MODELS = {
    "generative": "generative retriever (T5 + SIDs)",
    "sasrec": "SASRec",
    "two_tower": "two-tower",
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/readme")
    parser.add_argument("--out", default="results", help="results folder, or a .json path")
    parser.add_argument("--topic", default="sequence_results", help="result topic")
    args = parser.parse_args(argv)
    meta = start_run_meta()
    rows, raw = [], {}
    popularity = None
    for model, label in MODELS.items():
        summaries = [
            json.loads(p.read_text())
            for p in sorted(Path(args.runs).glob(f"{model}_s*/summary.json"))
        ]
        raw[model] = [
            {
                "seed": s["config"]["train"]["seed"],
                "test": s["test"],
                "wall": s["wall_time_seconds"],
            }
            for s in summaries
        ]
        if summaries and model != "two_tower":
            popularity = summaries[0]["baselines_test"]["popularity"]
        cells = [mean_spread([s["test"].get(m, float("nan")) for s in summaries]) for m in METRICS]
        train_s = [sum(e["seconds"] for e in s["epochs"]) for s in summaries]
        seeds = ",".join(str(r["seed"]) for r in raw[model])
        rows.append([label, seeds or "-", *cells, mean_spread(train_s, 0)])
    if popularity is not None:
        rows.append(["popularity", "-", *[mean_spread([popularity[m]]) for m in METRICS], "0"])
        raw["popularity"] = popularity
    header = ["model", "seeds", "Recall@10", "NDCG@10", "MRR", "coverage@10", "cold Recall@10"]
    header.append("train s")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    print("\n".join(lines))
    path = write_result_to(args.out, args.topic, raw, meta, markdown="\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""RecBole's SASRec on exactly our MovieLens-100K split, beside our SASRec's committed result.

The interactions go to RecBole in our order (``data.splits.temporal_order``: user, time,
item), each row's timestamp replaced by its position in that order, so RecBole's
leave-one-out by time (``LS: valid_and_test``, ``order: TO``) holds out the same validation
and test item per user as our shared split; the script checks that RecBole's test targets
equal ours, user by user, before it trains. RecBole ranks every item (``mode: full``) with
the user's earlier items masked and reports Recall@10 / NDCG@10; it keeps the epoch with the
best validation Recall@10 (early stop after ``--patience`` epochs without a better one).

Settings: RecBole's SASRec defaults (CE loss, 2 layers, hidden 64, feed-forward 256, 50
items of history, Adam lr 1e-3) with ``--dropouts`` tried at ``--seeds``' first seed and
chosen on validation, then the chosen one at every seed. RecBole and its evaluation
dependencies are not ours: install them beside the product, e.g.
``pip install --no-deps --target /tmp/peer colorlog==6.12.0 texttable==1.7.2
thop==0.1.1.post2209072238 scikit-learn==1.9.1 joblib==1.6.0 threadpoolctl==3.8.0`` and run
with ``PYTHONPATH=/tmp/peer:.``::

    PYTHONPATH=/tmp/peer:. python benchmarks/peer_sasrec.py --seeds 0 1 2

writes ``results/peer_sasrec_<hardware>_<date>.json`` (+ ``.md``) with provenance.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from torchrec_recsys import api
from torchrec_recsys.app.builders import build_raw_data
from torchrec_recsys.data.splits import temporal_order
from torchrec_recsys.metrics.spread import mean_spread
from torchrec_recsys.observability.provenance import start_run_meta, write_result

OURS = "results/sasrec_recipe_cpu2_20261202.json"
"""Our SASRec on the same split (the recipe search's chosen cell at seeds 0, 1, 2)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/ml100k_sasrec.toml", help="our split's config")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--dropouts", type=float, nargs="+", default=[0.5, 0.2])
    p.add_argument("--epochs", type=int, default=50, help="most epochs per run")
    p.add_argument("--patience", type=int, default=5, help="epochs without a better val")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ours", default=OURS, help="our committed SASRec result to set beside")
    p.add_argument("--results", default="results", help="folder of the result files")
    p.add_argument("--out", help="write this JSON instead of results/")
    return p.parse_args(argv)


def write_atomic_file(config: str, folder: Path) -> dict[str, str]:
    """Our interactions as RecBole's ``<folder>/ours/ours.inter``; returns each user's test
    item (the last row of users with more than two interactions, as our split holds out)."""
    ordered = temporal_order(build_raw_data(api.load_config(config)).interactions)
    (folder / "ours").mkdir(parents=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    lines += [
        f"{u}\t{i}\t{n}"
        for n, (u, i) in enumerate(zip(ordered["user_id"], ordered["item_id"], strict=True))
    ]
    (folder / "ours" / "ours.inter").write_text("\n".join(lines) + "\n")
    sizes = ordered.groupby("user_id", sort=False)["item_id"]
    last = sizes.last()
    return {u: i for u, i in last.items() if sizes.size()[u] > 2}


def numpy2_aliases() -> None:
    """RecBole 1.2.1 re-creates numpy 1's aliases from ``np.float_`` etc. at start-up, which
    numpy 2 removed: give it the numpy 2 names those aliases stood for."""
    import numpy as np

    for old, new in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
        if old not in np.__dict__:
            setattr(np, old, new)


def recbole_config(folder: Path, seed: int, dropout: float, args: argparse.Namespace) -> Any:
    from recbole.config import Config

    numpy2_aliases()
    return Config(
        model="SASRec",
        dataset="ours",
        config_dict={
            "data_path": str(folder),
            "checkpoint_dir": str(folder / "checkpoints"),
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "eval_args": {
                "split": {"LS": "valid_and_test"},
                "order": "TO",
                "group_by": "user",
                "mode": "full",
            },
            "train_neg_sample_args": None,
            "loss_type": "CE",
            "metrics": ["Recall", "NDCG"],
            "topk": [10],
            "valid_metric": "Recall@10",
            "epochs": args.epochs,
            "stopping_step": args.patience,
            "train_batch_size": 256,
            "eval_batch_size": 4096,
            "learning_rate": 1e-3,
            "hidden_dropout_prob": dropout,
            "attn_dropout_prob": dropout,
            "MAX_ITEM_LIST_LENGTH": 50,
            "seed": seed,
            "reproducibility": True,
            "device": "cpu",
            "use_gpu": False,
            "show_progress": False,
            "state": os.environ.get("PEER_LOG_STATE", "WARNING"),
        },
    )


def test_targets(test_data: Any, dataset: Any) -> dict[str, str]:
    """RecBole's test item per user, as raw ids."""
    inter = test_data.dataset.inter_feat
    users = dataset.id2token("user_id", inter["user_id"].numpy())
    items = dataset.id2token("item_id", inter["item_id"].numpy())
    return dict(zip(users.tolist(), items.tolist(), strict=True))


def run(folder: Path, seed: int, dropout: float, ours: dict[str, str], args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    config = recbole_config(folder, seed, dropout, args)
    init_seed(config["seed"], config["reproducibility"])
    torch.set_num_threads(args.threads)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    theirs = test_targets(test_data, dataset)
    if theirs != ours:
        differ = sum(theirs.get(u) != i for u, i in ours.items())
        raise SystemExit(f"RecBole's split differs from ours for {differ} of {len(ours)} users")
    model = SASRec(config, train_data.dataset)
    trainer = Trainer(config, model)
    start = time.perf_counter()
    best_val, _ = trainer.fit(train_data, valid_data, saved=True, show_progress=False)
    # The best epoch's checkpoint is RecBole's own file from this run: torch >= 2.6 loads
    # with weights_only=True by default, which RecBole 1.2.1's checkpoint (its config object)
    # does not pass, so it is restored here and evaluated as is.
    best = torch.load(trainer.saved_model_file, map_location="cpu", weights_only=False)
    model.load_state_dict(best["state_dict"])
    model.load_other_parameter(best.get("other_parameter"))
    test = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    return {
        "seed": seed,
        "dropout": dropout,
        "val_recall@10": float(best_val),
        "test": {k: float(v) for k, v in test.items()},
        "test_users": len(theirs),
        "epochs_run": len(trainer.train_loss_dict),
        "selected_epoch": int(best["epoch"]) + 1,
        "seconds": time.perf_counter() - start,
    }


def search_words(
    args: argparse.Namespace, search: list[dict[str, Any]], chosen: dict[str, Any]
) -> str:
    """How RecBole's dropout was set, in words."""
    if len(search) == 1:
        return f"Dropout fixed at {chosen['dropout']} (no search)."
    tried = ", ".join(f"{r['dropout']} -> val Recall@10 {r['val_recall@10']:.4f}" for r in search)
    return (
        f"Dropout chosen on validation (seed {args.seeds[0]}): {tried}; chosen {chosen['dropout']}."
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    meta = start_run_meta(threads=args.threads)
    logging.getLogger().setLevel(logging.WARNING)
    cwd = Path.cwd()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ours_targets = write_atomic_file(args.config, folder)
        os.chdir(folder)  # RecBole writes log/ and log_tensorboard/ into the working folder
        search = [run(folder, args.seeds[0], d, ours_targets, args) for d in args.dropouts]
        for r in search:
            print(f"dropout {r['dropout']}: val Recall@10 {r['val_recall@10']:.4f}", flush=True)
        chosen = max(search, key=lambda r: r["val_recall@10"])
        final = [chosen] + [
            run(folder, s, chosen["dropout"], ours_targets, args) for s in args.seeds[1:]
        ]
        os.chdir(cwd)
    ours = json.loads(Path(args.ours).read_text())["final"]
    rows = {
        "RecBole SASRec": [r["test"]["recall@10"] for r in final],
        "ours": [r["test"]["recall@10"] for r in ours],
    }
    ndcg = {
        "RecBole SASRec": [r["test"]["ndcg@10"] for r in final],
        "ours": [r["test"]["ndcg@10"] for r in ours],
    }
    lines = [
        "| SASRec | seeds | test Recall@10 | test NDCG@10 |",
        "|---|---|---|---|",
        *[
            f"| {name} | {len(values)} | {mean_spread(values)} | {mean_spread(ndcg[name])} |"
            for name, values in rows.items()
        ],
        "",
        search_words(args, search, chosen) + " Ratio ours / RecBole (means): "
        f"{statistics.fmean(rows['ours']) / statistics.fmean(rows['RecBole SASRec']):.3f}; "
        "RecBole's epochs run / selected: "
        + ", ".join(f"{r['epochs_run']} / {r['selected_epoch']}" for r in final)
        + f" (at most {args.epochs}, patience {args.patience}).",
    ]
    payload = {"search": search, "final": final, "ours": ours, "ours_file": args.ours}
    markdown = "# Our SASRec vs RecBole's on one split\n\n" + "\n".join(lines)
    if args.out:
        Path(args.out).write_text(json.dumps({"run_meta": meta, **payload}, indent=2))
    else:
        print(f"wrote {write_result(args.results, 'peer_sasrec', payload, meta, markdown)}")
    print(markdown)


if __name__ == "__main__":
    main()

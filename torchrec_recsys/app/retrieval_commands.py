"""Entry points: ``export`` (item index), ``recommend`` and ``evaluate-pipeline``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from torchrec_recsys.app import parsers
from torchrec_recsys.app.pipeline import check_same_data, load_ranker
from torchrec_recsys.app.trained import TrainedModel, load_trained, read_run_config
from torchrec_recsys.config import ExperimentConfig
from torchrec_recsys.data.batch import build_sequence_kjt
from torchrec_recsys.data.dataset import ExampleTable, RecDataset
from torchrec_recsys.data.jagged import JaggedColumn
from torchrec_recsys.distributed.env import init_distributed, shutdown_distributed
from torchrec_recsys.errors import UserError, warn_user
from torchrec_recsys.files import atomic_write_text
from torchrec_recsys.models.tabular import (
    fit_lightgbm,
    fit_logistic_regression,
    lightgbm_probabilities,
    logistic_probabilities,
    tabular_layout,
    tabular_matrix,
)
from torchrec_recsys.retrieval.candidates import pipeline_pairs
from torchrec_recsys.retrieval.faiss_index import (
    IndexSpec,
    LoadedIndex,
    build_index,
    load_index,
    save_index,
)
from torchrec_recsys.retrieval.predict import item_embeddings
from torchrec_recsys.retrieval.two_stage import (
    PairScorer,
    evaluate_two_stage,
    format_recommendations,
    pipeline_scorer,
    rating_scorer,
    recommend,
)

METRIC = "cosine"  # the two-tower scores L2-normalised embeddings by inner product


def _require(run_dir: str, model: str, flag: str) -> None:
    name = read_run_config(Path(run_dir)).model.name
    if name != model:
        raise UserError(f"{flag} {run_dir!r} trained a {name!r} model; expected {model!r}")


def _check_two_stage(args: argparse.Namespace) -> None:
    """Flag values first (cheap), then that both run folders hold the right model."""
    _check_flags(args)
    check_two_stage_runs(args)


def _check_flags(args: argparse.Namespace) -> None:
    """``-k`` and ``--candidates``: at least 1, and k within the candidates."""
    if args.k < 1:
        raise UserError(f"-k {args.k} is invalid; expected at least 1 item")
    if args.candidates < 1:
        raise UserError(f"--candidates {args.candidates} is invalid; expected at least 1")
    if args.k > args.candidates:
        raise UserError(
            f"-k {args.k} exceeds --candidates {args.candidates}: k = {args.k} must not exceed "
            f"the number of candidates ({args.candidates})"
        )


def check_two_stage_runs(args: argparse.Namespace) -> None:
    """Fail unless ``--retriever`` holds a two-tower run and ``--ranker`` a DLRM run."""
    _require(args.retriever, "two_tower", "--retriever")
    _require(args.ranker, "dlrm", "--ranker")


def _check_index_source(index: LoadedIndex, folder: Path, checkpoint: Path) -> None:
    """Fail unless the index was exported from ``checkpoint`` (the retriever's newest).

    An index from another run (or an older checkpoint of this one) holds item embeddings
    that do not match the query tower, even when the dimension agrees.
    """
    source = index.metadata.get("checkpoint_path")
    if source is None:
        raise UserError(
            f"index {str(folder)!r} does not record the checkpoint it was built from; "
            f"re-export it with 'export --run-dir <retriever> --overwrite'"
        )
    if Path(source).resolve() != Path(checkpoint).resolve():
        raise UserError(
            f"index {str(folder)!r} was built from checkpoint {source!r}, but the retriever's "
            f"newest checkpoint is {str(checkpoint)!r}; re-export the index from the retriever"
        )


def _check_history(history: list[str], catalogue: list[str]) -> None:
    known = set(catalogue)
    unknown = [h for h in history if h not in known]
    if unknown:
        raise UserError(
            f"--history item {unknown[0]!r} is not in the retriever's catalogue of "
            f"{len(catalogue)} items ({len(unknown)} unknown of {len(history)} given)"
        )


def export_main(argv: list[str]) -> None:
    parser = parsers.export_parser()
    args = parser.parse_args(argv)
    _require(args.run_dir, "two_tower", "--run-dir")
    out = Path(args.out or Path(args.run_dir) / f"index_{args.kind}")
    if out.exists() and not args.overwrite:
        raise UserError(f"index folder {str(out)!r} already exists; pass --overwrite to replace it")
    owns_group = not dist.is_initialized()
    ctx = init_distributed()
    try:
        trained = load_trained(args.run_dir, ctx)
        if not ctx.is_main:
            return
        spec = IndexSpec(
            kind=args.kind,
            metric=METRIC,
            ivf_nlist=args.nlist,
            ivf_nprobe=args.nprobe,
            hnsw_m=args.hnsw_m,
            hnsw_ef_search=args.ef_search,
        )
        embeddings = (
            item_embeddings(trained.task, trained.data).numpy().astype(np.float32)
        )  # [I, D]
        start = time.perf_counter()
        index = build_index(embeddings, spec)
        seconds = time.perf_counter() - start
        save_index(
            out,
            index,
            trained.data.items.item_ids,
            spec,
            {"model": "two_tower", "global_step": trained.state.global_step},
            checkpoint_path=trained.checkpoint,
            build_seconds=seconds,
            overwrite=args.overwrite,
        )
        print(
            f"wrote {len(embeddings)} item embeddings ({embeddings.shape[1]}-d, {args.kind}, "
            f"{METRIC}) to {out}"
        )
    finally:
        if owns_group:
            shutdown_distributed()


def recommend_main(argv: list[str]) -> None:
    parser = parsers.recommend_parser()
    args = parser.parse_args(argv)
    if read_run_config(Path(args.retriever)).model.name == "generative":
        _recommend_generative(args)
        return
    if not args.ranker:
        raise UserError("--ranker is required with a two-tower --retriever")
    _check_two_stage(args)
    ctx = init_distributed()
    try:
        retriever = load_trained(args.retriever, ctx)
        ranker = load_ranker(args.ranker, ctx)
        dim = retriever.cfg.model.tower_layers[-1]
        folder = Path(args.index or Path(args.retriever) / "index_flat")
        index = load_index(folder, expected_dim=dim, expected_metric=METRIC)
        _check_index_source(index, folder, retriever.checkpoint)
        if args.candidates > index.ntotal:
            raise UserError(
                f"--candidates {args.candidates} exceeds the {index.ntotal} indexed items"
            )
        history = [h.strip() for h in args.history.split(",") if h.strip()]
        _check_history(history, retriever.data.items.item_ids)
        result = recommend(
            retriever,
            ranker,
            index,
            args.user,
            args.k,
            args.candidates,
            history,
            rank_cap=ranker.cfg.model.candidates,
        )
        if len(result.items) < args.k:
            warn_user(
                f"only {len(result.items)} of the {args.k} items asked for (-k): the other "
                f"candidates were items the user already has; raise --candidates for more"
            )
        print(format_recommendations(result))
    finally:
        shutdown_distributed()


def _recommend_generative(args: argparse.Namespace) -> None:
    """Print the items a generative run decodes for a user, with titles and beam scores."""
    if args.ranker:
        raise UserError("--ranker is not used with a generative --retriever; leave it out")
    ctx = init_distributed()
    try:
        trained = load_trained(args.retriever, ctx)
        if not ctx.is_main:
            return
        beam = args.beam or trained.cfg.sequence.beam_width
        if beam < args.k:
            raise UserError(f"--beam {beam} is smaller than -k {args.k}: the beam cannot fill it")
        history = [h for h in args.history.split(",") if h]
        result = generate_for_user(trained, args.user, history, args.k, beam)
        print(result)
    finally:
        shutdown_distributed()


def generate_for_user(
    trained: TrainedModel, user: str, history_ids: list[str], k: int, beam: int
) -> str:
    """The ``k`` best generated items for ``user`` (history: ``history_ids`` or, if empty, the
    user's last ``data.history_length`` items), the user's training items excluded."""
    data, sequences = trained.data, trained.sequences
    assert sequences is not None and trained.task is not None
    item_row = {iid: r for r, iid in enumerate(data.items.item_ids)}
    unknown = [h for h in history_ids if h not in item_row]
    if unknown:
        raise UserError(f"--history item {unknown[0]!r} is not in the catalogue")
    user_row = {u: r for r, u in enumerate(data.user_ids)}.get(user)
    exclude = torch.zeros(1, len(data.items), dtype=torch.bool)
    if history_ids:
        rows = [item_row[h] for h in history_ids]
    elif user_row is None:
        raise UserError(f"--user {user!r} is unknown: give its --history")
    else:
        test = sequences.source.splits["test"]
        at = torch.nonzero(test.user_rows == user_row).flatten()
        rows = test.history.select(at).values.tolist() + test.targets[at].tolist()
    rows = rows[-trained.cfg.data.history_length :]
    if user_row is not None:
        exclude[0, data.users.train_items.select(torch.tensor([user_row])).values] = True
    features = sequences.source.features
    users = torch.tensor([user_row if user_row is not None else 0])
    kjt = build_sequence_kjt(
        JaggedColumn.from_lists([rows]),
        users,
        torch.zeros(1, dtype=torch.int64),
        features.item_feature,
        features.item_tokens,
        features.user_feature,
        features.user_tokens,
    )
    items, scores, tokens = trained.task.model.generate(kjt, exclude, beam)
    lines = [f"user {user}: {len(rows)} history items, beam {beam}, top {k} generated"]
    for rank in range(k):
        item = int(items[0, rank])
        if item < 0:
            break
        sid = "-".join(str(int(t)) for t in tokens[0, rank])
        title = data.items.texts[item]
        score = float(scores[0, rank])
        lines.append(
            f"{rank + 1:3d}. {data.items.item_ids[item]:>6} {title[:50]:<50} "
            f"log p = {score:8.3f}  tokens {sid}"
        )
    return "\n".join(lines)


def ranker_name(cfg: ExperimentConfig) -> str:
    """A ranker run's row label: ``DLRM``/``DCN-v2`` and its objective (a pipeline ranker
    without context features says so)."""
    model = "DCN-v2" if cfg.model.interaction == "dcn" else "DLRM"
    return f"{model} ({objective_label(cfg)})"


def objective_label(cfg: ExperimentConfig) -> str:
    """``rating``, ``pipeline`` or ``pipeline, no context`` (without context features)."""
    plain = cfg.model.objective == "pipeline" and not cfg.model.context_features
    return f"{cfg.model.objective}{', no context' if plain else ''}"


def evaluate_pipeline_main(argv: list[str]) -> None:
    parser = parsers.evaluate_pipeline_parser()
    args = parser.parse_args(argv)
    _check_flags(args)
    if args.out and not Path(args.out).resolve().parent.is_dir():
        raise UserError(f"--out {args.out!r}: its folder does not exist")
    if args.out and Path(args.out).is_dir():
        raise UserError(f"--out {args.out!r} is a folder; expected a file path for the JSON")
    _require(args.retriever, "two_tower", "--retriever")
    for run in args.ranker:
        _require(run, "dlrm", "--ranker")
    ctx = init_distributed()
    try:
        retriever = load_trained(args.retriever, ctx)
        scorers: dict[str, PairScorer] = {}
        pairs_ranker = None
        for run in args.ranker:
            ranker_cfg = read_run_config(Path(run))
            name = ranker_name(ranker_cfg)
            if name in scorers:
                name = f"{name} [{run}]"
            if ranker_cfg.model.objective == "pipeline":
                if Path(ranker_cfg.model.retriever_run).resolve() != Path(args.retriever).resolve():
                    raise UserError(
                        f"--ranker {run!r} learned to re-rank the candidates of "
                        f"{ranker_cfg.model.retriever_run!r}, not of --retriever {args.retriever!r}"
                    )
                ranker = load_ranker(run, ctx)
                check_same_data(retriever.data, ranker.data, f"--ranker {run!r}", splits=False)
                scorers[name] = pipeline_scorer(ranker)
                pairs_ranker = pairs_ranker or ranker
            else:
                same_data = all(
                    getattr(ranker_cfg, section) == getattr(retriever.cfg, section)
                    for section in ("data", "features", "semantic_ids")
                )  # then the encoded dataset is identical: build it once
                ranker = load_trained(run, ctx, data=retriever.data if same_data else None)
                check_same_data(retriever.data, ranker.data, f"--ranker {run!r}")
                scorers[name] = rating_scorer(ranker)
        if args.candidates > len(retriever.data.items):
            raise UserError(
                f"--candidates {args.candidates} exceeds the {len(retriever.data.items)} "
                f"catalogue items"
            )
        if not len(retriever.data.splits[args.split]):
            raise UserError(f"--split {args.split}: the {args.split} split of the data is empty")
        if not ctx.is_main:
            return
        if pairs_ranker is not None and not args.no_tabular:
            m = pairs_ranker.cfg.model
            group = 1 + m.hard_negatives + m.random_negatives  # pairs per query, positive first
            label = objective_label(pairs_ranker.cfg)
            scorers.update(
                tabular_scorers(pairs_ranker.data, pairs_ranker.cfg.train.seed, group, label)
            )
        metrics = evaluate_two_stage(
            retriever, None, args.split, args.candidates, args.k, scorers=scorers
        )
        text = json.dumps(metrics, indent=2)
        print(text)
        print(pipeline_table(metrics, args.k))
        if args.out:
            atomic_write_text(args.out, text)
    finally:
        shutdown_distributed()


LAMBDARANK_ROUNDS = 150
"""Boosting rounds of the lambdarank second stage (one setting, not tuned)."""


def tabular_scorers(
    pairs: RecDataset, seed: int, group_size: int, label: str = "pipeline"
) -> dict[str, PairScorer]:
    """Logistic regression, LightGBM (binary) and LightGBM (lambdarank, ``group_size`` pairs
    per query, 150 rounds) fitted on a pipeline ranker's training pairs (its features +
    retrieval score and rank + context), as second-stage scorers named ``<model> (label)``."""
    train, val = pairs.splits["train"], pairs.splits["val"]
    # many pairs per query: two passes converge
    logistic = fit_logistic_regression(train, pairs.spec, epochs=2, seed=seed)
    layout = tabular_layout(train, pairs.spec)
    booster = fit_lightgbm(train, val, pairs.spec, layout, seed=seed)
    ranker = fit_lightgbm(
        train, None, pairs.spec, layout, rounds=LAMBDARANK_ROUNDS, seed=seed, group_size=group_size
    )

    def features(
        queries: ExampleTable, index: torch.Tensor, items: torch.Tensor, retrieval: torch.Tensor
    ) -> ExampleTable:
        return pipeline_pairs(pairs, queries, index, items, retrieval)

    def lr(q: ExampleTable, i: torch.Tensor, it: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return logistic_probabilities(logistic, features(q, i, it, r))

    def gbdt(q: ExampleTable, i: torch.Tensor, it: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return lightgbm_probabilities(
            booster, tabular_matrix(features(q, i, it, r), pairs.spec, layout)
        )

    def lambdarank(
        q: ExampleTable, i: torch.Tensor, it: torch.Tensor, r: torch.Tensor
    ) -> torch.Tensor:
        return lightgbm_probabilities(
            ranker, tabular_matrix(features(q, i, it, r), pairs.spec, layout)
        )

    return {
        f"logistic regression ({label})": lr,
        f"LightGBM ({label})": gbdt,
        f"LightGBM lambdarank ({label})": lambdarank,
    }


def pipeline_table(metrics: dict[str, dict[str, float]], k: int) -> str:
    """A markdown table: one row per method."""
    columns = [f"recall@{k}", f"ndcg@{k}", "mrr", f"coverage@{k}"]
    lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, values in metrics.items():
        if name == "candidates_recall":
            continue
        label = "retrieval alone" if name == "retrieval" else f"+ {name}"
        lines.append(f"| {label} | " + " | ".join(f"{values[c]:.4f}" for c in columns) + " |")
    return "\n".join(lines)

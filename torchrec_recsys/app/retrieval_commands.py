"""Entry points: ``export`` (item index), ``recommend`` and ``evaluate-pipeline``."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from torchrec_recsys.app import parsers
from torchrec_recsys.app.pipeline import check_same_data, load_ranker
from torchrec_recsys.app.results import (
    GeneratedItem,
    GeneratedRecommendations,
    IndexExport,
    PipelineResult,
)
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
    RecommendationList,
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


def _check_flags(k: int, candidates: int) -> None:
    """``-k`` and ``--candidates``: at least 1, and k within the candidates."""
    if k < 1:
        raise UserError(f"-k {k} is invalid; expected at least 1 item")
    if candidates < 1:
        raise UserError(f"--candidates {candidates} is invalid; expected at least 1")
    if k > candidates:
        raise UserError(
            f"-k {k} exceeds --candidates {candidates}: k = {k} must not exceed "
            f"the number of candidates ({candidates})"
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
    export = export_index(
        args.run_dir,
        args.out,
        kind=args.kind,
        nlist=args.nlist,
        nprobe=args.nprobe,
        hnsw_m=args.hnsw_m,
        ef_search=args.ef_search,
        overwrite=args.overwrite,
    )
    if export is not None:
        print(
            f"wrote {export.num_items} item embeddings ({export.dim}-d, {export.kind}, "
            f"{export.metric}) to {export.index_dir}"
        )


def export_index(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    kind: str = "flat",
    nlist: int = 64,
    nprobe: int = 16,
    hnsw_m: int = 32,
    ef_search: int = 128,
    overwrite: bool = False,
) -> IndexExport | None:
    """Embed every catalogue item with the two-tower run ``run_dir`` and save a FAISS index
    (default folder: ``<run_dir>/index_<kind>``); None on ranks other than 0.

    Raises:
        UserError: not a two-tower run, the folder exists without ``overwrite``, bad spec.
    """
    _require(str(run_dir), "two_tower", "--run-dir")
    folder = Path(out or Path(run_dir) / f"index_{kind}")
    if folder.exists() and not overwrite:
        raise UserError(
            f"index folder {str(folder)!r} already exists; pass --overwrite to replace it"
        )
    owns_group = not dist.is_initialized()
    ctx = init_distributed()
    try:
        trained = load_trained(run_dir, ctx)
        if not ctx.is_main:
            return None
        spec = IndexSpec(
            kind=kind,
            metric=METRIC,
            ivf_nlist=nlist,
            ivf_nprobe=nprobe,
            hnsw_m=hnsw_m,
            hnsw_ef_search=ef_search,
        )
        embeddings = (
            item_embeddings(trained.task, trained.data).numpy().astype(np.float32)
        )  # [I, D]
        start = time.perf_counter()
        index = build_index(embeddings, spec)
        seconds = time.perf_counter() - start
        save_index(
            folder,
            index,
            trained.data.items.item_ids,
            spec,
            {"model": "two_tower", "global_step": trained.state.global_step},
            checkpoint_path=trained.checkpoint,
            build_seconds=seconds,
            overwrite=overwrite,
        )
        return IndexExport(
            index_dir=folder,
            num_items=len(embeddings),
            dim=int(embeddings.shape[1]),
            kind=kind,
            metric=METRIC,
            build_seconds=seconds,
        )
    finally:
        if owns_group:
            shutdown_distributed()


def recommend_main(argv: list[str]) -> None:
    parser = parsers.recommend_parser()
    args = parser.parse_args(argv)
    result = recommend_items(
        args.retriever,
        args.ranker,
        user=args.user,
        history=[h.strip() for h in args.history.split(",") if h.strip()],
        k=args.k,
        candidates=args.candidates,
        index=args.index,
        beam=args.beam,
    )
    if isinstance(result, RecommendationList):
        print(format_recommendations(result))
    elif result is not None:
        print(format_generated(result))


def recommend_items(
    retriever: str | Path,
    ranker: str | Path | None = None,
    *,
    user: str,
    history: Sequence[str] = (),
    k: int = 10,
    candidates: int = 100,
    index: str | Path | None = None,
    beam: int | None = None,
) -> RecommendationList | GeneratedRecommendations | None:
    """The top ``k`` items for ``user``: retrieved by the two-tower run ``retriever`` from its
    FAISS ``index`` (default ``<retriever>/index_flat``) and re-ranked by the DLRM run
    ``ranker``; or, for a generative ``retriever`` (no ranker), decoded by beam search
    (``beam``: default the run's). None on ranks other than 0 (generative).

    Raises:
        UserError: a wrong run kind, sizes out of range, an unknown history item, an index
            exported from another checkpoint.
    """
    history = list(history)
    if read_run_config(Path(retriever)).model.name == "generative":
        return _recommend_generative(str(retriever), ranker, user, history, k, beam)
    if not ranker:
        raise UserError("--ranker is required with a two-tower --retriever")
    _check_flags(k, candidates)
    _require(str(retriever), "two_tower", "--retriever")
    _require(str(ranker), "dlrm", "--ranker")
    owns_group = not dist.is_initialized()
    ctx = init_distributed()
    try:
        trained = load_trained(retriever, ctx)
        reranker = load_ranker(ranker, ctx)
        dim = trained.cfg.model.tower_layers[-1]
        folder = Path(index or Path(retriever) / "index_flat")
        loaded = load_index(folder, expected_dim=dim, expected_metric=METRIC)
        _check_index_source(loaded, folder, trained.checkpoint)
        if candidates > loaded.ntotal:
            raise UserError(f"--candidates {candidates} exceeds the {loaded.ntotal} indexed items")
        _check_history(history, trained.data.items.item_ids)
        result = recommend(
            trained,
            reranker,
            loaded,
            user,
            k,
            candidates,
            history,
            rank_cap=reranker.cfg.model.candidates,
        )
        if len(result.items) < k:
            warn_user(
                f"only {len(result.items)} of the {k} items asked for (-k): the other "
                f"candidates were items the user already has; raise --candidates for more"
            )
        return result
    finally:
        if owns_group:
            shutdown_distributed()


def _recommend_generative(
    retriever: str,
    ranker: str | Path | None,
    user: str,
    history: list[str],
    k: int,
    beam: int | None,
) -> GeneratedRecommendations | None:
    """The items a generative run decodes for a user, with titles and beam scores."""
    if ranker:
        raise UserError("--ranker is not used with a generative --retriever; leave it out")
    owns_group = not dist.is_initialized()
    ctx = init_distributed()
    try:
        trained = load_trained(retriever, ctx)
        if not ctx.is_main:
            return None
        width = beam or trained.cfg.sequence.beam_width
        if width < k:
            raise UserError(f"--beam {width} is smaller than -k {k}: the beam cannot fill it")
        return generate_for_user(trained, user, history, k, width)
    finally:
        if owns_group:
            shutdown_distributed()


def generate_for_user(
    trained: TrainedModel, user: str, history_ids: list[str], k: int, beam: int
) -> GeneratedRecommendations:
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
    items, scores, tokens = trained.task.model.generate(kjt, exclude, beam)  # [1, B] each
    found = []
    for rank in range(k):
        item = int(items[0, rank])
        if item < 0:
            break
        found.append(
            GeneratedItem(
                item_id=data.items.item_ids[item],
                title=data.items.texts[item],
                log_prob=float(scores[0, rank]),
                tokens=tuple(int(t) for t in tokens[0, rank]),
            )
        )
    return GeneratedRecommendations(
        user_id=user, history_length=len(rows), beam=beam, k=k, items=found
    )


def format_generated(result: GeneratedRecommendations) -> str:
    """A human-readable table of generated items (rank, id, title, log p, SID tokens)."""
    lines = [
        f"user {result.user_id}: {result.history_length} history items, beam {result.beam}, "
        f"top {result.k} generated"
    ]
    for rank, rec in enumerate(result.items):
        sid = "-".join(str(t) for t in rec.tokens)
        lines.append(
            f"{rank + 1:3d}. {rec.item_id:>6} {rec.title[:50]:<50} "
            f"log p = {rec.log_prob:8.3f}  tokens {sid}"
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
    _check_flags(args.k, args.candidates)
    if args.out and not Path(args.out).resolve().parent.is_dir():
        raise UserError(f"--out {args.out!r}: its folder does not exist")
    if args.out and Path(args.out).is_dir():
        raise UserError(f"--out {args.out!r} is a folder; expected a file path for the JSON")
    result = evaluate_pipeline(
        args.retriever,
        args.ranker,
        split=args.split,
        candidates=args.candidates,
        k=args.k,
        tabular=not args.no_tabular,
    )
    if result is None:
        return
    text = result.to_json()
    print(text)
    print(pipeline_table(result.metrics, args.k))
    if args.out:
        atomic_write_text(args.out, text)


def evaluate_pipeline(
    retriever: str | Path,
    rankers: Sequence[str | Path],
    *,
    split: str = "test",
    candidates: int = 100,
    k: int = 10,
    tabular: bool = True,
) -> PipelineResult | None:
    """Score retrieval alone (the two-tower run ``retriever``, exact search over
    ``candidates``) and re-ranked by each DLRM run of ``rankers`` (and, with ``tabular``,
    by logistic regression and LightGBM on the first pipeline ranker's pairs) on ``split``;
    None on ranks other than 0.

    Raises:
        UserError: a wrong run kind, runs on different data, sizes out of range.
    """
    _check_flags(k, candidates)
    if split not in ("val", "test"):
        raise UserError(f"--split {split!r} is not one of val, test")
    rankers = [str(r) for r in rankers]
    if not rankers:
        raise UserError("--ranker: give at least one DLRM run directory")
    _require(str(retriever), "two_tower", "--retriever")
    for run in rankers:
        _require(run, "dlrm", "--ranker")
    owns_group = not dist.is_initialized()
    ctx = init_distributed()
    try:
        trained = load_trained(retriever, ctx)
        scorers: dict[str, PairScorer] = {}
        pairs_ranker = None
        for run in rankers:
            ranker_cfg = read_run_config(Path(run))
            name = ranker_name(ranker_cfg)
            if name in scorers:
                name = f"{name} [{run}]"
            if ranker_cfg.model.objective == "pipeline":
                if Path(ranker_cfg.model.retriever_run).resolve() != Path(retriever).resolve():
                    raise UserError(
                        f"--ranker {run!r} learned to re-rank the candidates of "
                        f"{ranker_cfg.model.retriever_run!r}, not of --retriever {str(retriever)!r}"
                    )
                ranker = load_ranker(run, ctx)
                check_same_data(trained.data, ranker.data, f"--ranker {run!r}", splits=False)
                scorers[name] = pipeline_scorer(ranker)
                pairs_ranker = pairs_ranker or ranker
            else:
                same_data = all(
                    getattr(ranker_cfg, section) == getattr(trained.cfg, section)
                    for section in ("data", "features", "semantic_ids")
                )  # then the encoded dataset is identical: build it once
                ranker = load_trained(run, ctx, data=trained.data if same_data else None)
                check_same_data(trained.data, ranker.data, f"--ranker {run!r}")
                scorers[name] = rating_scorer(ranker)
        if candidates > len(trained.data.items):
            raise UserError(
                f"--candidates {candidates} exceeds the {len(trained.data.items)} catalogue items"
            )
        if not len(trained.data.splits[split]):
            raise UserError(f"--split {split}: the {split} split of the data is empty")
        if not ctx.is_main:
            return None
        if pairs_ranker is not None and tabular:
            m = pairs_ranker.cfg.model
            group = 1 + m.hard_negatives + m.random_negatives  # pairs per query, positive first
            label = objective_label(pairs_ranker.cfg)
            scorers.update(
                tabular_scorers(pairs_ranker.data, pairs_ranker.cfg.train.seed, group, label)
            )
        metrics = evaluate_two_stage(trained, None, split, candidates, k, scorers=scorers)
        return PipelineResult(
            metrics=metrics,
            retriever=Path(retriever),
            rankers=[Path(r) for r in rankers],
            split=split,
            candidates=candidates,
            k=k,
        )
    finally:
        if owns_group:
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

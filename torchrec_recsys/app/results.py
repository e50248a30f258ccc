"""What the command functions return: typed results instead of dicts read back from files.

    train(...)              -> RunResult        (run folder, test metrics, epochs, paths)
    evaluate_pipeline(...)  -> PipelineResult   (method -> metric -> value, its table)
    export_index(...)       -> IndexExport      (index folder, items, dimension)
    build_semantic_ids(...) -> SemanticIdBuild  (table folder, report, its files)

A :class:`RunResult` is also read back from a finished run's ``summary.json`` by
:func:`read_summary`, the one validated reader of that file. This module imports neither
torch nor the models, so importing it is cheap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchrec_recsys.config import ExperimentConfig, config_from_dict
from torchrec_recsys.errors import UserError

SUMMARY_FILE = "summary.json"
SUMMARY_KEYS: dict[str, type | tuple[type, ...]] = {
    "run_dir": str,
    "config": dict,
    "world_size": int,
    "final_state": dict,
    "epochs": list,
    "test": dict,
    "baselines_test": dict,
    "wall_time_seconds": (int, float),
}
"""Keys every ``summary.json`` holds, with their JSON types (checked when read back)."""


@dataclass(frozen=True)
class RunResult:
    """A finished training run: what its ``summary.json`` records, as typed fields.

    ``summary`` is the whole record (equal to the file's content); the other fields are the
    parts a caller reads most.
    """

    run_dir: Path
    """The run folder (checkpoints/, tensorboard/, summary.json, config.json, ...)."""
    config: ExperimentConfig
    """The resolved config the run trained with."""
    metrics: dict[str, float]
    """Test metrics of the selected epoch (e.g. ``auc``, ``ne``; ``recall@10``, ``ndcg@10``)."""
    epochs: list[dict[str, Any]]
    """Per finished epoch: ``epoch``, ``train_loss``, ``samples_per_second``, ``val`` metrics."""
    selected_epoch: dict[str, Any] | None
    """The epoch the validation metric selected (``epoch``, ``metric``), or None: the last."""
    baselines: dict[str, Any]
    """Test metrics of the non-learned and tabular baselines (popularity, LightGBM, ...)."""
    global_step: int
    """Optimizer steps taken in all."""
    world_size: int
    """Processes that trained the run."""
    wall_time_seconds: float
    """Seconds of the last attempt, from data loading to the test evaluation."""
    train_samples_per_second: float | None
    """Mean training throughput over the epochs (all processes together)."""
    warnings: list[str] = field(default_factory=list)
    """The data warnings the run printed."""
    summary: dict[str, Any] = field(default_factory=dict, repr=False)
    """The complete run summary, as written to ``summary.json``."""

    @property
    def summary_path(self) -> Path:
        return self.run_dir / SUMMARY_FILE

    @property
    def checkpoints_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def tensorboard_dir(self) -> Path:
        return self.run_dir / "tensorboard"

    @classmethod
    def from_summary(cls, summary: dict[str, Any], where: str = "summary") -> RunResult:
        """The result a run summary describes (``where`` names it in errors).

        Raises:
            UserError: a key is missing or of the wrong type, or the config is invalid.
        """
        for key, kind in SUMMARY_KEYS.items():
            if key not in summary:
                raise UserError(f"run summary {where!r} has no {key!r}")
            if not isinstance(summary[key], kind) or isinstance(summary[key], bool):
                raise UserError(
                    f"run summary {where!r}: {key!r} is {type(summary[key]).__name__}, "
                    f"expected {getattr(kind, '__name__', 'a number')}"
                )
        throughput = summary.get("train_samples_per_second")
        return cls(
            run_dir=Path(summary["run_dir"]),
            config=config_from_dict(summary["config"], where=f"{where} config"),
            metrics=dict(summary["test"]),
            epochs=list(summary["epochs"]),
            selected_epoch=summary.get("selected_epoch"),
            baselines=dict(summary["baselines_test"]),
            global_step=int(summary["final_state"].get("global_step", 0)),
            world_size=summary["world_size"],
            wall_time_seconds=float(summary["wall_time_seconds"]),
            train_samples_per_second=None if throughput is None else float(throughput),
            warnings=list(summary.get("warnings") or []),
            summary=summary,
        )


def read_summary(run_dir: str | Path) -> RunResult:
    """The :class:`RunResult` of a finished run, from its ``summary.json``.

    Raises:
        UserError: the file is missing (the run did not finish), not JSON, or malformed.
    """
    path = Path(run_dir) / SUMMARY_FILE
    if not path.is_file():
        raise UserError(
            f"run directory {str(run_dir)!r} has no {SUMMARY_FILE}: the run did not finish "
            f"(or this is not a run directory)"
        )
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"run summary {str(path)!r} is not readable JSON ({e})") from None
    if not isinstance(summary, dict):
        raise UserError(f"run summary {str(path)!r} is not a JSON object")
    return RunResult.from_summary(summary, where=str(path))


@dataclass(frozen=True)
class PipelineResult:
    """Retrieval alone vs. retrieval re-ranked by each second stage, on one split."""

    metrics: dict[str, dict[str, float]]
    """Method -> metric -> value. Methods: ``retrieval``, one per ranker (e.g.
    ``DLRM (rating)``), the tabular second stages, and ``candidates_recall`` (the share of
    targets among the candidates); metrics: ``recall@k``, ``ndcg@k``, ``hr@k``, ``map@k``,
    ``mrr``, ``coverage@k``."""
    retriever: Path
    """The two-tower run that retrieved the candidates."""
    rankers: list[Path]
    """The ranker runs, in the order given."""
    split: str
    candidates: int
    k: int

    @property
    def methods(self) -> list[str]:
        """The rows of the table: retrieval alone and each second stage."""
        return [m for m in self.metrics if m != "candidates_recall"]

    def to_json(self) -> str:
        """The metrics as the JSON ``evaluate-pipeline --out`` writes."""
        return json.dumps(self.metrics, indent=2)


@dataclass(frozen=True)
class IndexExport:
    """A FAISS index of a two-tower run's item embeddings, written to ``index_dir``."""

    index_dir: Path
    """Folder with ``index.faiss``, ``item_ids.json`` and ``metadata.json``."""
    num_items: int
    dim: int
    kind: str
    """``flat``, ``ivf`` or ``hnsw``."""
    metric: str
    build_seconds: float


@dataclass(frozen=True)
class SemanticIdBuild:
    """A learned semantic-ID table, saved with its quality report."""

    table_dir: Path
    """Folder of the SID table (read by ``semantic_ids.store.load_sid_table``)."""
    num_items: int
    seconds: float
    """Seconds spent encoding the texts and fitting the quantizer."""
    report: dict[str, Any]
    """Quality report: ``method``, ``codebook_sizes``, ``reconstruction_cosine``,
    ``utilisation``, ``perplexity``, ``collision_rate``, ``fallback_texts``, ..."""
    report_json: Path
    report_plot: Path


@dataclass(frozen=True)
class DataReport:
    """What ``data inspect`` found in the configured data, without training."""

    source: str
    """``data.source``."""
    name: str
    """The dataset's name (the interactions file's stem for ``files``)."""
    columns: dict[str, list[str]]
    """Raw table -> its columns (``interactions``, ``items``, ``users``; empty for the
    encoded-only sources ``criteo`` and ``shards``)."""
    item_categorical_columns: list[str]
    """The item columns that became features (the default narrowed to the file's columns)."""
    separators: dict[str, dict[str, Any]]
    """Categorical column -> ``{"configured": sep, "found": [separators in most cells],
    "multi_valued_cells": share of cells split by the configured one}``."""
    cardinalities: dict[str, int]
    """Sparse feature -> rows of its embedding table (vocabulary + out-of-vocabulary row)."""
    dense_features: list[str]
    splits: dict[str, int]
    """Examples per split (``train``, ``val``, ``test``)."""
    counts: dict[str, int]
    """``interactions``, ``users``, ``items`` (and the reader's skipped rows by reason)."""
    warnings: list[str]
    """Data warnings, and the reason a run would refuse this data ("error: ...")."""

    def render(self) -> str:
        """The report as lines of text (what ``data inspect`` prints)."""
        lines = [f"data {self.name} (source {self.source})"]
        lines.append("  " + ", ".join(f"{k}={v:,}" for k, v in self.counts.items()))
        for table, cols in self.columns.items():
            lines.append(f"  {table} columns: {', '.join(cols)}")
        lines.append(f"  item features from columns: {self.item_categorical_columns or 'none'}")
        for col, sep in self.separators.items():
            found = ", ".join(repr(s) for s in sep["found"]) or "none"
            lines.append(
                f"  separator of {col}: configured {sep['configured']!r} "
                f"({sep['multi_valued_cells']:.0%} of cells hold several values); "
                f"found in most cells: {found}"
            )
        lines.append("  sparse features (table rows):")
        lines += [f"    {k:<28} {v:>10,}" for k, v in self.cardinalities.items()]
        lines.append(f"  dense features: {', '.join(self.dense_features) or 'none'}")
        lines.append("  splits: " + ", ".join(f"{k}={v:,}" for k, v in self.splits.items()))
        lines += [f"  warning: {w}" for w in self.warnings] or ["  no warnings"]
        return "\n".join(lines)


@dataclass(frozen=True)
class GeneratedItem:
    """One item a generative retriever decoded, with its beam score and SID tokens."""

    item_id: str
    title: str
    log_prob: float
    """Log-probability of the item's token sequence under the model."""
    tokens: tuple[int, ...]
    """The item's semantic-ID tokens, one per level."""


@dataclass(frozen=True)
class GeneratedRecommendations:
    """The best items a generative retriever decoded for one user, best first."""

    user_id: str
    history_length: int
    """How many history items the model read."""
    beam: int
    k: int
    items: list[GeneratedItem]
    """At most ``k`` items (fewer when the beam found fewer valid ones)."""

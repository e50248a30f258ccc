"""torchrec_recsys: sharded DLRM ranker and two-tower retriever on TorchRec.

The typed Python API (:mod:`torchrec_recsys.api`) is available at the package top and is
imported on first use, so ``import torchrec_recsys`` stays cheap::

    import torchrec_recsys as trs

    cfg = trs.load_config("configs/tiny_synthetic.toml", {"train.epochs": 1})
    result = trs.train(cfg)
    print(result.metrics, result.run_dir)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from torchrec_recsys.api import (
        ConfigError,
        DataError,
        DataReport,
        ExperimentConfig,
        GeneratedItem,
        GeneratedRecommendations,
        IndexExport,
        PipelineResult,
        Recommendation,
        RecommendationList,
        Run,
        RunResult,
        SemanticIdBuild,
        TrainedModel,
        UserError,
        build_semantic_ids,
        evaluate_pipeline,
        export_index,
        inspect_data,
        load_config,
        load_run,
        recommend,
        train,
        use_dataframes,
    )

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
    "__version__",
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


def __getattr__(name: str) -> Any:
    """The API's names, imported from :mod:`torchrec_recsys.api` when first asked for."""
    if name in __all__:
        from torchrec_recsys import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

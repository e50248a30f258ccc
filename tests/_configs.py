"""Config sections for tests that call library functions directly."""

from __future__ import annotations

import dataclasses
from typing import Any

from torchrec_recsys.config import DataConfig, FeatureConfig

_FEATURE_FIELDS = {f.name for f in dataclasses.fields(FeatureConfig)}


def dataset_configs(
    item_categorical_columns: list[str], user_categorical_columns: list[str], **kw: Any
) -> tuple[DataConfig, FeatureConfig]:
    """``[data]`` and ``[features]`` sections for ``build_dataset``; each keyword goes to the
    section that has the field."""
    data = DataConfig(
        item_categorical_columns=item_categorical_columns,
        user_categorical_columns=user_categorical_columns,
        **{k: v for k, v in kw.items() if k not in _FEATURE_FIELDS},
    )
    features = FeatureConfig(**{k: v for k, v in kw.items() if k in _FEATURE_FIELDS})
    return data, features

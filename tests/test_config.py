"""Config loading: every shipped file parses, overrides apply, bad keys and values are named."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from torchrec_recsys.config import DATA_SPLIT_FIELDS, DataConfig, ExperimentConfig, load_config
from torchrec_recsys.errors import ConfigError

CONFIG_FILES = sorted((REPO_ROOT / "configs").glob("*.toml"))


def test_there_are_config_files() -> None:
    assert len(CONFIG_FILES) >= 2


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_every_config_file_parses_and_documents_its_command(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.name == tomllib.loads(path.read_text()).get("name", cfg.name)
    header = path.read_text().split("\n\n")[0]
    assert "torchx run" in header or "python -m torchrec_recsys" in header


def test_default_config_file_equals_builtin_defaults() -> None:
    assert load_config(REPO_ROOT / "configs" / "ml100k_dlrm.toml") == ExperimentConfig()


OWN_PROTOCOL = {"ml100k_two_tower_tfrs.toml": "reproduces TFRS's published random 80/20 split"}
"""Configs that reproduce a published protocol on its own split (and say so in the header)."""


def _dataset(d: DataConfig) -> str:
    """The interactions a ``[data]`` table selects (source, file, active-user threshold)."""
    name = d.source if d.source != "files" else f"files:{d.interactions_path}"
    return name if d.min_user_interactions <= 1 else f"{name}:users>={d.min_user_interactions}"


def test_configs_of_one_dataset_share_one_explicit_split() -> None:
    by_dataset: dict[str, dict[str, tuple]] = {}
    for path in CONFIG_FILES:
        if path.name in OWN_PROTOCOL:
            continue
        d = load_config(path).data
        by_dataset.setdefault(_dataset(d), {})[path.name] = tuple(
            getattr(d, k) for k in DATA_SPLIT_FIELDS
        )
    shared = {name: splits for name, splits in by_dataset.items() if len(splits) > 1}
    assert "movielens-100k" in shared and len(shared["movielens-100k"]) >= 5
    for dataset, splits in shared.items():
        assert len(set(splits.values())) == 1, f"{dataset}: configs differ in split: {splits}"
        for name in splits:  # written out, so a changed default cannot split them silently
            table = tomllib.loads((REPO_ROOT / "configs" / name).read_text()).get("data", {})
            kinds = ("split", "split_seed", "cold_item_fraction", "val_per_user", "test_per_user")
            assert all(k in table for k in kinds), f"{name} leaves its split implicit"


def test_own_protocol_configs_say_so() -> None:
    for name, why in OWN_PROTOCOL.items():
        assert "random" in (REPO_ROOT / "configs" / name).read_text().split("\n\n")[0], why


def test_tiger_sid_config_differs_from_the_generative_config_only_in_its_sids() -> None:
    """Its header promises "otherwise the model, recipe and split" of the generative config."""
    base = load_config(REPO_ROOT / "configs" / "ml100k_generative.toml")
    tiger = load_config(REPO_ROOT / "configs" / "ml100k_generative_tiger.toml")
    assert tiger.semantic_ids != base.semantic_ids
    same_sids = dataclasses.replace(tiger, name=base.name, semantic_ids=base.semantic_ids)
    assert same_sids == base


def test_overrides_parse_toml_values() -> None:
    cfg = load_config(
        None,
        [
            "--train.epochs=7",
            "--optimizer.dense_lr=3e-4",
            "--train.progress_bar=false",
            "--model.dense_arch_layers=[16, 32]",
            "--features.embedding_dim=32",
            "--sharding.per_table.t_item_id=row_wise",
            "--name=exp_a",
        ],
    )
    assert cfg.train.epochs == 7
    assert cfg.optimizer.dense_lr == pytest.approx(3e-4)
    assert cfg.train.progress_bar is False
    assert cfg.model.dense_arch_layers == [16, 32]
    assert cfg.sharding.per_table == {"t_item_id": "row_wise"}
    assert cfg.name == "exp_a"


def test_int_is_accepted_for_float() -> None:
    assert load_config(None, ["--optimizer.sparse_lr=1"]).optimizer.sparse_lr == 1.0


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("--train.epoch=3", "unknown config key 'train.epoch'"),
        ("--trian.epochs=3", "unknown config key 'trian'"),
        ("--train.epochs=three", "train.epochs"),
        ("--train.epochs=true", "train.epochs"),
        ("--sharding.default=diagonal", "sharding.default = 'diagonal' is not one of"),
        ("--optimizer.sparse=adam", "optimizer.sparse = 'adam'"),
        ("--model.dense_arch_layers=[64, 16]", "must end with features.embedding_dim"),
        ("--train.batch_size=0", "train.batch_size must be positive"),
        ("train.epochs=3", "not of the form --section.key=value"),
    ],
)
def test_bad_overrides_name_the_key(override: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        load_config(None, [override])
    assert fragment in str(info.value)


def test_unknown_key_in_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[train]\nepochs = 2\nlearning_rate = 0.1\n")
    with pytest.raises(ConfigError, match="unknown config key 'train.learning_rate'"):
        load_config(path)


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[train\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)


def test_files_source_needs_paths() -> None:
    with pytest.raises(ConfigError, match="data.interactions_path"):
        load_config(None, ["--data.source=files"])


def test_checkpoint_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="train.checkpoint_every_steps must be 0"):
        load_config(None, ["--train.checkpoint_every_steps=-1"])
    with pytest.raises(ConfigError, match="train.keep_last_checkpoints must be 0"):
        load_config(None, ["--train.keep_last_checkpoints=-1"])
    assert load_config(None, ["--train.keep_last_checkpoints=0"]).train.keep_last_checkpoints == 0

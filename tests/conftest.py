"""Shared fixtures: tiny synthetic datasets and config overrides pointing at them."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for tests/_dist.py helpers

from torchrec_recsys.data.synthetic import SyntheticPaths, write_synthetic_dataset  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
TORCHX = str(Path(sys.executable).with_name("torchx"))
COMPONENT = f"{REPO_ROOT}/launch/components.py:train"
"""The repo's torchx component, by path (as a user runs it from anywhere)."""


def tiny_config_file(paths: SyntheticPaths, folder: Path) -> Path:
    """tiny_synthetic.toml copied into ``folder``, its data paths pointing at ``paths``."""
    config = folder / "tiny.toml"
    config.write_text(
        (REPO_ROOT / "configs" / "tiny_synthetic.toml")
        .read_text()
        .replace('"data/synthetic/interactions.csv"', f'"{paths.interactions}"')
        .replace('"data/synthetic/items.csv"', f'"{paths.items}"')
        .replace('"data/synthetic/users.csv"', f'"{paths.users}"')
    )
    return config


@pytest.fixture(scope="session")
def synthetic_paths(tmp_path_factory: pytest.TempPathFactory) -> SyntheticPaths:
    """60 users x 80 items, 25 interactions each: trains in seconds."""
    return write_synthetic_dataset(
        tmp_path_factory.mktemp("synthetic"), num_users=60, num_items=80, interactions_per_user=25
    )


def tiny_overrides(paths: SyntheticPaths, output_dir: Path) -> list[str]:
    """Overrides that turn the default experiment into a seconds-long run on synthetic data."""
    return [
        "--name=tiny",
        "--data.source=files",
        f"--data.interactions_path={paths.interactions}",
        f"--data.items_path={paths.items}",
        f"--data.users_path={paths.users}",
        "--data.history_length=5",
        "--features.embedding_dim=8",
        "--model.dense_arch_layers=[16, 8]",
        "--model.over_arch_layers=[16, 1]",
        "--train.epochs=2",
        "--train.batch_size=64",
        "--train.eval_batch_size=64",
        "--train.progress_bar=false",
        f"--train.output_dir={output_dir}",
    ]


@dataclass(frozen=True)
class TinyBundle:
    """A two-tower run, a DLRM run and the serving bundle exported from them (read only:
    copy the bundle before changing it)."""

    tt_dir: Path
    dlrm_dir: Path
    bundle: Path


@pytest.fixture(scope="session")
def tiny_bundle(
    synthetic_paths: SyntheticPaths, tmp_path_factory: pytest.TempPathFactory
) -> TinyBundle:
    """One-epoch tiny runs and their fp32 bundle (about 15 s, once per session)."""
    from torchrec_recsys.app.train import main as train_main
    from torchrec_recsys.cli import main as cli_main

    root = tmp_path_factory.mktemp("tiny_bundle")
    base = [*tiny_overrides(synthetic_paths, root / "runs"), "--train.epochs=1"]
    tt_dir = Path(train_main([*base, "--name=tt", "--model.name=two_tower"])["run_dir"])
    dlrm_dir = Path(train_main([*base, "--name=dlrm"])["run_dir"])
    bundle = root / "bundle"
    argv = ["export-bundle", "--retriever", str(tt_dir), "--ranker", str(dlrm_dir)]
    assert cli_main([*argv, "--out", str(bundle)]) == 0
    return TinyBundle(tt_dir, dlrm_dir, bundle)
